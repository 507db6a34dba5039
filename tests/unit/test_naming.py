import string

import pytest
from hypothesis import given, strategies as st

from runas_agent.core import naming
from runas_agent.core.naming import DEBIAN, RHEL, RHEL_EMAIL, name_problem


@pytest.mark.parametrize("value, debian_ok, rhel_ok", [
    ("alice", True, True),
    ("john.doe", True, True),
    ("john.doe@example.com", True, False),    # '@': Debian accepts, RHEL/AL2023 refuses
    ("Alice", True, True),
    ("iret", True, True),
    ("a" * 32, True, True),
    ("a" * 33, False, False),                 # over 32 bytes
    ("é" * 16, True, False),                  # 32 bytes of UTF-8
    ("é" * 17, False, False),                 # 34 bytes
    ("", False, False),
    ("IRET, Inc.", False, False),             # not a session tag value
    ("a b", False, False),
    ("a:b", False, False),
    ("a/b", False, False),
    ("-rf", False, False),
    ("+x", False, False),
    ("~x", False, False),
    ("1234", False, False),                   # `id 1234` resolves a UID
    ("root", False, False),
    ("ssm-user", False, False),
    ("ROOT", False, False),
    ("ALL", False, False),
    ("runas-off-123", False, False),
    (".", False, False),
    ("..", False, False),
    ("a$", False, False),                     # '$' is not a legal tag character
    ("a;id", False, False),
    ("a`id`", False, False),
    ("a\nb", False, False),
    ("x=y+z", True, False),
])
def test_name_rules(value, debian_ok, rhel_ok):
    assert (name_problem(value, DEBIAN) is None) == debian_ok, name_problem(value, DEBIAN)
    assert (name_problem(value, RHEL) is None) == rhel_ok, name_problem(value, RHEL)


@pytest.mark.parametrize("value, ok", [
    ("john.doe@example.com", True),            # the point of the rule
    ("a@b", True),
    ("jo@x.example", True),
    ("alice", True),
    ("@example.com", False),                   # '@' never first
    ("-a@b", False),
    ("a" * 22 + "@example.com", False),        # 34 bytes
    ("a" * 20 + "@example.com", True),         # 32 bytes
    ("é@example.com", False),                  # RHEL's character set still holds
    ("x=y@b", False),
    ("a+tag@example.com", False),
    ("runas-off-1@b", False),
    ("root@x", True),                          # only the exact reserved names are reserved
])
def test_rhel_email_is_the_rhel_rule_with_an_at_sign(value, ok):
    assert (name_problem(value, RHEL_EMAIL) is None) == ok, name_problem(value, RHEL_EMAIL)
    if "@" not in value:
        assert (name_problem(value, RHEL) is None) == ok


@given(st.text(alphabet=string.ascii_letters + string.digits + "_.-@$", max_size=40))
def test_rhel_email_accepts_what_rhel_accepts_and_differs_only_by_at_signs(value):
    if name_problem(value, RHEL) is None:
        assert name_problem(value, RHEL_EMAIL) is None
    if name_problem(value, RHEL_EMAIL) is None and "@" not in value:
        assert name_problem(value, RHEL) is None


def test_reasons_name_the_cause():
    assert "','" in name_problem("IRET, Inc.", DEBIAN)
    assert "32 bytes" in name_problem("a" * 40, DEBIAN)
    assert "no '@'" in name_problem("a@b", RHEL) and "rhel-email" in name_problem("a@b", RHEL)
    assert "rhel-email" not in name_problem("x=y", RHEL)  # refused for another character
    assert "empty" in name_problem("", DEBIAN)


@pytest.mark.parametrize("os_release, family", [
    ({"ID": "debian"}, "debian"),
    ({"ID": "ubuntu", "ID_LIKE": "debian"}, "debian"),
    ({"ID": "amzn", "ID_LIKE": "fedora"}, "rhel"),
    ({"ID": "rhel", "ID_LIKE": "fedora"}, "rhel"),
    ({}, "rhel"),
])
def test_rules_follow_os_release(os_release, family):
    assert naming.rules_for_os_release(os_release).family == family


SHELL_META = set("$`;&|<>(){}[]*?!'\"\\ \t\n#~")


@given(st.text(min_size=0, max_size=40))
def test_accepted_names_are_safe_everywhere(value):
    """Whatever the directory holds, an accepted name is a legal tag value, fits in 32 bytes, has no
    shell metacharacter (the SSM agent runs `sh -c "id <name>"` unquoted), and cannot be an option."""
    for rules in (DEBIAN, RHEL):
        if name_problem(value, rules) is None:
            assert naming.tag_value_problem(value) is None
            assert 0 < len(value.encode()) <= 32
            assert not (set(value) & SHELL_META)
            assert not value.startswith("-") and "/" not in value and ":" not in value
            assert not value.isdigit()


@given(st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=32))
def test_rhel_accepts_what_its_regex_accepts(value):
    if value[0] != "-" and not value.isdigit() and value not in (".", "..") and value.lower() not in ("root",) \
            and value not in naming.RESERVED and not value.startswith(naming.DISABLED_PREFIX):
        assert name_problem(value, RHEL) is None


def test_disabled_name_is_never_an_accepted_name():
    parked = naming.disabled_name(1234567890)
    assert len(parked) <= 32
    assert name_problem(parked, DEBIAN) is not None
