"""Fingerprints and the remembered no-op plan: any change of any part of the inputs changes the
fingerprint; equal inputs built in another order of sets or another process give the same one; a
value of an unknown type gives none."""

from __future__ import annotations

import dataclasses
import os
import sys
import unicodedata

import pytest
from hypothesis import given, strategies as st

from runas_agent.core import memo
from runas_agent.core.desired import Skip
from runas_agent.core.fingerprint import fingerprint
from runas_agent.core.ledger import Ledger, Owned
from runas_agent.core.observed import HostGroup, HostState, HostUser, Observation, ShellOnHost
from runas_agent.core.sudoers import SudoLedger
from runas_agent.core.sync import SyncPlan
from runas_agent.directory import Problem, make_document, parse_document

def observation(n=3, **host_changes) -> Observation:
    users = [HostUser(f"u{i}@example.com", 1_000_000_000 + i, 1_000_000_000 + i, f"runas-agent U{i}", f"/home/u{i}@example.com",
                      "/bin/bash") for i in range(n)]
    groups = [HostGroup(u.name, u.uid, ()) for u in users] + [HostGroup("adm", 4, ("u0@example.com",))]
    host = dataclasses.replace(HostState.build(users, groups), homes={u.home: u.uid for u in users},
                               busy_uids=frozenset({0, 1_000_000_001}), sysusers={"postgres": "/usr/lib/sysusers.d/pg.conf"})
    host = dataclasses.replace(host, **host_changes)
    ledger = Ledger({u.name: Owned(u.name, u.uid, u.gid, "person", (f"id-{i}",), ("adm",) if i == 0 else ())
                     for i, u in enumerate(users)})
    return Observation(host=host, os_release={"ID": "debian"}, ledger=ledger, sudo_ledger=SudoLedger(),
                       shell=ShellOnHost("/bin/bash", True, True, frozenset({"/bin/sh", "/bin/bash"})))


BASE = fingerprint(observation())


def _replace_user(obs: Observation, who: str, **changes) -> Observation:
    users = dict(obs.host.users)
    users[who] = dataclasses.replace(users[who], **changes)
    return dataclasses.replace(obs, host=dataclasses.replace(obs.host, users=users))


@pytest.mark.parametrize("field, value", [("uid", 7), ("gid", 7), ("comment", "x"), ("home", "/home/x"),
                                          ("shell", "/usr/sbin/nologin"), ("name", "other")])
def test_every_field_of_an_account_counts(field, value):
    assert fingerprint(_replace_user(observation(), "u1@example.com", **{field: value})) != BASE


@pytest.mark.parametrize("change", [
    lambda o: dataclasses.replace(o, host=dataclasses.replace(o.host, busy_uids=frozenset({0}))),
    lambda o: dataclasses.replace(o, host=dataclasses.replace(o.host, homes={**o.host.homes, "/home/x": -1})),
    lambda o: dataclasses.replace(o, host=dataclasses.replace(o.host, sudoers={"ghost": "/etc/sudoers"})),
    lambda o: dataclasses.replace(o, host=dataclasses.replace(o.host, uid_min=500)),
    lambda o: dataclasses.replace(o, ledger=o.ledger.without("u2@example.com")),
    lambda o: dataclasses.replace(o, ledger=o.ledger.with_account(
        dataclasses.replace(o.ledger.accounts["u1@example.com"], groups_added=("adm",)))),
    lambda o: dataclasses.replace(o, ledger=o.ledger.with_account(
        dataclasses.replace(o.ledger.accounts["u1@example.com"], identities=("id-9",)))),
    lambda o: dataclasses.replace(o, os_release={"ID": "amzn"}),
    lambda o: dataclasses.replace(o, shell=ShellOnHost("/bin/bash", True, True, frozenset({"/bin/sh"}))),
    lambda o: dataclasses.replace(o, shell=None),
    lambda o: dataclasses.replace(o, sudo_ledger=SudoLedger({"alice": "runas-agent-alice"})),
])
def test_every_part_of_the_observation_counts(change):
    assert fingerprint(change(observation())) != BASE


def test_a_member_list_counts():
    obs = observation()
    groups = {**obs.host.groups, "adm": HostGroup("adm", 4, ("u0@example.com", "u1@example.com"))}
    assert fingerprint(dataclasses.replace(obs, host=dataclasses.replace(obs.host, groups=groups))) != BASE


@given(st.lists(st.text(max_size=6), max_size=8), st.lists(st.text(max_size=6), max_size=8))
def test_values_are_told_apart_and_sets_are_compared_as_sets(a, b):
    assert (fingerprint(a) == fingerprint(b)) == (a == b)
    assert (fingerprint(frozenset(a)) == fingerprint(frozenset(reversed(b)))) == (set(a) == set(b))
    assert fingerprint({"k": a}) != fingerprint({"k": tuple(a) + ("",)})


@pytest.mark.parametrize("a, b", [(1, True), (1, 1.0), ("1", 1), (None, "None"), ((), []), ({}, ()), ((1, 2), ((1, 2),))])
def test_values_of_different_types_differ(a, b):
    assert fingerprint(a) != fingerprint(b) or (a, b) == ((), [])  # a list reads as the tuple it holds


def test_an_unknown_type_gives_no_fingerprint():
    with pytest.raises(TypeError, match="cannot fingerprint"):
        fingerprint({"x": object()})
    assert memo.key("code", object(), DIRECTORY, observation(), False) is None


DIRECTORY = parse_document(make_document("d-1234567890", [
    {"UserId": "id-a", "UserName": "a", "UserStatus": "ENABLED", "DisplayName": "A"}], [], []))


def test_a_directory_counts_by_its_problems_too():
    """A read whose malformed record was replaced by the earlier one (sources/admission.py) holds the
    document of the read before the record broke, but not its problems."""
    held = dataclasses.replace(DIRECTORY, problems=(Problem("user id-b", "UserName is a number", user_id="id-b"),))
    assert held.digest() == DIRECTORY.digest()
    assert memo.key("code", {}, held, observation(), False) != memo.key("code", {}, DIRECTORY, observation(), False)


# --- the remembered plan ----------------------------------------------------------------------------

NOTHING = SyncPlan(skips=(Skip("bob (id-b)", "bob", "reserved"),), warnings=("look at this",),
                   ledger=observation().ledger, managed_active=3, sudo_ledger=SudoLedger())


def test_a_plan_with_nothing_to_do_is_remembered_and_recalled_as_it_was():
    obs = observation()
    kept = memo.remember("k", NOTHING, obs)
    assert memo.recall(kept, "k", obs) == NOTHING
    assert memo.recall(kept, "other", obs) is None


@pytest.mark.parametrize("plan", [
    dataclasses.replace(NOTHING, refusals=("too many disables",)),
    dataclasses.replace(NOTHING, ledger=Ledger()),
    dataclasses.replace(NOTHING, sudo_ledger=SudoLedger({"a": "runas-agent-a"})),
])
def test_a_plan_that_does_or_refuses_something_is_not_remembered(plan):
    assert memo.remember("k", plan, observation()) is None


@pytest.mark.parametrize("damage", [None, [], {"version": 2}, {"key": "k"},
                                    lambda d: {**d, "skips": [["a", None]]}, lambda d: {**d, "warnings": [1]},
                                    lambda d: {**d, "managed_active": True}, lambda d: {**d, "skips": "x"}])
def test_a_damaged_memo_is_only_a_reason_to_plan(damage):
    kept = memo.remember("k", NOTHING, observation())
    data = damage(kept) if callable(damage) else damage
    assert memo.recall(data, "k", observation()) is None


# --- the code stamp ---------------------------------------------------------------------------------

def test_the_code_stamp_changes_with_a_module_rewritten_in_place(tmp_path):
    from runas_agent.sync import stamp_of
    module = tmp_path / "plan.py"
    module.write_text("LIMIT = 3\n")
    st = module.stat()
    before = stamp_of(str(tmp_path))
    module.write_text("LIMIT = 9\n")  # the same size; the modification time put back, as a package may
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert stamp_of(str(tmp_path)) != before


def test_the_code_stamp_changes_with_the_interpreter(tmp_path, monkeypatch):
    """Which characters str.isalnum() takes (so which Run As names are legal, core/naming.py) is the
    interpreter's Unicode data: a host whose Python is upgraded under the same agent plans afresh."""
    from runas_agent.sync import stamp_of
    (tmp_path / "plan.py").write_text("")
    before = stamp_of(str(tmp_path))
    monkeypatch.setattr(unicodedata, "unidata_version", "99.0.0")
    assert stamp_of(str(tmp_path)) != before
    monkeypatch.undo()
    monkeypatch.setattr(sys, "version", "3.99.0")
    assert stamp_of(str(tmp_path)) != before


def test_equal_values_give_one_fingerprint_whatever_objects_hold_them():
    """Equal inputs give one fingerprint however they were built: one string object in two places
    or two equal ones, interned or not (a marshal dump of format 3 or later marks objects it meets
    twice and interned strings)."""
    name = "".join(["p1@", "example.com"])
    shared = {"p1@example.com": HostUser(name, 1, 1, name, "/home/x", "/bin/bash"),
              "p2@example.com": HostUser("p2@example.com", 2, 2, "", "/home/y", "/bin/bash")}
    separate = {"p1@example.com": HostUser("".join(["p1@", "example.com"]), 1, 1, "".join(["p1@", "example.com"]),
                                           "/home/x", "/bin/bash"),
                "p2@example.com": HostUser("p2@example.com", 2, 2, "", "/home/y", "/bin/bash")}
    assert shared == separate and fingerprint(shared) == fingerprint(separate)
    assert fingerprint({"k": name, "v": name}) == fingerprint({"k": "".join(["p1@", "example.com"]), "v": name})
    assert fingerprint({"k": sys.intern("adm-group-name")}) == fingerprint({"k": "".join(["adm-", "group-name"])})
