"""The account plan's state table: one handler per state of an account name, each tested on its own
with the decision it must make, and the tables checked complete (a new state or action cannot be
forgotten in the planner, the apply order or the applier)."""

import inspect
from dataclasses import replace
from typing import get_args

import pytest

from runas_agent.core import plan as p
from runas_agent.core.action import Action, Outcome
from runas_agent.core.desired import DesiredAccount, Identity
from runas_agent.core.ledger import Owned
from runas_agent.core.observed import HostGroup, HostState, HostUser
from runas_agent.host.apply import Applier
from runas_agent.host.engine import EngineApplier

S = p.PlanSettings(uid_min=2000, uid_max=2_000_000)
ANN = DesiredAccount("ann", "person", "user:u1", (Identity("u1", "ann@x"),), "runas-agent Ann (ann@x)",
                     frozenset({"adm"}))
OWNED = Owned("ann", 5000, 5000, "person", ("u1",), ())
ACTIVE = HostUser("ann", 5000, 5000, "runas-agent Ann (ann@x)", "/home/ann", "/bin/bash")
PARKED = HostUser("runas-off-5000", 5000, 5000, "runas-agent Ann (ann@x)", "/home/ann", "/usr/sbin/nologin")
HAND = HostUser("ann", 5000, 5000, "taken over", "/home/ann", "/bin/bash")
ADM = HostGroup("adm", 4, ())


def ctx(users=(), groups=(ADM,), status=None, taken=lambda uid: False):
    host = HostState.build(list(users), list(groups))
    return p.Context(host, S, status or {}, taken)


def kinds(decision):
    return [type(a).__name__ for a in decision.actions]


# --- the state of an owned account -------------------------------------------------------------------

@pytest.mark.parametrize("users,state", [
    ([ACTIVE], p.ACTIVE),
    ([PARKED], p.DISABLED),
    ([], p.MISSING),
    ([HAND], p.CHANGED),                                                      # marker gone
    ([replace(ACTIVE, uid=5001)], p.MISSING),                                 # the name is someone else's now...
    ([replace(ACTIVE, name="renamed")], p.CHANGED),                           # ...or its UID is
    ([replace(PARKED, comment="x")], p.CHANGED),
])
def test_owned_state(users, state):
    assert p.owned_state(OWNED, HostState.build(users, []))[0] == state


# --- wanted: one handler per state -------------------------------------------------------------------

@pytest.mark.parametrize("state,owned,user,hosts,expect", [
    # state, ledger entry, host user, other host users, (actions, skip contains, warning contains)
    (p.NEW, None, None, [], (["CreateAccount"], None, None)),
    (p.NEW, None, None, [HostUser("ann", 1001, 1001, "", "/h", "/bin/sh")], ([], "not managed by runas-agent", None)),
    (p.MISSING, OWNED, None, [], (["CreateAccount"], None, "creating it with uid 5000")),
    (p.MISSING, OWNED, None, [HostUser("x", 5000, 7, "", "/", "/bin/sh")], ([], "UID 5000 is now taken", None)),
    (p.DISABLED, OWNED, PARKED, [PARKED], (["EnableAccount"], None, None)),
    (p.DISABLED, OWNED, PARKED, [PARKED, HostUser("ann", 1001, 1001, "", "/h", "/bin/sh")],
     ([], "cannot re-enable", None)),
    (p.ACTIVE, OWNED, ACTIVE, [ACTIVE], ([], None, None)),
    (p.ACTIVE, OWNED, replace(ACTIVE, shell="/bin/sh"), [replace(ACTIVE, shell="/bin/sh")], (["UpdateAccount"], None, None)),
    (p.CHANGED, OWNED, HAND, [HAND], ([], "changed by hand", None)),
])
def test_wanted_handlers(state, owned, user, hosts, expect):
    actions, skip, warning = expect
    decision = p.WANTED[state](ctx(hosts), p.Case("ann", ANN, owned, user))
    assert kinds(decision) == actions
    assert (decision.skip is None) == (skip is None) and (skip is None or skip in decision.skip)
    assert any(warning in w for w in decision.warnings) if warning else not decision.warnings
    if skip is None:
        assert decision.entry is not None and decision.entry.identities == ("u1",)
        assert decision.entry.groups_added == ("adm",)  # the policy's group, recorded as the agent's
        assert decision.joins == ("adm",)
    else:
        assert decision.entry is None and not decision.joins  # a skipped account's ledger entry is left as it is


@pytest.mark.parametrize("state,user,group,expect", [
    # an interrupted create left the primary group (written before the user): finished, not a conflict
    (p.MISSING, None, HostGroup("ann", 5000, ()), (["CreateAccount"], None, "finishing ann")),
    (p.MISSING, None, HostGroup("ann", 5000, ("eve",)), ([], "name is now taken", None)),   # members: not a leftover
    (p.MISSING, None, HostGroup("ann", 4999, ()), ([], "name is now taken", None)),         # another GID: someone else's
    # an interrupted re-enable renamed the group back before the user: finished
    (p.DISABLED, PARKED, HostGroup("ann", 5000, ()), (["EnableAccount"], None, None)),
    (p.DISABLED, PARKED, HostGroup("ann", 4999, ()), ([], "cannot re-enable", None)),
])
def test_the_agents_own_half_done_states_are_finished(state, user, group, expect):
    actions, skip, warning = expect
    users = [user] if user else []
    decision = p.WANTED[state](ctx(users, (ADM, group)), p.Case("ann", ANN, OWNED, user))
    assert kinds(decision) == actions
    assert (decision.skip is None) == (skip is None) and (skip is None or skip in decision.skip)
    assert any(warning in w for w in decision.warnings) if warning else True


def test_a_new_account_takes_the_first_free_probe_and_says_which_uid():
    first = p.WANTED[p.NEW](ctx(), p.Case("ann", ANN, None, None))
    second = p.WANTED[p.NEW](ctx(taken=lambda uid: uid == first.uid), p.Case("ann", ANN, None, None))
    assert first.uid == first.actions[0].uid and second.uid != first.uid and second.actions[0].uid_probe == 1
    assert p.WANTED[p.NEW](ctx(taken=lambda uid: True), p.Case("ann", ANN, None, None)).skip == \
        "no free UID in accounts.uid_min..uid_max"


# --- no longer wanted ---------------------------------------------------------------------------------

@pytest.mark.parametrize("state,user,status,expect", [
    (p.ACTIVE, ACTIVE, {"u1": False}, (["DisableAccount"], "its identity is disabled in the directory")),
    (p.ACTIVE, ACTIVE, {}, (["DisableAccount"], "its identity was removed from the directory")),
    (p.ACTIVE, ACTIVE, {"u1": True}, (["DisableAccount"], "no enabled, in-scope identity maps to it any more")),
    (p.MISSING, None, {}, (["ForgetAccount"], None)),
    (p.CHANGED, HAND, {}, ([], None)),
    (p.DISABLED, PARKED, {}, ([], None)),
])
def test_leaving_handlers(state, user, status, expect):
    actions, reason = expect
    owned = replace(OWNED, groups_added=("adm",))
    adm = HostGroup("adm", 4, ("ann",))
    decision = p.LEAVING[state](ctx([user] if user else [], (adm,), status), p.Case("ann", None, owned, user))
    assert kinds(decision) == actions
    if reason:
        assert decision.actions[0].reason == reason
        assert decision.leaves == ("adm",) and decision.entry.groups_added == ()  # out of the agent's groups first
    assert decision.forget == (state == p.MISSING)
    assert bool(decision.warnings) == (state == p.CHANGED)


# --- the tables are complete ---------------------------------------------------------------------------

def _account_actions():
    return {c for _, c in inspect.getmembers(p, inspect.isclass)
            if issubclass(c, Action) and c is not Action and c.__module__ == p.__name__}


def test_every_state_has_a_handler():
    states = set(get_args(p.State))
    assert set(p.WANTED) == states
    assert set(p.LEAVING) == states - {p.NEW}


def test_every_account_action_has_a_place_in_the_order_and_a_handler_in_each_applier():
    actions = _account_actions()
    assert actions and set(p.ORDER) == actions
    assert set(EngineApplier(run=lambda *a, **k: None).handlers) == actions
    assert set(Applier(run=lambda *a, **k: None).handlers) == actions


def test_blocked_accounts_are_those_whose_account_could_not_be_made():
    create = p.CreateAccount("ann", 5000, 5000, "/home/ann", "/bin/bash", "c", "person", ("ann@x",))
    outcome = Outcome(failed=[(create, "x"), (p.UpdateAccount("bob", {}), "y"),
                              (p.EnableAccount("cid", 5001, "runas-off-5001", "/bin/bash", "c"), "z")])
    assert p.blocked_accounts(outcome) == {"ann", "cid"}
