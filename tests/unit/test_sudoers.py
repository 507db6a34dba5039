"""The sudo policy core: names, commands, file names, rendering, who gets which rule, and planning."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from runas_agent import config
from runas_agent.core import sudoers as s
from runas_agent.core.sudoers import (Grantee, Observed, RemoveSsmUserBlanket, RemoveSudoers, Rule, SudoLedger,
                                      WriteSudoers)
from runas_agent.directory import parse_document
from runas_agent.errors import ConfigError
from runas_agent.settings import sudo_rules

HOSTILE_NAMES = [
    ("ALL", "keyword ALL"),
    ("all", "keyword ALL"),
    ("%sudo", "as a group"),
    ("%#0", "as a group"),
    ("#0", "numeric uid"),
    ("+admins", "netgroup"),
    ("!root", "negation"),
    ("john doe", "' '"),
    ("john,root", "','"),
    ("a=b", "'='"),
    ("a!b", "'!'"),
    ("a\nroot ALL=(ALL) NOPASSWD: ALL", "'\\n'"),
    ("a\tb", "'\\t'"),
    ("a:b", "':'"),
    ('a"b', "'\"'"),
    ("a\\b", "'\\\\'"),
    ("(root)", "'('"),
    ("a#b", "'#'"),
    ("-x", "must start with"),
    (".hidden", "must start with"),
    ("", "empty"),
]

GOOD_NAMES = ["john.doe", "john_doe", "alice@example.com", "OPS", "Mixed.Case", "josé", "a+b", "_svc", "0day", "iret"]


@pytest.mark.parametrize("name,why", HOSTILE_NAMES)
def test_hostile_names_are_refused_with_a_reason(name, why):
    problem = s.name_problem(name)
    assert problem is not None and why in problem
    with pytest.raises(ValueError):
        s.render(name, [Rule(0, ("ALL",))])


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_ordinary_names_are_written_in_double_quotes(name):
    assert s.name_problem(name) is None
    text = s.render(name, [Rule(0, ("/usr/bin/id",))])
    assert f'\n"{name}" ALL=' in text


@pytest.mark.parametrize("command,problem", [
    ("ALL", None),
    ("/usr/bin/journalctl", None),
    ("/usr/bin/systemctl restart nginx", None),
    ("/usr/bin/id \"\"", None),
    ("/usr/bin/kill --signal=HUP 1", None),
    ("/bin/chown app:app /srv/app", None),
    ("ALL /bin/sh", "ALL takes no arguments"),
    ("systemctl", "absolute path"),
    ("all", "absolute path"),
    ("/usr/bin/", "directory"),
    ("/usr/bin/*", "wildcard"),
    ("/usr/bin/systemctl restart *", "wildcard"),
    ("/usr/bin/ls [ab]", "wildcard"),
    ("/usr/bin/a, /usr/bin/b", "split the command"),
    ("/usr/bin/a\nALL", "control character"),
    ("/usr/bin/../bin/sh", "normalised"),
    ("/usr//bin/sh", "normalised"),
    ("/usr/bin/x # comment", "comment"),
    ("/usr/bin/x !y", "negation"),
    ("/usr/bin/x a\\b", "escape"),
    ("/usr/bin/grep ^root$", "regular expression"),
    ("/usr/bin/x 'a b'", "quotes"),
    ("/usr/bin/x \"a\"", "\"\""),
    ("/usr/bin/x y=z\x00", "control character"),
    ("", "empty"),
])
def test_command_validation(command, problem):
    found = s.command_problem(command)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_render_whole_file_exactly():
    rules = [Rule(0, ("/usr/bin/journalctl", "/usr/bin/kill --signal=HUP 1"), nopasswd=True, identity_store_group="Ops"),
             Rule(3, ("/usr/bin/id \"\"",), sudo_as=("root", "nobody"), noexec=True, setenv=True, user="jane")]
    assert s.render("john.doe", rules) == (
        "# runas-agent: managed sudo rights\n"
        '# account "john.doe": written by runas-agent on every sync; change the policy, not this file.\n'
        "# sudo.rules[0] (identity_store_group Ops)\n"
        '"john.doe" ALL=("root") NOPASSWD: EXEC: NOSETENV: /usr/bin/journalctl, /usr/bin/kill --signal\\=HUP 1\n'
        "# sudo.rules[3] (user jane)\n"
        '"john.doe" ALL=("root", "nobody") PASSWD: NOEXEC: SETENV: /usr/bin/id ""\n')


def test_all_only_when_written_and_runas_all():
    text = s.render("ops", [Rule(0, ("ALL",), sudo_as=("ALL",), nopasswd=True, run_as="ops")])
    assert s.rule_lines(text) == ['"ops" ALL=(ALL) NOPASSWD: EXEC: NOSETENV: ALL']


def test_comment_text_from_config_cannot_break_out_of_its_line():
    text = s.render("ann", [Rule(0, ("/usr/bin/id",), identity_store_group="Ops\nann ALL=(ALL) ALL")])
    assert s.rule_lines(text) == ['"ann" ALL=("root") PASSWD: EXEC: NOSETENV: /usr/bin/id']


def test_rule_at_maps_visudo_line_numbers_to_policy_keys():
    text = s.render("ann", [Rule(2, ("/usr/bin/id",), user="ann"), Rule(5, ("/usr/bin/ls",), user="ann")])
    numbered = {i + 1: line for i, line in enumerate(text.splitlines())}
    assert [s.rule_at(text, n) for n in sorted(numbered)] == [None, None, "sudo.rules[2]", "sudo.rules[2]", "sudo.rules[5]", "sudo.rules[5]"]


# --- file names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", GOOD_NAMES + ["a" * 32, "x.y~", "~"])
def test_file_names_are_read_by_sudo(name):
    fname = s.file_name(name)
    assert fname.startswith(s.FILE_PREFIX)
    assert "." not in fname and not fname.endswith("~")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", fname) and len(fname) <= 64
    assert s.file_name(name) == fname  # stable across syncs and hosts


def test_dotted_and_underscored_names_get_different_files():
    assert s.file_name("john.doe") != s.file_name("john_doe") != s.file_name("john@doe")


@given(st.text(min_size=1, max_size=32), st.text(min_size=1, max_size=32))
def test_file_names_never_collide_and_are_never_skipped(a, b):
    for name in (a, b):
        fname = s.file_name(name)
        assert "." not in fname and not fname.endswith("~") and "/" not in fname
    if a != b:
        assert s.file_name(a) != s.file_name(b)


def test_temp_files_are_skipped_by_includedir():
    assert "." in s.TEMP_PREFIX and not s.TEMP_PREFIX.startswith(s.FILE_PREFIX)


# --- who gets which rules ------------------------------------------------------------------------

DIRECTORY = parse_document({
    "IdentityStoreId": "d-1234567890",
    "Users": [{"UserId": f"id-{n}", "UserName": n, "UserStatus": "ENABLED"} for n in ("ann", "bob", "cid")],
    "Groups": [{"GroupId": "g-ops", "DisplayName": "Ops"}, {"GroupId": "g-dev", "DisplayName": "Dev"}],
    "GroupMemberships": [{"GroupId": "g-ops", "MemberId": {"UserId": "id-ann"}},
                         {"GroupId": "g-ops", "MemberId": {"UserId": "id-bob"}},
                         {"GroupId": "g-dev", "MemberId": {"UserId": "id-bob"}}],
})

OPS = Rule(0, ("/usr/bin/journalctl",), identity_store_group="Ops")
DEV_BY_ID = Rule(1, ("/usr/bin/make",), identity_store_group="g-dev")
CID = Rule(2, ("/usr/bin/id",), user="cid")
VENDOR = Rule(3, ("/usr/bin/systemctl restart app",), run_as="vendor")
OPS_SHARED = Rule(4, ("/usr/bin/uptime",), identity_store_group="Ops", shared_accounts="all_members")
POLICY = [OPS, DEV_BY_ID, CID, VENDOR, OPS_SHARED]


def person(name):
    return Grantee(name, "person", (f"id-{name}",), (name,))


@pytest.mark.parametrize("grantee,expected", [
    (person("ann"), [OPS, OPS_SHARED]),
    (person("bob"), [OPS, DEV_BY_ID, OPS_SHARED]),
    (person("cid"), [CID]),
    (Grantee("vendor", "shared", ("id-cid",), ("cid",)), [VENDOR]),  # not cid's personal rule
    (Grantee("vendor", "person", ("id-ann",), ("ann",)), [OPS, VENDOR, OPS_SHARED]),
    # a shared account: never the union of its members' personal rules...
    (Grantee("iret", "shared", ("id-ann", "id-bob"), ("ann", "bob")), [OPS_SHARED]),
    # ...and an all_members rule only while every person behind it holds it
    (Grantee("acme", "shared", ("id-ann", "id-cid"), ("ann", "cid")), []),
    (Grantee("nobody-here", "shared", (), ()), []),
])
def test_rules_for(grantee, expected):
    assert s.rules_for(grantee, POLICY, DIRECTORY) == expected


def test_policy_warnings_name_the_rule():
    warnings = s.policy_warnings([Rule(7, ("ALL",), identity_store_group="Gone"), Rule(8, ("ALL",), user="nobody")], DIRECTORY)
    assert len(warnings) == 2 and warnings[0].startswith("sudo.rules[7]:") and warnings[1].startswith("sudo.rules[8]:")


# --- planning ------------------------------------------------------------------------------------

def want(**accounts):
    return {name: (person(name), rules) for name, rules in accounts.items()}


def on_disk(name, rules, mode=0o440, uid=0):
    return Observed(s.render(name, rules), mode, uid, 0)


ANN = s.file_name("ann")
BOB = s.file_name("bob")


def test_new_account_gets_a_new_drop_in():
    p = s.plan(want(ann=[OPS]), {ANN: None}, SudoLedger())
    assert [type(a) for a in p.actions] == [WriteSudoers]
    write = p.actions[0]
    assert (write.name, write.file, write.why, write.content) == ("ann", ANN, "new", s.render("ann", [OPS]))
    assert write.added == (OPS.spec(),) and write.removed == ()
    assert write.line().startswith("+ sudoers ann: " + ANN)
    assert p.ledger.files == {"ann": ANN}


def test_unchanged_sync_plans_nothing():
    p = s.plan(want(ann=[OPS], bob=[]), {ANN: on_disk("ann", [OPS])}, SudoLedger({"ann": ANN}))
    assert p.actions == () and p.skips == () and p.warnings == ()
    assert p.ledger.files == {"ann": ANN}


def test_policy_change_rewrites_only_the_changed_file_with_rule_diff():
    observed = {ANN: on_disk("ann", [OPS]), BOB: on_disk("bob", [OPS, DEV_BY_ID])}
    p = s.plan(want(ann=[OPS], bob=[OPS, CID]), observed, SudoLedger({"ann": ANN, "bob": BOB}))
    assert [(type(a), a.name) for a in p.actions] == [(WriteSudoers, "bob")]
    assert p.actions[0].added == (CID.spec(),) and p.actions[0].removed == (DEV_BY_ID.spec(),)
    assert "+ (" in p.actions[0].line() and "- (" in p.actions[0].line()


@pytest.mark.parametrize("mode,uid,why", [(0o644, 0, "mode 0644 -> 0440"), (0o440, 1000, "owner 1000:0 -> 0:0")])
def test_mode_or_owner_change_alone_is_rewritten(mode, uid, why):
    p = s.plan(want(ann=[OPS]), {ANN: on_disk("ann", [OPS], mode, uid)}, SudoLedger({"ann": ANN}))
    assert [(type(a), a.why, a.added, a.removed) for a in p.actions] == [(WriteSudoers, why, (), ())]


@pytest.mark.parametrize("wanted,reason", [({}, "no longer active"), ({"ann": (person("ann"), [])}, "no rule")])
def test_inactive_or_unprivileged_account_loses_its_drop_in(wanted, reason):
    p = s.plan(wanted, {ANN: on_disk("ann", [OPS])}, SudoLedger({"ann": ANN}))
    assert [(type(a), a.name, a.file, a.removed) for a in p.actions] == [(RemoveSudoers, "ann", ANN, (OPS.spec(),))]
    assert reason in p.actions[0].reason
    assert p.ledger.files == {}


def test_owned_file_already_gone_is_forgotten_without_action():
    p = s.plan({}, {ANN: None}, SudoLedger({"ann": ANN}))
    assert p.actions == () and p.ledger.files == {}


def test_file_not_written_by_the_agent_is_never_touched():
    foreign = Observed('ann ALL=(ALL) NOPASSWD: ALL\n', 0o440)
    p = s.plan(want(ann=[OPS]), {ANN: foreign}, SudoLedger())
    assert p.actions == () and p.ledger.files == {}
    assert len(p.skips) == 1 and "not written by runas-agent" in p.skips[0].reason
    # marked, but not in the ledger: still not ours
    p = s.plan(want(ann=[OPS]), {ANN: on_disk("ann", [CID])}, SudoLedger())
    assert p.actions == () and p.skips


def test_owned_file_edited_by_hand_is_left_alone_even_when_the_account_goes():
    edited = Observed('ann ALL=(ALL) ALL\n', 0o440)
    p = s.plan(want(ann=[OPS]), {ANN: edited}, SudoLedger({"ann": ANN}))
    assert p.actions == () and "changed by hand" in p.warnings[0]
    p = s.plan({}, {ANN: edited}, SudoLedger({"ann": ANN}))
    assert p.actions == () and "not removing" in p.warnings[0] and p.ledger.files == {"ann": ANN}


@pytest.mark.parametrize("name,_", HOSTILE_NAMES)
def test_hostile_account_names_never_get_a_file(name, _):
    p = s.plan({name: (Grantee(name, "person", ("id-x",), ("x@example.com",)), [Rule(0, ("ALL",), sudo_as=("ALL",), nopasswd=True, user="x@example.com")])},
               {}, SudoLedger())
    assert p.actions == () and p.ledger.files == {}
    assert len(p.skips) == 1 and p.skips[0].identity == "x@example.com" and "no sudo rights written" in p.skips[0].reason


SSM_BLANKET = "# User rules for ssm-user\nssm-user ALL=(ALL) NOPASSWD:ALL\n"


def test_ssm_blanket_is_kept_by_default_and_removed_when_opted_in():
    observed = {s.SSM_USER_FILE: Observed(SSM_BLANKET, 0o440)}
    assert s.plan({}, observed, SudoLedger()).actions == ()
    p = s.plan({}, observed, SudoLedger(), remove_ssm_blanket=True)
    assert p.actions == (RemoveSsmUserBlanket(s.SSM_USER_FILE, s.backup_name(SSM_BLANKET), ("ssm-user ALL=(ALL) NOPASSWD:ALL",)),)
    assert "backed up" in p.actions[0].line()
    assert s.plan({}, {s.SSM_USER_FILE: None}, SudoLedger(), remove_ssm_blanket=True).actions == ()


def test_ssm_file_granting_more_than_ssm_user_is_left_alone():
    edited = SSM_BLANKET + "deploy ALL=(ALL) NOPASSWD: /usr/bin/systemctl\n"
    p = s.plan({}, {s.SSM_USER_FILE: Observed(edited, 0o440)}, SudoLedger(), remove_ssm_blanket=True)
    assert p.actions == () and "leaves it alone" in p.warnings[0]


def test_backup_name_depends_on_content():
    assert s.backup_name(SSM_BLANKET) != s.backup_name(SSM_BLANKET + "#\n")
    assert "/" not in s.backup_name(SSM_BLANKET)


def test_ledger_round_trip_and_refuses_foreign_paths():
    ledger = SudoLedger({"ann": ANN})
    assert SudoLedger.from_dict(ledger.to_dict()) == ledger
    for bad in ({"version": 1, "files": {"ann": "../passwd"}}, {"version": 1, "files": {"ann": "README"}}, {"files": {}}, []):
        with pytest.raises(ValueError):
            SudoLedger.from_dict(bad)


# --- config --------------------------------------------------------------------------------------

BASE = {"source": {"type": "file", "path": "/srv/dir.json"}, "run_as": {"expression": "${path:userName}"}}


def test_sudo_defaults():
    cfg = config.validate(BASE)
    assert cfg.sudo.rules == () and cfg.sudo.sudoers_dir == "/etc/sudoers.d"
    assert cfg.sudo.remove_ssm_user_blanket is False


def test_sudo_rule_from_config():
    cfg = config.validate({**BASE, "sudo": {"rules": [
        {"identity_store_group": "Ops", "commands": ["/usr/bin/systemctl  restart nginx"], "nopasswd": True},
        {"run_as": "iret", "commands": ["ALL"], "sudo_as": "ALL"},
        {"user": "ann", "commands": ["/bin/id"], "sudo_as": ["root", "postgres"]}]}})
    rules = sudo_rules(cfg)
    assert rules[0] == Rule(0, ("/usr/bin/systemctl restart nginx",), ("root",), identity_store_group="Ops", nopasswd=True)
    assert rules[1] == Rule(1, ("ALL",), ("ALL",), run_as="iret")
    assert rules[2] == Rule(2, ("/bin/id",), ("root", "postgres"), user="ann")


@pytest.mark.parametrize("written", ["ALL", ["root", "postgres"]])
def test_the_old_spelling_runas_still_means_sudo_as(written):
    old = config.validate({**BASE, "sudo": {"rules": [{"user": "ann", "commands": ["/bin/id"], "runas": written}]}})
    new = config.validate({**BASE, "sudo": {"rules": [{"user": "ann", "commands": ["/bin/id"], "sudo_as": written}]}})
    assert old == new
    assert old.sudo.rules[0].sudo_as == ((written,) if isinstance(written, str) else tuple(written))


def test_a_rule_giving_both_spellings_is_refused_naming_the_old_one():
    with pytest.raises(ConfigError) as err:
        config.validate({**BASE, "sudo": {"rules": [{"user": "ann", "commands": ["/bin/id"], "sudo_as": "root", "runas": "ALL"}]}})
    assert err.value.problems == ["sudo.rules[0].runas: the old spelling of sudo.rules[0].sudo_as, which is given too; "
                                  "keep only sudo_as"]


def test_problems_of_the_old_spelling_name_it_as_written():
    with pytest.raises(ConfigError) as err:
        config.validate({**BASE, "sudo": {"rules": [{"user": "ann", "commands": ["/bin/id"], "runas": ["root", "#0"]},
                                                    {"user": "bob", "commands": ["/bin/id"], "sudo_as": []}]}})
    assert err.value.problems == ["sudo.rules[0].runas[1]: '#0' starts with '#': sudoers would read it as a numeric uid",
                                  "sudo.rules[1].sudo_as: list at least one target user"]


def test_sudo_config_problems_name_their_keys():
    with pytest.raises(ConfigError) as err:
        config.validate({**BASE, "sudo": {"rules": [
            {"user": "ann", "commands": ["/usr/bin/*", "ALL", "ls"]},
            {"run_as": "%wheel", "identity_store_group": "Ops", "commands": [], "runas": ["ALL", "#0"]},
            {"run_as": "iret", "commands": ["/bin/x"], "shared_accounts": "all_members"},
        ]}})
    problems = err.value.problems
    for key in ("sudo.rules[0].commands[0]:", "sudo.rules[0].commands[2]:", "sudo.rules[1]: give exactly one",
                "sudo.rules[1].run_as:", "sudo.rules[1].commands:", "sudo.rules[1].runas[1]:", "sudo.rules[2].shared_accounts:"):
        assert any(p.startswith(key) for p in problems), (key, problems)
    assert not any(p.startswith("sudo.rules[0].commands[1]") or p.startswith("sudo.rules[1].runas[0]") for p in problems)


@pytest.mark.parametrize("rule,key", [
    ({"user": "ann"}, "sudo.rules[0].commands: required"),
    ({"user": "ann", "commands": ["/bin/x"], "nopasswd": "yes"}, "sudo.rules[0].nopasswd: must be true or false"),
    ({"user": "ann", "commands": ["/bin/x"], "colour": 1}, "sudo.rules[0].colour: unknown key"),
    ({"user": "ann", "commands": "/bin/x"}, "sudo.rules[0].commands: must be a list"),
])
def test_sudo_schema_problems(rule, key):
    with pytest.raises(ConfigError) as err:
        config.validate({**BASE, "sudo": {"rules": [rule]}})
    assert any(p.startswith(key) for p in err.value.problems), err.value.problems
