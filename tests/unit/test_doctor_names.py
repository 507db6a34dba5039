"""The allowed-names check's verdict: accounts.allowed_names unset is a warning with a pattern to start
from; set, every Run As name the directory maps to is compared with it."""

from __future__ import annotations

import re

import pytest

from runas_agent.doctor.check import OK, WARNING
from runas_agent.doctor.names import EXAMPLE, allowed_names_verdict, suggestion


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
