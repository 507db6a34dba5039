import pytest

from runas_agent.core.expression import PATHS, ExpressionError, parse
from runas_agent.directory import Problem, User, parse_user

RECORD = {
    "UserId": "u-1", "UserName": "alice@example.com", "DisplayName": "Alice Ng", "NickName": "al",
    "Name": {"GivenName": "Alice", "FamilyName": "Ng"},
    "Emails": [{"Value": "old@example.com", "Type": "home", "Primary": False},
               {"Value": "alice@corp.example", "Type": "work", "Primary": True}],
    "Addresses": [{"Type": "home", "Locality": "Nowhere"},
                  {"Type": "work", "StreetAddress": "1 Main St", "Locality": "Springfield", "Region": "IL",
                   "PostalCode": "62701", "Country": "US", "Formatted": "1 Main St Springfield"}],
    "PhoneNumbers": [{"Value": "+1-555-0100", "Type": "work"}],
    "UserType": "Employee", "Title": "SRE", "Locale": "en-US", "Timezone": "America/Chicago",
    "Extensions": {"aws:identitystore:enterprise": {
        "organization": "iret", "department": "Ops", "employeeNumber": "42", "costCenter": "cc1",
        "division": "div", "manager": {"value": "boss-id"}}},
}
USER = User("u-1", "alice@example.com", True, RECORD)


@pytest.mark.parametrize("path, expected", [
    ("userName", "alice@example.com"),
    ("displayName", "Alice Ng"),
    ("nickName", "al"),
    ("name.givenName", "Alice"),
    ("name.familyName", "Ng"),
    ("emails[primary eq true].value", "alice@corp.example"),
    ('addresses[type eq "work"].streetAddress', "1 Main St"),
    ('addresses[type eq "work"].locality', "Springfield"),
    ('addresses[type eq "work"].region', "IL"),
    ('addresses[type eq "work"].postalCode', "62701"),
    ('addresses[type eq "work"].country', "US"),
    ('addresses[type eq "work"].formatted', "1 Main St Springfield"),
    ('phoneNumbers[type eq "work"].value', "+1-555-0100"),
    ("userType", "Employee"),
    ("title", "SRE"),
    ("locale", "en-US"),
    ("timezone", "America/Chicago"),
    ("enterprise.organization", "iret"),
    ("enterprise.department", "Ops"),
    ("enterprise.employeeNumber", "42"),
    ("enterprise.costCenter", "cc1"),
    ("enterprise.division", "div"),
    ("enterprise.manager.value", "boss-id"),
])
def test_every_documented_path(path, expected):
    assert parse("${path:%s}" % path).evaluate(USER) == expected


def test_table_covers_every_supported_path():
    assert len(PATHS) == 23


def test_missing_attributes_evaluate_empty():
    bare = User("u-2", "bob", True, {"UserId": "u-2", "UserName": "bob"})
    for path in PATHS:
        expected = "bob" if path == "userName" else ""
        assert parse("${path:%s}" % path).evaluate(bare) == expected, path


def test_enterprise_attribute_names_match_case_insensitively():
    record = {"UserId": "u", "UserName": "u", "Extensions": {"aws:identitystore:enterprise": {"Organization": "Acme"}}}
    assert parse("${path:enterprise.organization}").evaluate(User("u", "u", True, record)) == "Acme"


def test_the_extension_key_is_the_one_the_api_returns():
    """The Identity Store never returns another spelling (its model's pattern is lower case): a
    record that has one was not written from the API, and is reported, never read differently from
    what the endpoint would serve."""
    record = {"UserId": "u", "UserName": "u", "UserStatus": "ENABLED",
              "Extensions": {"aws:identitystore:Enterprise": {"organization": "Acme"}}}
    assert parse("${path:enterprise.organization}").evaluate(User("u", "u", True, record)) == ""
    problem = parse_user(record, 0)
    assert isinstance(problem, Problem) and problem.user_id == "u"
    assert "the Extensions key 'aws:identitystore:Enterprise' is not one the Identity Store returns" in problem.reason


@pytest.mark.parametrize("value", [None, 7.5, True, {"a": 1}, ["x"]])
def test_non_string_values_are_empty(value):
    record = {"UserId": "u", "UserName": "u", "Extensions": {"aws:identitystore:enterprise": {"organization": value}}}
    assert parse("${path:enterprise.organization}").evaluate(User("u", "u", True, record)) == ""


def test_no_primary_email_gives_empty():
    record = {"UserId": "u", "UserName": "u", "Emails": [{"Value": "a@b", "Primary": False}]}
    assert parse("${path:emails[primary eq true].value}").evaluate(User("u", "u", True, record)) == ""


def test_literal_text_around_a_path():
    assert parse("ext-${path:enterprise.organization}").evaluate(USER) == "ext-iret"


@pytest.mark.parametrize("source, message", [
    ("", "empty"),
    ("userName", "no ${path"),
    ("${path:groups}", "not an attribute"),
    ("${path:userName", "unterminated"),
    ("${path:emails[type eq \"work\"].value}", "not an attribute"),
    ("x" * 257, "256"),
])
def test_invalid_expressions(source, message):
    with pytest.raises(ExpressionError, match=message.replace("$", r"\$").replace("{", r"\{")):
        parse(source)


def test_uniqueness_is_only_claimed_for_user_name():
    assert parse("${path:userName}").is_unique_per_user
    assert not parse("${path:enterprise.organization}").is_unique_per_user
    assert not parse("x${path:userName}").is_unique_per_user
