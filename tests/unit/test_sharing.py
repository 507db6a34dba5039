"""account_kind auto with an expression that is not unique per person: accounts several people share are warned about."""

from runas_agent.core import naming, sharing
from runas_agent.core.desired import Settings, compute
from runas_agent.core.expression import parse
from runas_agent.directory import make_document, parse_document


def people(*pairs):
    users = [{"UserId": uid, "UserName": name, "UserStatus": "ENABLED", "Name": {"GivenName": given}}
             for uid, name, given in pairs]
    return parse_document(make_document("d-1234567890", users, [], []))


TWO_ALICES = people(("u1", "alice.a@example.com", "alice"), ("u2", "alice.b@example.com", "alice"),
                    ("u3", "bob@example.com", "bob"))


def desired(expression, kind):
    return compute(TWO_ALICES, Settings(parse(expression), kind, naming.DEBIAN))


def test_auto_with_a_repeating_given_name_warns_naming_the_account_and_people():
    found = sharing.warnings(desired("${path:name.givenName}", "shared"), "${path:name.givenName}", "auto")
    assert len(found) == 1 and "1 of them hold several people" in found[0], found
    assert "(alice: alice.a@example.com, alice.b@example.com)" in found[0] and "bob" not in found[0]


def test_no_warning_when_shared_was_chosen_or_nobody_shares():
    assert sharing.warnings(desired("${path:name.givenName}", "shared"), "${path:name.givenName}", "shared") == []
    assert sharing.warnings(desired("${path:userName}", "person"), "${path:userName}", "auto") == []
