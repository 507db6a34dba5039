"""What the sync admits (sources/admission.py): fields the Identity Store always returns, rollback and
change of store against the last applied snapshot, people whose records are malformed."""

from __future__ import annotations

import json

import pytest

from runas_agent import config
from runas_agent.core.ledger import Ledger, Owned
from runas_agent.core.plan import DisableAccount, Plan
from runas_agent.directory import canonical, parse_document
from runas_agent.errors import SnapshotError
from runas_agent.sources import admission
from tests.unit.test_document_trust import ALICE, BOB, DAVE, doc, user


def cfg(expression="${path:userName}"):
    return config.validate({"source": {"type": "file", "path": "/srv/d.json"}, "run_as": {"expression": expression}})


@pytest.mark.parametrize("users, expression, message", [
    ([{k: v for k, v in r.items() if k != "UserStatus"} for r in (ALICE, BOB)], "${path:userName}",
     "none of the 2 users carries UserStatus"),
    ([{k: v for k, v in r.items() if k != "Extensions"} for r in (ALICE, BOB)], "${path:enterprise.organization}",
     "run_as.expression reads enterprise.organization, but none of the 2 users carries the enterprise extension"),
    ([{k: v for k, v in r.items() if k != "Extensions"} for r in (ALICE, BOB)], "${path:userName}", None),
    ([{k: v for k, v in ALICE.items() if k != "Extensions"}, BOB], "${path:enterprise.organization}", None),
    ([ALICE, {k: v for k, v in BOB.items() if k != "UserStatus"}], "${path:userName}", None),
    ([], "${path:enterprise.organization}", None),
])
def test_a_read_without_what_the_identity_store_always_returns_is_refused(users, expression, message):
    directory = parse_document(doc(*users))
    found = admission.dropped_fields(directory, expression, "Identity Store d-1234567890")
    if message is None:
        assert found is None
    else:
        assert found.startswith(f"Identity Store d-1234567890: {message}") and "Nothing was changed" in found


def write(path, document):
    path.write_bytes(canonical(document))
    return str(path)


def test_rollback_and_change_of_store(tmp_path):
    last = write(tmp_path / "directory.json", doc(ALICE, GeneratedAt="2025-06-01T12:00:00Z"))
    older = parse_document(doc(ALICE, GeneratedAt="2025-06-01T11:59:59Z"))
    assert admission.admit(cfg(), older, last, "s3").refusals == (
        "the snapshot was generated at 2025-06-01T11:59:59Z, before the last one applied (2025-06-01T12:00:00Z): an older "
        "snapshot (replayed, or restored from a backup) is never applied over a newer one",)
    same = parse_document(doc(BOB, GeneratedAt="2025-06-01T12:00:00Z"))
    assert admission.admit(cfg(), same, last, "s3").refusals == ()
    other = parse_document({**doc(), "IdentityStoreId": "d-0000000000", "GeneratedAt": "2025-06-02T00:00:00Z"})
    (refusal,) = admission.admit(cfg(), other, last, "s3").refusals
    assert refusal.startswith("the directory is of Identity Store d-0000000000, the last one applied was of d-1234567890")
    assert admission.admit(cfg(), older, str(tmp_path / "none.json"), "s3").refusals == ()


def test_a_snapshot_of_exactly_this_read_is_not_parsed_again(tmp_path):
    current = parse_document(doc(ALICE, dict(BOB, UserStatus="WEIRD"), GeneratedAt="2025-06-01T12:00:00Z"))
    same = write(tmp_path / "directory.json", current.document)
    assert admission.last_applied(same, current) == (current, [])
    assert admission.last_applied(same, current)[0] is current
    admitted = admission.admit(cfg(), current, same, "file")
    assert (admitted.directory, admitted.refusals, admitted.warnings) == (current, (), ())
    assert admitted.held == frozenset({BOB["UserId"]})
    other = write(tmp_path / "other.json", doc(ALICE, GeneratedAt="2025-06-01T12:00:00Z"))
    previous, _ = admission.last_applied(other, current)
    assert previous is not current and [u.user_name for u in previous.users] == ["alice"]


def test_a_damaged_last_snapshot_is_said_not_fatal(tmp_path):
    path = tmp_path / "directory.json"
    path.write_text("{")
    admitted = admission.admit(cfg(), parse_document(doc(ALICE)), str(path), "file")
    assert admitted.refusals == () and "is damaged" in admitted.warnings[0]


def test_a_held_person_is_carried_over_as_they_were(tmp_path):
    last = write(tmp_path / "directory.json", doc(ALICE, BOB, DAVE))
    current = parse_document(doc(dict(ALICE, UserStatus="WEIRD", UserName="alice-renamed"), BOB))
    admitted = admission.admit(cfg(), current, last, "file")
    assert sorted(u.user_name for u in admitted.directory.users) == ["alice", "bob"]  # dave is really gone
    assert admitted.directory.problems == current.problems and admitted.held == frozenset()
    assert admitted.warnings == ("kept as in the last applied snapshot: alice (their records in this read are malformed)",)
    assert "Signature" not in admitted.directory.document
    assert json.loads(admitted.directory.canonical_bytes())["Users"][1]["UserName"] == "alice"


def test_an_untied_record_carries_everyone_missing(tmp_path):
    last = write(tmp_path / "directory.json", doc(ALICE, BOB, DAVE))
    current = parse_document(doc(None, BOB, user(4, "erin")))
    admitted = admission.admit(cfg(), current, last, "file")
    assert sorted(u.user_name for u in admitted.directory.users) == ["alice", "bob", "dave", "erin"]
    assert admitted.warnings == ("kept as in the last applied snapshot: alice, dave (this read holds 1 user record(s) "
                                 "that name no UserId)",)


def test_nothing_is_carried_under_a_name_now_taken_or_from_another_store(tmp_path):
    last = write(tmp_path / "directory.json", doc(ALICE, BOB))
    current = parse_document(doc(dict(ALICE, UserStatus="X"), user(9, "alice")))
    admitted = admission.admit(cfg(), current, last, "file")
    assert [u.user_id for u in admitted.directory.users] == ["u9"] and admitted.held == {"u1"}
    other = {**doc(dict(user(1, "alice", org="iret"), UserStatus="X")), "IdentityStoreId": "d-0000000000"}
    other["Users"][0]["IdentityStoreId"] = "d-0000000000"
    admitted = admission.admit(cfg(), parse_document(other), last, "file")
    assert admitted.directory.users == () and admitted.held == {"u1"}


def _plan_disabling(*names):
    return Plan(actions=tuple(DisableAccount(n, 1_000_000_000 + i, f"runas-off-{i}", "gone") for i, n in enumerate(names)))


def test_a_disable_of_a_held_person_is_refused_unless_forced(tmp_path):
    current = parse_document(doc(dict(ALICE, UserStatus="WEIRD"), BOB))
    admitted = admission.admit(cfg(), current, str(tmp_path / "none.json"), "file")
    assert admitted.held == {"u1"}
    ledger = Ledger({"alice": Owned("alice", 1_000_000_000, 1_000_000_000, "person", ("u1",)),
                     "dave": Owned("dave", 1_000_000_001, 1_000_000_001, "person", ("u3",))})
    plan = _plan_disabling("alice", "dave")
    plan = admitted.judge(plan, ledger, force=False)
    assert list(plan.refusals) == ["the plan would disable alice, but the record of u1 is malformed or missing beside a record "
                             "that names no UserId, and there is no earlier record to keep it as it was"]
    forced = _plan_disabling("alice")
    forced = admitted.judge(forced, ledger, force=True)
    assert forced.refusals == () and forced.warnings[0].startswith("--force overrides: the plan would disable alice")


def test_an_untied_record_without_a_last_snapshot_refuses_disabling_anyone_missing(tmp_path):
    """Nothing to carry over: the accounts of everyone missing from the read are held by the guard."""
    current = parse_document(doc(None, BOB))
    admitted = admission.admit(cfg(), current, str(tmp_path / "none.json"), "file")
    assert admitted.untied and [u.user_name for u in admitted.directory.users] == ["bob"]
    ledger = Ledger({"alice": Owned("alice", 1_000_000_000, 1_000_000_000, "person", ("u1",)),
                     "bob": Owned("bob", 1_000_000_001, 1_000_000_001, "person", ("u2",))})
    plan = _plan_disabling("alice", "bob")  # bob's (present) is not the guard's business
    plan = admitted.judge(plan, ledger, force=False)
    assert len(plan.refusals) == 1 and plan.refusals[0].startswith("the plan would disable alice, but the record of u1")


def test_a_malformed_document_in_the_state_directory_never_carries(tmp_path):
    last = tmp_path / "directory.json"
    last.write_text(json.dumps(doc(ALICE, ALICE)))
    with pytest.raises(SnapshotError):
        parse_document(json.loads(last.read_text()))
    admitted = admission.admit(cfg(), parse_document(doc(dict(ALICE, UserStatus="X"))), str(last), "file")
    assert admitted.directory.users == () and admitted.held == {"u1"} and "is damaged" in admitted.warnings[0]
