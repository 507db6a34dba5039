"""Observe once, plan purely, apply: the observation (read from files in a temporary tree, never this
machine's /etc), the composition of the account and sudo plans, the apply dispatch, and both ledgers
written around the apply by the same protocol. Appliers are fakes here; the real ones run in isolated
hosts (tests/integration)."""

import dataclasses
import json

import pytest

from runas_agent import config
from runas_agent.core import sudoers as s
from runas_agent.core.action import Outcome
from runas_agent.core.desired import Settings, compute
from runas_agent.core.expression import parse
from runas_agent.core.ledger import Ledger, Owned
from runas_agent.core.naming import DEBIAN
from runas_agent.core.observed import HostGroup, HostState, HostUser, Observation
from runas_agent.core.plan import CreateAccount, DisableAccount, PlanSettings
from runas_agent.core.sudoers import Rule, SudoAction, SudoLedger, SudoSettings, WriteSudoers
from runas_agent.core.sync import SyncSettings, plan
from runas_agent.directory import make_document, parse_document
from runas_agent.host.apply import apply_plan
from runas_agent.host.files import StateDir
from runas_agent.host.observe import observe
from runas_agent.sync import Appliers, run_plan

OPS = Rule(0, ("/usr/bin/journalctl --no-pager -u nginx",), user="ann")
BASE = HostState.build([HostUser("root", 0, 0, "root", "/root", "/bin/bash")], [HostGroup("root", 0, ())])


def directory(*names):
    return parse_document(make_document("d-1234567890", [{"UserId": f"id-{n}", "UserName": n, "UserStatus": "ENABLED"} for n in names], [], []))


def plan_for(names, observation, rules=(OPS,), **kw):
    d = directory(*names)
    desired = compute(d, Settings(parse("${path:userName}"), "person", DEBIAN))
    return plan(desired, d, observation, SyncSettings(PlanSettings(uid_min=2000, uid_max=2_000_000),
                                                      SudoSettings(tuple(rules))), **kw)


def observation(host=BASE, ledger=Ledger(), sudo_ledger=SudoLedger(), drop_ins=None):
    return Observation(host, {"ID": "debian"}, ledger, sudo_ledger, drop_ins or {})


# --- the plan: accounts, then sudo, from one observation ----------------------------------------------

def test_sudo_rights_are_planned_for_the_accounts_the_account_plan_leaves_active():
    taken = HostState.build(list(BASE.users.values()) + [HostUser("ann", 1001, 1001, "", "/h", "/bin/sh")], [])
    result = plan_for(["ann"], observation(taken))
    assert result.actions == () and [sk.name for sk in result.skips] == ["ann"]  # someone else's: no drop-in
    result = plan_for(["ann"], observation())
    assert [type(a) for a in result.actions] == [CreateAccount, WriteSudoers]
    assert result.sudo_ledger.files == {"ann": s.file_name("ann")} and "ann" in result.ledger.accounts


def test_the_plan_is_a_function_of_its_inputs():
    seen = observation()
    assert plan_for(["ann", "bob"], seen) == plan_for(["ann", "bob"], seen)
    assert seen == observation()  # nothing was appended to what was observed


def test_policy_warnings_come_before_those_about_drop_ins():
    rules = (OPS, Rule(1, ("ALL",), user="nobody-here"))
    edited = s.Observed("ann ALL=(ALL) ALL\n", 0o440)
    ledger = Ledger({"ann": Owned("ann", 5000, 5000, "person", ("id-ann",))})
    host = HostState.build(list(BASE.users.values()) + [HostUser("ann", 5000, 5000, "runas-agent ann (ann)", "/h", "/bin/bash")],
                           [HostGroup("ann", 5000, ())])
    result = plan_for(["ann"], observation(host, ledger, SudoLedger({"ann": s.file_name("ann")}),
                                           {s.file_name("ann"): edited}), rules=rules)
    assert [w.split(":")[0].split(" ")[0] for w in result.warnings] == ["sudo.rules[1]", s.file_name("ann")]


def test_both_ledgers_of_a_plan_start_from_what_was_observed():
    seen = observation()
    accounts, sudo = plan_for(["ann"], seen).ledgers(seen)
    assert accounts.before is seen.ledger and "ann" in accounts.planned.accounts
    assert sudo.before is seen.sudo_ledger and sudo.planned.files == {"ann": s.file_name("ann")}


# --- the apply dispatch ---------------------------------------------------------------------------

class FakeAccounts:
    def __init__(self, fail=(), on_apply=None):
        self.fail, self.on_apply, self.got = set(fail), on_apply, []

    def apply(self, actions, progress=None):
        if self.on_apply:
            self.on_apply()
        self.got = list(actions)
        outcome = Outcome()
        for a in actions:
            (outcome.failed.append((a, "no")) if a.account in self.fail else outcome.done.append(a))
        return outcome


class FakeSudo:
    def __init__(self):
        self.got, self.blocked = [], None

    def apply(self, actions, blocked=frozenset()):
        self.got, self.blocked = list(actions), set(blocked)
        outcome = Outcome()
        for a in actions:
            (outcome.failed.append((a, "blocked")) if a.account in blocked else outcome.done.append(a))
        return outcome


def test_account_actions_go_first_and_a_failed_account_blocks_its_sudo_rights():
    result = plan_for(["ann", "bob"], observation(), rules=(OPS, Rule(1, ("ALL",), user="bob")))
    accounts, sudo = FakeAccounts(fail={"ann"}), FakeSudo()
    outcome = apply_plan(result.actions, accounts, sudo)
    assert all(not isinstance(a, SudoAction) for a in accounts.got) and len(accounts.got) == 2
    assert [a.name for a in sudo.got] == ["ann", "bob"] and sudo.blocked == {"ann"}
    assert sorted(a.account for a, _ in outcome.failed) == ["ann", "ann"]
    assert sorted(a.account for a in outcome.done) == ["bob", "bob"]


# --- both ledgers around the apply ---------------------------------------------------------------------

def files(state):
    out = {}
    for name in ("ledger.json", "sudoers.json"):
        path = state / name
        out[name] = json.loads(path.read_text()) if path.exists() else None
    return out


def test_intent_is_recorded_before_the_first_action_and_settled_after_the_last(tmp_path):
    seen = observation()
    result = plan_for(["ann", "bob"], seen, rules=(OPS, Rule(1, ("ALL",), user="bob")))
    during = {}
    accounts = FakeAccounts(fail={"ann"}, on_apply=lambda: during.update(files(tmp_path)))
    outcome, unrecorded = run_plan(result, seen, StateDir(str(tmp_path)), Appliers(accounts, FakeSudo()))
    assert unrecorded == []
    # before anything was applied, both ledgers already named all that the plan might create
    assert set(during["ledger.json"]["accounts"]) == {"ann", "bob"}
    assert during["sudoers.json"]["files"] == {"ann": s.file_name("ann"), "bob": s.file_name("bob")}
    # afterwards, only what really is: ann's account and so her drop-in failed
    after = files(tmp_path)
    assert set(after["ledger.json"]["accounts"]) == {"bob"}
    assert after["sudoers.json"]["files"] == {"bob": s.file_name("bob")}
    assert len(outcome.failed) == 2


def test_a_plan_without_changes_writes_no_ledger(tmp_path):
    ledger = Ledger({"ann": Owned("ann", 5000, 5000, "person", ("id-ann",))})
    host = HostState.build(list(BASE.users.values()) + [HostUser("ann", 5000, 5000, "runas-agent ann (ann)", "/home/ann", "/bin/bash")],
                           [HostGroup("ann", 5000, ())])
    seen = observation(host, ledger)
    result = plan_for(["ann"], seen, rules=())
    assert not result.changes
    run_plan(result, seen, StateDir(str(tmp_path)), Appliers(FakeAccounts(on_apply=pytest.fail), FakeSudo()))
    assert files(tmp_path) == {"ledger.json": None, "sudoers.json": None}


def test_a_plan_without_actions_still_records_a_changed_ledger(tmp_path):
    ledger = Ledger({"ann": Owned("ann", 5000, 5000, "person", ())})  # an entry that recorded no UserId
    host = HostState.build(list(BASE.users.values()) + [HostUser("ann", 5000, 5000, "runas-agent ann (ann)", "/home/ann", "/bin/bash")],
                           [HostGroup("ann", 5000, ())])
    seen = observation(host, ledger)
    result = plan_for(["ann"], seen, rules=())
    assert result.actions == ()  # the account is as wanted; only its ledger entry learns the UserId
    run_plan(result, seen, StateDir(str(tmp_path)), Appliers(FakeAccounts(on_apply=pytest.fail), FakeSudo()))
    assert files(tmp_path)["ledger.json"]["accounts"]["ann"]["identities"] == ["id-ann"]
    assert files(tmp_path)["sudoers.json"] is None


# --- the observation ---------------------------------------------------------------------------------

def _host_tree(tmp_path, sudo):
    etc, state, sudoers = tmp_path / "etc", tmp_path / "state", tmp_path / "sudoers.d"
    for d in (etc, state, sudoers):
        d.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nann:x:5000:5000:runas-agent Ann (ann):/home/ann:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\nann:x:5000:\nadm:x:4:ann\n")
    (etc / "login.defs").write_text("UID_MIN 500\n")
    (etc / "os-release").write_text('ID="rocky"\nID_LIKE="rhel centos fedora"\n')
    (state / "ledger.json").write_text(json.dumps(Ledger({"ann": Owned("ann", 5000, 5000, "person", ("id-ann",))}).to_dict()))
    ann = s.file_name("ann")
    if sudo:
        (state / "sudoers.json").write_text(json.dumps(SudoLedger({"ann": ann}).to_dict()))
    for name, text in ((ann, s.render("ann", [OPS])), (s.SSM_USER_FILE, "ssm-user ALL=(ALL) NOPASSWD:ALL\n"),
                       ("admins", "%admins ALL=(ALL) ALL\n"), (".runas-agent-x.tmp", "junk")):
        (sudoers / name).write_text(text)
    data = {"source": {"type": "file", "path": str(tmp_path / "directory.json")},
            "run_as": {"expression": "${path:userName}"}, "state_dir": str(state),
            "sudo": {"sudoers_dir": str(sudoers)}}
    return config.validate(data), str(etc)


def test_observe_reads_everything_a_plan_needs_once(tmp_path):
    cfg, etc = _host_tree(tmp_path, sudo=True)
    seen = observe(cfg, etc)
    assert set(seen.host.users) == {"root", "ann"} and seen.host.groups["adm"].members == ("ann",)
    assert seen.host.uid_min == 500 and seen.os_release["ID"] == "rocky"
    assert set(seen.ledger.accounts) == {"ann"} and seen.sudo_ledger.files == {"ann": s.file_name("ann")}
    # the agent's drop-ins and ssm-user's; never an admin's file or a temp file
    assert set(seen.drop_ins) == {s.file_name("ann"), s.SSM_USER_FILE}
    assert seen.drop_ins[s.file_name("ann")].marked
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen.ledger = Ledger()


def test_observe_leaves_the_sudoers_directory_alone_while_sudo_is_not_in_use(tmp_path):
    cfg, etc = _host_tree(tmp_path, sudo=False)
    assert observe(cfg, etc).drop_ins == {}
    cfg = dataclasses.replace(cfg, sudo=dataclasses.replace(cfg.sudo, remove_ssm_user_blanket=True))
    assert s.SSM_USER_FILE in observe(cfg, etc).drop_ins


def test_a_plan_from_the_observed_tree_disables_the_account_and_removes_its_rights(tmp_path):
    cfg, etc = _host_tree(tmp_path, sudo=True)
    result = plan_for([], observe(cfg, etc), force=True)
    assert [type(a).__name__ for a in result.actions] == ["DisableAccount", "RemoveSudoers"]
    assert isinstance(result.actions[0], DisableAccount) and result.actions[1].file == s.file_name("ann")
