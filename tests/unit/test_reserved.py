"""Reserved names, sysusers.d parsing and accounts.allowed_names: tables of cases."""

from __future__ import annotations

import os

import pytest

from runas_agent import config
from runas_agent.core import reserved
from runas_agent.core.allowed import AllowedNames, compile_pattern
from runas_agent.core.reserved import parse_sysusers, reserved_reason
from runas_agent.errors import ConfigError
from runas_agent.host.sysusers import effective_files, read_sysusers


@pytest.mark.parametrize("name, why", [
    ("root", "base system"),
    ("www-data", "base system"),
    ("_apt", "'_'"),
    ("nogroup", "base system"),
    ("docker", "server package"),
    ("postgres", "Debian packages"),
    ("redis", "server package"),
    ("mysql", "RHEL family"),
    ("nginx", "server package"),
    ("messagebus", "Debian packages"),
    ("polkitd", "Ubuntu's EC2 images"),
    ("sshd", "Debian packages"),
    ("chrony", "Amazon Linux"),
    ("_chrony", "'_'"),
    ("systemd-coredump", "'systemd-'"),
    ("systemd-anything-new", "'systemd-'"),
    ("Debian-exim", "'Debian-'"),
    ("wheel", "systemd"),
    ("ec2-user", "Amazon Linux"),
    ("ubuntu", "Ubuntu's EC2 images"),
    ("admin", "Ubuntu's EC2 images"),
    ("cloud-user", "default user"),
    ("rocky", "default user"),
    ("almalinux", "default user"),
    ("ssm-user", "AWS"),
    ("cwagent", "AWS"),
    ("ec2-instance-connect", "Ubuntu's EC2 images"),
    ("nfsnobody", "RHEL family"),
    ("tss", "RHEL family"),
    ("kvm", "systemd"),
    ("lxd", "Ubuntu's EC2 images"),
])
def test_well_known_names_are_reserved_with_their_origin(name, why):
    reason = reserved_reason(name)
    assert reason is not None and reason.startswith(f"{name!r} is reserved") and why in reason, reason


@pytest.mark.parametrize("name", [
    "alice", "john.doe@example.com", "iret", "acme", "docker-team", "postgresql-dba", "ubuntu.fans", "system.d",
    "systemd", "ec2-ops", "admins", "Docker", "ROOT2", "a_b", "debian.fan", "vendor-x",
])
def test_other_names_are_not_reserved(name):
    assert reserved_reason(name) is None


def test_every_list_names_its_origin_and_holds_only_plain_names():
    for item in reserved.LISTS:
        assert item.what and item.names
        assert all(n == n.strip() and ":" not in n and "/" not in n for n in item.names), item.what


@pytest.mark.parametrize("host", [{"vendord": "/usr/lib/sysusers.d/vendor.conf"}, ["vendord"], frozenset({"vendord"})])
def test_names_the_hosts_sysusers_files_declare_are_reserved(host):
    reason = reserved_reason("vendord", host)
    assert reason is not None and "sysusers.d" in reason
    if isinstance(host, dict):
        assert "/usr/lib/sysusers.d/vendor.conf" in reason
    assert reserved_reason("vendor", host) is None


SYSUSERS = '''
# a comment
u     root    0     "Super User" /root /bin/bash
u!    locked  -     "Locked account"
u     app     -:appgroup "App daemon" /var/lib/app
u     pinned  812:812 "Pinned"
u     bypath  /usr/bin/app  "Owner of the file"
g     appgroup  -
g     sgx     -     -
m     app     audio
r     -       500-900
u     'quoted name' - "x"
'''


def test_parse_sysusers_reads_u_g_and_m_lines():
    parsed = parse_sysusers(SYSUSERS)
    assert parsed.problems == ()
    assert [(e.kind, e.name, e.group) for e in parsed.entries] == [
        ("u", "root", None), ("u", "locked", None), ("u", "app", "appgroup"), ("u", "pinned", None),
        ("u", "bypath", None), ("g", "appgroup", None), ("g", "sgx", None), ("m", "app", "audio"),
        ("u", "quoted name", None)]
    assert parsed.names() == {"root", "locked", "app", "appgroup", "pinned", "bypath", "sgx", "audio", "quoted name"}


@pytest.mark.parametrize("line, problem", [
    ("x foo -", "unknown line type"),
    ("u", "no name"),
    ("u - -", "no name"),
    ("m lonely", "without a group"),
    ('u "unterminated -', "No closing quotation"),
    ("u user%m -", "specifier"),
])
def test_parse_sysusers_reports_what_it_cannot_read_and_goes_on(line, problem):
    parsed = parse_sysusers(f"g before -\n{line}\ng after -\n")
    assert [e.name for e in parsed.entries] == ["before", "after"]
    assert len(parsed.problems) == 1 and parsed.problems[0].startswith("line 2: ") and problem in parsed.problems[0]


def test_the_machines_own_sysusers_files_parse_cleanly():
    for path in effective_files():
        with open(path, encoding="utf-8") as handle:
            assert parse_sysusers(handle.read()).problems == (), path


def test_host_files_are_read_in_systemds_order_with_overrides_and_masks(tmp_path):
    etc, usr = tmp_path / "etc", tmp_path / "usr"
    etc.mkdir()
    usr.mkdir()
    (usr / "a.conf").write_text("u shipped -\n")
    (etc / "a.conf").write_text("u overridden -\n")          # replaces usr/a.conf
    (usr / "b.conf").write_text("u masked -\n")
    os.symlink(os.devnull, etc / "b.conf")                   # masks usr/b.conf
    (usr / "c.conf").write_text("g vendor -\nbogus line\n")
    (usr / "notes.txt").write_text("u ignored -\n")
    found = read_sysusers((str(etc), str(tmp_path / "missing"), str(usr)))
    assert found.names == {"overridden": str(etc / "a.conf"), "vendor": str(usr / "c.conf")}
    assert len(found.problems) == 1 and str(usr / "c.conf") in found.problems[0]


# --- accounts.allowed_names -------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, name, allowed", [
    (r"^[a-z0-9._-]+@corp\.example$", "alice@corp.example", True),
    (r"^[a-z0-9._-]+@corp\.example$", "alice@corp.example.evil", False),
    (r"^[a-z0-9._-]+@corp\.example$", "docker", False),
    (r"[a-z]+", "alice", True),
    (r"[a-z]+", "alice2", False),           # matched whole, not searched
    (r"[a-z]+", "2alice", False),
    (r"ops-.*", "ops-team", True),
    (r"ops-.*", "devops-team", False),
    (r"(alice|bob)", "alice", True),
    (r"(alice|bob)", "alicebob", False),
])
def test_allowed_names_are_matched_whole(pattern, name, allowed):
    problem = AllowedNames.from_setting(pattern).problem(name)
    assert (problem is None) == allowed
    if not allowed:
        assert "accounts.allowed_names" in problem and repr(name) in problem


def test_no_pattern_allows_every_name():
    assert AllowedNames.from_setting(None).problem("anything") is None


@pytest.mark.parametrize("pattern, message", [
    ("[a-z", "not a valid regular expression: unterminated character set at position 0"),
    ("(a", "missing ), unterminated subpattern at position 0"),
    ("a{2,1}", "min repeat greater than max repeat"),
    ("", "must not be empty"),
])
def test_a_bad_pattern_is_refused_naming_the_key(pattern, message):
    with pytest.raises(ValueError) as caught:
        compile_pattern(pattern)
    assert message in str(caught.value)
    with pytest.raises(ConfigError) as refused:
        config.validate({"run_as": {"expression": "${path:userName}"}, "accounts": {"allowed_names": pattern}})
    assert any(p.startswith("accounts.allowed_names: ") and message in p for p in refused.value.problems), refused.value.problems


def test_the_key_defaults_to_unset_and_keeps_its_text():
    assert config.defaults().accounts.allowed_names is None
    cfg = config.validate({"source": {"type": "file", "path": "/tmp/directory.json"}, "run_as": {"expression": "${path:userName}"},
                           "accounts": {"allowed_names": r"^[a-z]+@corp\.example$"}})
    assert cfg.accounts.allowed_names == r"^[a-z]+@corp\.example$"
    with pytest.raises(ConfigError) as wrong_type:
        config.validate({"run_as": {"expression": "${path:userName}"}, "accounts": {"allowed_names": ["a"]}})
    assert any(p.startswith("accounts.allowed_names: must be") for p in wrong_type.value.problems)
