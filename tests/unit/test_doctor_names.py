"""The allowed-names check's verdict: accounts.allowed_names unset is a warning with a pattern to start
from; set, every Run As name the directory maps to is compared with it."""

from __future__ import annotations

import re

import pytest

from runas_agent.core import naming
from runas_agent.core.desired import Settings, compute
from runas_agent.core.expression import parse
from runas_agent.directory import make_document, parse_document
from runas_agent.doctor.check import OK, WARNING
from runas_agent.doctor.names import EXAMPLE, allowed_names_verdict, name_rules_verdict, sshd_misreadings, suggestion


@pytest.mark.parametrize("names", [None, [], ["alice", "bob"]])
def test_unset_is_a_warning_naming_the_key(names):
    verdict = allowed_names_verdict(None, names)
    assert verdict.status == WARNING
    assert verdict.summary.startswith("accounts.allowed_names is unset")
    assert "set accounts.allowed_names" in verdict.remedy


def test_unset_suggests_the_domain_of_the_directorys_addresses():
    verdict = allowed_names_verdict(None, ["alice@corp.example", "bob.smith@corp.example"])
    assert r"'^[a-z0-9._-]+@corp\.example$'" in verdict.remedy


@pytest.mark.parametrize("names", [
    ["alice", "bob"],                                  # not e-mail addresses
    ["alice@one.example", "bob@two.example"],          # two domains
    ["Alice@corp.example"],                            # the pattern would not take it
    [],
])
def test_the_example_when_the_directory_suggests_nothing(names):
    assert suggestion(names) == EXAMPLE


def test_a_suggestion_takes_every_name_it_was_made_from():
    names = ["a.b-c_d@x-y.example", "e@x-y.example"]
    assert all(re.fullmatch(suggestion(names), name) for name in names)


def test_set_and_every_name_matches():
    verdict = allowed_names_verdict(r"^[a-z]+@corp\.example$", ["alice@corp.example", "bob@corp.example"])
    assert verdict.status == OK
    assert verdict.summary == (r"accounts.allowed_names is ^[a-z]+@corp\.example$, and every Run As name the directory "
                               "maps to matches it (2 names)")


def test_set_without_the_directory_compares_nothing():
    verdict = allowed_names_verdict("^[a-z]+$", None)
    assert verdict.status == OK and "was not read" in verdict.summary


def test_names_outside_the_pattern_are_listed():
    verdict = allowed_names_verdict(r"^[a-z]+@corp\.example$", ["alice@corp.example", "docker", "eve@evil.example"])
    assert verdict.status == WARNING
    assert "2 names the directory maps to do not match it" in verdict.summary
    assert verdict.details == (r"'docker' does not match accounts.allowed_names (^[a-z]+@corp\.example$)",
                               r"'eve@evil.example' does not match accounts.allowed_names (^[a-z]+@corp\.example$)")


# --- name-rules ---------------------------------------------------------------------------------------

def _desired(names, rules):
    users = [{"UserId": f"u{i}", "UserName": name, "DisplayName": name, "UserStatus": "ENABLED"}
             for i, name in enumerate(names)]
    return compute(parse_document(make_document("d-1234567890", users, [], [])),
                   Settings(parse("${path:userName}"), "person", rules))


EMAILS = ["alice@corp.example", "bob.smith@corp.example", "carol"]


def test_rhel_rules_refusing_email_names_is_a_warning_with_both_ways_out():
    verdict = name_rules_verdict("auto", naming.RHEL, _desired(EMAILS, naming.RHEL), None)
    assert verdict.status == WARNING
    assert verdict.summary.startswith("accounts.name_rules is auto (rhel, from /etc/os-release): 2 Run As names")
    assert "e.g. 'alice@corp.example'" in verdict.summary
    assert "rhel-email" in verdict.remedy and "${path:nickName}" in verdict.remedy
    assert [d.split(" ")[0] for d in verdict.details] == ["alice@corp.example", "bob.smith@corp.example"]


def test_rhel_rules_refusing_names_rhel_email_would_refuse_too_is_not_this_checks_business():
    names = ["é@corp.example", "carol"]            # refused under rhel-email as well
    assert name_rules_verdict("rhel", naming.RHEL, _desired(names, naming.RHEL), None).status == OK


def test_rhel_email_accepts_them_and_says_what_pwck_will_say():
    verdict = name_rules_verdict("rhel-email", naming.RHEL_EMAIL, _desired(EMAILS, naming.RHEL_EMAIL), None)
    assert verdict.status == OK
    assert "2 account names with '@'" in verdict.summary and "pwck -r and grpck -r" in verdict.summary


@pytest.mark.parametrize("setting, rules", [("debian", naming.DEBIAN), ("auto", naming.DEBIAN)])
def test_debian_rules_have_nothing_to_say(setting, rules):
    verdict = name_rules_verdict(setting, rules, _desired(EMAILS, rules), None)
    assert verdict.status == OK and "no Run As name the directory maps to is refused" in verdict.summary


def test_without_the_directory_only_the_rules_are_named():
    verdict = name_rules_verdict("rhel", naming.RHEL, None, None)
    assert verdict.status == OK and "not read" in verdict.summary


SSHD_T = """port 22
allowusers ops
denyusers alice@corp.example
denyusers *@corp.example
denyusers bob?smith?corp.example
denyusers carol@10.0.0.0/8
allowgroups wheel
"""


def test_sshd_user_patterns_written_as_an_email_account_are_named_with_how_sshd_reads_them():
    verdict = name_rules_verdict("debian", naming.DEBIAN, _desired(EMAILS, naming.DEBIAN), SSHD_T)
    assert verdict.status == WARNING
    assert verdict.details == (
        "denyusers alice@corp.example: meant for alice@corp.example, read by sshd as user 'alice' from host 'corp.example'",
        "denyusers *@corp.example: meant for alice@corp.example and 1 more, read by sshd as user '*' from host 'corp.example'",
    )
    assert "alice?example.com" in verdict.remedy


@pytest.mark.parametrize("sshd_t", ["", "denyusers carol@10.0.0.0/8\n", "denyusers bob?smith?corp.example\n",
                                     "allowusers !alice@corp.example,ops\n"])
def test_sshd_patterns_that_cannot_mean_an_account_are_left_alone(sshd_t):
    found = sshd_misreadings(sshd_t, ["alice@corp.example", "bob.smith@corp.example"])
    assert found == ([] if "!" not in sshd_t else
                     ["allowusers !alice@corp.example: meant for alice@corp.example, read by sshd as user 'alice' "
                      "from host 'corp.example'"])


def test_a_managed_name_nss_answers_with_another_user_is_a_warning():
    from runas_agent.core.ledger import Ledger, Owned
    from runas_agent.doctor.names import at_names, nss_shadowing, with_nss

    ledger = Ledger({n: Owned(n, uid, uid, "person", (f"id-{n}",)) for n, uid in
                     [("alice@corp.example", 1_100_000_000), ("bob@corp.example", 1_100_000_001), ("carol", 1_100_000_002)]})
    assert at_names(ledger) == ["alice@corp.example", "bob@corp.example"]
    answered = {"alice@corp.example": 1_100_000_000, "bob@corp.example": 612400001}  # bob: an AD user's UID
    shadowed = nss_shadowing(ledger, answered)
    assert shadowed == ["bob@corp.example: NSS answers uid 612400001, not the agent's account (uid 1100000001)"]
    verdict = with_nss(name_rules_verdict("rhel-email", naming.RHEL_EMAIL, None, None), shadowed)
    assert verdict.status == WARNING and "1 managed name with another user" in verdict.summary
    assert "files first" in verdict.remedy and verdict.details == tuple(shadowed)
    assert nss_shadowing(ledger, {"alice@corp.example": None, "bob@corp.example": 1_100_000_001}) == []
