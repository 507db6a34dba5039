"""Session attribution against a stand-in of the SSM agent that runs sessions as the real one does
(tests/hosts/ssm_agent.py, ssm_worker.py), with records read back from a real journald (see
tests/hosts/ssm_stage.py)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time

import pytest

from runas_agent.sessions.model import MESSAGE_ID_END, MESSAGE_ID_START
from tests.hosts.ssm import JOURNALD, SsmStage, owner_arn, session_id

pytestmark = pytest.mark.host

ACME_UID = 1_500_000_001
CAROL_UID = 1_500_000_002

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"


def user(name, user_id, display, org=None, status="ENABLED"):
    record = {"UserId": user_id, "UserName": name, "DisplayName": display, "UserStatus": status,
              "Emails": [{"Value": name, "Type": "work", "Primary": True}]}
    if org:
        record["Extensions"] = {"aws:identitystore:enterprise": {"organization": org}}
    return record


def directory(disabled=()):
    users = [
        user(ALICE, "9067a1b2c3-aaaaaaaa-1111-2222-3333-444444444444", "Alice Example", "acme"),
        user(BOB, "9067a1b2c3-bbbbbbbb-1111-2222-3333-444444444444", "Bob Builder", "acme"),
        user(CAROL, "9067a1b2c3-cccccccc-1111-2222-3333-444444444444", "Carol Own", None),
    ]
    for u in users:
        if u["UserName"] in disabled:
            u["UserStatus"] = "DISABLED"
    return {"IdentityStoreId": "d-1234567890", "Users": users,
            "Groups": [{"GroupId": "g-ops", "DisplayName": "acme-ops"}],
            "GroupMemberships": [{"GroupId": "g-ops", "MemberId": {"UserId": users[0]["UserId"]}}]}


def need_journald():
    if not os.path.exists(JOURNALD) or not shutil.which("setpriv"):
        if os.environ.get("CI"):
            pytest.fail(f"session tests need {JOURNALD} and setpriv")
        pytest.skip(f"session tests need {JOURNALD} and setpriv")


@pytest.fixture
def stage(isolated_host):
    need_journald()
    s = SsmStage(isolated_host)
    try:
        s.call("journald")
        s.call("install", state_root=str(s.deb_root))
        s.call("install", state_root=str(s.second_root), instance="mi-0123456789abcdef0")
        s.call("useradd", name="acme", uid=ACME_UID)
        s.call("useradd", name=CAROL, uid=CAROL_UID)
        s.write_snapshot(directory())
        s.config = s.write_config()
        yield s
    finally:
        s.close()


def settle(stage, seconds=3.5):
    """Let the workers of ended sessions finish their last 3 s, looking all the while."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stage.call("poll", wait=0.2)


def one(records, **expect):
    assert len(records) == 1, f"expected one record, got {len(records)}: {records}"
    rec = records[0]
    for key, value in expect.items():
        assert rec.get(key) == str(value), f"{key}: {rec.get(key)!r} != {value!r}"
    return rec


def test_per_person_and_shared_accounts(stage):
    stage.call("watcher", config=str(stage.config))
    stage.call("poll")
    carol_sid, alice_sid = session_id(CAROL, 1), session_id(ALICE, 2)
    carol = stage.call("start", sid=carol_sid, owner=owner_arn(CAROL), run_as=CAROL, state_root=str(stage.deb_root))
    alice = stage.call("start", sid=alice_sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.second_root))
    stage.call("poll")

    rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=carol_sid, MESSAGE_ID=MESSAGE_ID_START),
              RUNAS_IDENTITY_USER=CAROL, RUNAS_IDENTITY_ID="9067a1b2c3-cccccccc-1111-2222-3333-444444444444",
              RUNAS_DISPLAY_NAME="Carol Own", RUNAS_ACCOUNT=CAROL, RUNAS_ACCOUNT_UID=CAROL_UID,
              RUNAS_WORKER_PID=carol["worker_pid"], RUNAS_SHELL_PID=carol["shell_pid"],
              RUNAS_OWNER_ARN=owner_arn(CAROL), RUNAS_PERMISSION_SET="VendorAccess", RUNAS_EVENT="start")
    assert "RUNAS_UNRESOLVED_REASON" not in rec and "RUNAS_ORGANIZATION" not in rec
    one(stage.wait_journal(1, RUNAS_SESSION_ID=alice_sid, MESSAGE_ID=MESSAGE_ID_START),
        RUNAS_IDENTITY_USER=ALICE, RUNAS_ORGANIZATION="acme", RUNAS_DISPLAY_NAME="Alice Example",
        RUNAS_ACCOUNT="acme", RUNAS_ACCOUNT_UID=ACME_UID, RUNAS_GROUP="acme-ops",
        RUNAS_WORKER_PID=alice["worker_pid"], RUNAS_SHELL_PID=alice["shell_pid"])

    # `runas-agent sessions` shows both, with the person behind each.
    out = stage.call("agent", args=["-c", str(stage.config), "sessions", "--json"])
    assert out["rc"] == 0, out["stderr"]
    rows = {r["session_id"]: r for r in json.loads(out["stdout"])["sessions"]}
    assert set(rows) == {carol_sid, alice_sid}
    assert rows[alice_sid]["identity_user"] == ALICE and rows[alice_sid]["account"] == "acme"
    assert rows[alice_sid]["account_uid"] == ACME_UID and rows[alice_sid]["organization"] == "acme"
    assert rows[carol_sid]["shell_pid"] == carol["shell_pid"]
    table = stage.call("agent", args=["-c", str(stage.config), "sessions"])["stdout"]
    assert "Alice Example <alice@example.com>" in table and f"acme({ACME_UID})" in table

    # Carol types exit: the agent rewrites the state file in place, then deletes it; the end follows.
    stage.call("end", sid=carol_sid)
    stage.call("poll")
    end = one(stage.wait_journal(1, RUNAS_SESSION_ID=carol_sid, MESSAGE_ID=MESSAGE_ID_END),
              RUNAS_IDENTITY_USER=CAROL, RUNAS_ACCOUNT=CAROL, RUNAS_EVENT="end")
    assert int(end["RUNAS_DURATION_SEC"]) >= 0
    settle(stage)
    assert len(stage.journal(RUNAS_SESSION_ID=carol_sid)) == 2, "one start and one end, nothing more"
    # Alice's session goes on: no end record for it.
    assert stage.journal(RUNAS_SESSION_ID=alice_sid, MESSAGE_ID=MESSAGE_ID_END) == []
    # Every session a person ran, whichever account, is one journalctl query away.
    assert len(stage.journal(RUNAS_IDENTITY_USER=ALICE)) == 1


def test_two_people_on_one_shared_account(stage):
    stage.call("watcher", config=str(stage.config))
    a, b = session_id(ALICE, 10), session_id(BOB, 11)
    pa = stage.call("start", sid=a, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root))
    pb = stage.call("start", sid=b, owner=owner_arn(BOB), run_as="acme", state_root=str(stage.deb_root))
    stage.call("poll")
    starts = stage.wait_journal(2, RUNAS_ACCOUNT="acme", MESSAGE_ID=MESSAGE_ID_START)
    by_sid = {r["RUNAS_SESSION_ID"]: r for r in starts}
    assert len(starts) == 2 and set(by_sid) == {a, b}
    assert by_sid[a]["RUNAS_IDENTITY_USER"] == ALICE and by_sid[a]["RUNAS_SHELL_PID"] == str(pa["shell_pid"])
    assert by_sid[b]["RUNAS_IDENTITY_USER"] == BOB and by_sid[b]["RUNAS_SHELL_PID"] == str(pb["shell_pid"])
    assert by_sid[a]["RUNAS_ACCOUNT_UID"] == by_sid[b]["RUNAS_ACCOUNT_UID"] == str(ACME_UID)
    stage.call("end", sid=b)
    stage.call("poll")
    one(stage.wait_journal(1, MESSAGE_ID=MESSAGE_ID_END), RUNAS_SESSION_ID=b, RUNAS_IDENTITY_USER=BOB)
    live = {s["session_id"]: s for s in stage.call("sessions")["sessions"]}
    assert set(live) == {a} and live[a]["identity"]["user_name"] == ALICE


def test_unknown_and_hostile_owners_are_recorded_with_the_reason(stage):
    stage.call("watcher", config=str(stage.config), shell_grace=0.5)
    unknown, iam, garbage = session_id("mallory", 20), session_id("iamuser", 21), session_id("x", 22)
    stage.call("start", sid=unknown, owner=owner_arn("mallory@example.com"), run_as="acme",
               state_root=str(stage.deb_root))
    stage.call("start", sid=iam, owner=f"arn:aws:iam::123456789012:user/deploy", run_as="acme",
               state_root=str(stage.deb_root))
    stage.call("start", sid=garbage, owner="", run_as="acme", state_root=str(stage.deb_root),
               document={"DocumentInformation": {"SessionOwner": 12, "RunAsUser": "acme\x1b[2J" + "A" * 5000}})
    stage.call("poll")
    rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=unknown), RUNAS_IDENTITY_USER="mallory@example.com",
              RUNAS_ACCOUNT="acme", RUNAS_ACCOUNT_UID=ACME_UID, MESSAGE_ID=MESSAGE_ID_START)
    assert "not in the directory snapshot" in rec["RUNAS_UNRESOLVED_REASON"] and "RUNAS_IDENTITY_ID" not in rec
    rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=iam), RUNAS_ACCOUNT="acme")
    assert "IAM user" in rec["RUNAS_UNRESOLVED_REASON"]
    rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=garbage), RUNAS_ACCOUNT="acme", RUNAS_ACCOUNT_UID=ACME_UID)
    assert "no session owner" in rec["RUNAS_UNRESOLVED_REASON"]
    assert "\x1b" not in rec["RUNAS_REQUESTED_ACCOUNT"] and len(rec["RUNAS_REQUESTED_ACCOUNT"]) <= 256

    # A state file that never becomes valid JSON is still recorded, after the grace period.
    broken = session_id("broken", 23)
    stage.call("start", sid=broken, owner="", run_as="acme", state_root=str(stage.deb_root), document=[1, 2])
    stage.call("poll")
    time.sleep(0.6)
    stage.call("poll")
    rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=broken), RUNAS_ACCOUNT="acme")
    assert "not a session state document" in rec["RUNAS_UNRESOLVED_REASON"]


def test_a_session_that_starts_and_ends_between_two_scans(stage):
    stage.call("watcher", config=str(stage.config))
    stage.call("poll")
    sid = session_id(ALICE, 30)
    stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root))
    stage.call("end", sid=sid)
    stage.call("poll", times=3)
    starts = stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_START)
    ends = stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_END)
    assert len(starts) == 1 and len(ends) == 1
    assert "ended before its state file could be read" in starts[0]["RUNAS_UNRESOLVED_REASON"]


def test_200_concurrent_sessions(stage):
    # 200 workers start at once on a small machine: their shells may take longer than the usual grace.
    stage.call("watcher", config=str(stage.config), shell_grace=60.0)
    stage.call("watcher_start")
    people = [ALICE, BOB]
    sids = [session_id(people[i % 2], 1000 + i) for i in range(200)]
    started = time.monotonic()
    for i, sid in enumerate(sids):
        stage.call("start", sid=sid, owner=owner_arn(people[i % 2]), run_as="acme", wait_shell=False,
                   state_root=str(stage.deb_root if i % 3 else stage.second_root))
    starts = stage.wait_journal(200, timeout=120, MESSAGE_ID=MESSAGE_ID_START)
    assert sorted(r["RUNAS_SESSION_ID"] for r in starts) == sorted(sids)
    assert all(r["RUNAS_IDENTITY_USER"] == people[int(r["RUNAS_SESSION_ID"][-17:], 16) % 2] for r in starts)
    assert all(r.get("RUNAS_SHELL_PID") and r["RUNAS_ACCOUNT_SOURCE"] == "shell" and r["RUNAS_ACCOUNT"] == "acme"
               for r in starts)
    for sid in sids:
        stage.call("end", sid=sid, wait=False)
    ends = stage.wait_journal(200, timeout=120, MESSAGE_ID=MESSAGE_ID_END)
    assert sorted(r["RUNAS_SESSION_ID"] for r in ends) == sorted(sids)
    settle(stage, 4.0)
    assert len(stage.journal(MESSAGE_ID=MESSAGE_ID_START)) == 200 and len(stage.journal(MESSAGE_ID=MESSAGE_ID_END)) == 200
    print(f"200 sessions started and ended, all recorded, in {time.monotonic() - started:.1f}s")


def test_agent_restart_mid_session_neither_repeats_nor_loses_records(stage):
    agent = ["-c", str(stage.config), "sessions", "watch"]
    first = stage.call("spawn_agent", args=agent)["pid"]
    spans, ends_while_down = session_id(ALICE, 40), session_id(BOB, 41)
    stage.call("start", sid=spans, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root))
    stage.call("start", sid=ends_while_down, owner=owner_arn(BOB), run_as="acme", state_root=str(stage.deb_root))
    assert len(stage.wait_journal(2, MESSAGE_ID=MESSAGE_ID_START)) == 2
    assert wait_for(lambda: {s["session_id"] for s in stored(stage)} == {spans, ends_while_down})

    stage.call("signal", pid=first, sig=int(signal.SIGKILL))     # the agent dies mid-session
    stage.call("end", sid=ends_while_down)                       # a session ends while it is down
    second = stage.call("spawn_agent", args=agent)["pid"]
    one(stage.wait_journal(1, RUNAS_SESSION_ID=ends_while_down, MESSAGE_ID=MESSAGE_ID_END),
        RUNAS_IDENTITY_USER=BOB)
    stage.call("end", sid=spans)                                 # the other ends after the restart
    one(stage.wait_journal(1, RUNAS_SESSION_ID=spans, MESSAGE_ID=MESSAGE_ID_END), RUNAS_IDENTITY_USER=ALICE)
    assert stage.call("signal", pid=second, sig=int(signal.SIGTERM))["rc"] == 0
    for sid in (spans, ends_while_down):
        assert len(stage.journal(RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_START)) == 1
        assert len(stage.journal(RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_END)) == 1


def stored(stage) -> list:
    """The open sessions the agent keeps in its state directory (the record comes first, the store
    right after it)."""
    try:
        return json.loads((stage.host.state_dir / "sessions.json").read_text())["sessions"]
    except (FileNotFoundError, ValueError):
        return []


def wait_for(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_ending_one_persons_sessions_leaves_a_colleagues_running(stage):
    stage.config = stage.write_config({"end_sessions_of_disabled_people": True})
    stage.call("watcher", config=str(stage.config))
    a1, a2, b = session_id(ALICE, 50), session_id(ALICE, 51), session_id(BOB, 52)
    shells = {}
    for sid, who in ((a1, ALICE), (a2, ALICE), (b, BOB)):
        shells[sid] = stage.call("start", sid=sid, owner=owner_arn(who), run_as="acme",
                                 state_root=str(stage.deb_root))["shell_pid"]
    stage.call("poll")
    assert len(stage.wait_journal(3, MESSAGE_ID=MESSAGE_ID_START)) == 3

    disabled = stage.root / "disabled.json"
    disabled.write_text(json.dumps(directory(disabled=(ALICE,))))
    ended = stage.call("after_sync", directory=str(disabled))["ended"]
    assert sorted(ended) == sorted([a1, a2])
    alive = stage.call("pids_alive", pids=list(shells.values()))["alive"]
    assert alive == {str(shells[a1]): False, str(shells[a2]): False, str(shells[b]): True}
    for sid in (a1, a2):
        rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_END), RUNAS_IDENTITY_USER=ALICE)
        assert rec["RUNAS_END_REASON"] == "ended by runas-agent: the person is disabled"
    # The workers finish by themselves (log, state saved and deleted, 3 s); nothing more is recorded.
    assert wait_for(lambda: stage.call("alive", sids=[a1, a2, b])["alive"] == {a1: False, a2: False, b: True})
    settle(stage, 1.0)
    assert stage.journal(RUNAS_SESSION_ID=b, MESSAGE_ID=MESSAGE_ID_END) == []
    assert len(stage.journal(MESSAGE_ID=MESSAGE_ID_END)) == 2 and len(stage.journal(MESSAGE_ID=MESSAGE_ID_START)) == 3
    assert [s["session_id"] for s in stage.call("sessions")["sessions"]] == [b]


def test_without_journald_records_go_to_the_audit_file(stage):
    stage.call("journald_stop")
    stage.call("watcher", config=str(stage.config))
    sid = session_id(ALICE, 60)
    stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root))
    stage.call("poll")
    stage.call("end", sid=sid)
    stage.call("poll")
    lines = [json.loads(l) for l in stage.audit.read_text().splitlines()]
    assert [(l["MESSAGE_ID"], l["RUNAS_SESSION_ID"], l["RUNAS_IDENTITY_USER"]) for l in lines] == [
        (MESSAGE_ID_START, sid, ALICE), (MESSAGE_ID_END, sid, ALICE)]
    assert lines[0]["RUNAS_ACCOUNT_UID"] == str(ACME_UID) and lines[0]["RUNAS_GROUP"] == "acme-ops"


def write_snapshot_atomically(stage, document):
    """As sync.py does: a temporary file renamed over the snapshot."""
    tmp = stage.host.state_dir / ".directory.json.tmp"
    tmp.write_text(json.dumps(document))
    tmp.rename(stage.host.state_dir / "directory.json")


@pytest.mark.parametrize("enabled", [True, False])
def test_a_new_snapshot_disabling_a_person_ends_only_their_sessions_when_asked(stage, enabled):
    stage.config = stage.write_config({"end_sessions_of_disabled_people": enabled})
    stage.call("watcher", config=str(stage.config))
    stage.call("watcher_start")
    a, b = session_id(ALICE, 80), session_id(BOB, 81)
    shells = [stage.call("start", sid=sid, owner=owner_arn(who), run_as="acme", state_root=str(stage.deb_root))["shell_pid"]
              for sid, who in ((a, ALICE), (b, BOB))]
    assert len(stage.wait_journal(2, MESSAGE_ID=MESSAGE_ID_START)) == 2
    write_snapshot_atomically(stage, directory(disabled=(BOB,)))
    ends = stage.wait_journal(1, timeout=8 if enabled else 3, MESSAGE_ID=MESSAGE_ID_END)
    alive = stage.call("pids_alive", pids=shells)["alive"]
    if enabled:
        one(ends, RUNAS_SESSION_ID=b, RUNAS_IDENTITY_USER=BOB,
            RUNAS_END_REASON="ended by runas-agent: the person is disabled")
        assert alive == {str(shells[0]): True, str(shells[1]): False}
        assert wait_for(lambda: stage.call("alive", sids=[a, b])["alive"] == {a: True, b: False})
    else:
        assert ends == []
        assert alive == {str(shells[0]): True, str(shells[1]): True}
        assert stage.call("alive", sids=[a, b])["alive"] == {a: True, b: True}


def test_run_command_state_files_beside_sessions_are_not_sessions(stage):
    stage.call("watcher", config=str(stage.config), shell_grace=0.3)
    command = "2b7a3c4d-1e2f-4a5b-8c9d-0e1f2a3b4c5d"
    stage.call("start", sid=command, owner="", run_as="", state_root=str(stage.deb_root), worker=False,
               document={"DocumentInformation": {"DocumentID": command, "CommandID": command, "SessionOwner": "",
                                                 "RunAsUser": "", "DocumentName": "AWS-RunShellScript"},
                         "DocumentType": "SendCommand"})
    unreadable = "3c8b4d5e-2f3a-4b6c-9d0e-1f2a3b4c5d6e"
    stage.call("start", sid=unreadable, owner="", run_as="", state_root=str(stage.deb_root), worker=False,
               document=[1, 2])
    sid = session_id(ALICE, 90)
    stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root))
    stage.call("poll")
    time.sleep(0.4)
    stage.call("poll", times=2)
    stage.call("remove_state", sid=command)
    stage.call("remove_state", sid=unreadable)
    stage.call("poll", times=2)
    assert stage.journal(MESSAGE_ID=MESSAGE_ID_END) == []
    assert [r["RUNAS_SESSION_ID"] for r in stage.wait_journal(1, MESSAGE_ID=MESSAGE_ID_START)] == [sid]
    out = stage.call("agent", args=["-c", str(stage.config), "sessions", "--json"])
    assert [r["session_id"] for r in json.loads(out["stdout"])["sessions"]] == [sid]


def test_impostor_workers_are_neither_sessions_nor_signalled(stage):
    b, ghost = session_id(BOB, 95), session_id("ghost", 96)
    impostor = stage.call("impostor", sid=b, uid=CAROL_UID)["pid"]     # older than the real worker
    stranger = stage.call("impostor", sid=ghost, uid=CAROL_UID)["pid"]
    stage.call("watcher", config=str(stage.config))
    real = stage.call("start", sid=b, owner=owner_arn(BOB), run_as="acme", state_root=str(stage.second_root),
                      instance="mi-0123456789abcdef0",
                      worker_dir=str(stage.root / "snap" / "amazon-ssm-agent" / "9881"))
    stage.call("poll", times=2)
    one(stage.wait_journal(1, MESSAGE_ID=MESSAGE_ID_START), RUNAS_SESSION_ID=b, RUNAS_WORKER_PID=real["worker_pid"],
        RUNAS_SHELL_PID=real["shell_pid"], RUNAS_IDENTITY_USER=BOB)
    assert stage.journal(RUNAS_SESSION_ID=ghost) == []
    assert stage.call("end_sessions_of", names=[BOB])["ended"] == [b]
    assert stage.call("pids_alive", pids=[real["shell_pid"]])["alive"] == {str(real["shell_pid"]): False}
    assert wait_for(lambda: stage.call("alive", sids=[b])["alive"] == {b: False})
    assert stage.call("pid_alive", pid=impostor)["alive"] and stage.call("pid_alive", pid=stranger)["alive"]


def test_what_a_shell_left_running_ends_too_after_one_grace_period(stage):
    """The SSM agent's worker, asked to stop, kills only its shell: a job the shell put in the
    background, ignoring SIGTERM and SIGHUP, would keep running as the person. The shell's whole tree
    is taken before any signal and killed after the grace."""
    stage.call("watcher", config=str(stage.config))
    sids = [session_id(ALICE, 100 + i) for i in range(3)]
    jobs = [pid for sid in sids for pid in stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme",
                                                      state_root=str(stage.deb_root), stubborn=True)["job_pids"]]
    colleague = stage.call("start", sid=session_id(BOB, 110), owner=owner_arn(BOB), run_as="acme",
                           state_root=str(stage.deb_root), stubborn=True)["job_pids"]
    stage.call("poll")
    assert len(stage.wait_journal(4, MESSAGE_ID=MESSAGE_ID_START)) == 4
    out = stage.call("end_sessions_of", names=[ALICE], grace=1.5)
    assert sorted(out["ended"]) == sorted(sids)
    # one grace period for all three, not one each
    assert 1.5 <= out["seconds"] < 4.0, out["seconds"]
    alive = stage.call("pids_alive", pids=jobs + colleague)["alive"]
    assert alive == {**{str(p): False for p in jobs}, **{str(p): True for p in colleague}}


def test_a_session_started_before_the_first_snapshot_ends_attributed(stage):
    (stage.host.state_dir / "directory.json").unlink()
    stage.call("watcher", config=str(stage.config))
    sid = session_id(ALICE, 120)
    stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root))
    stage.call("poll")
    start = one(stage.wait_journal(1, MESSAGE_ID=MESSAGE_ID_START), RUNAS_IDENTITY_USER=ALICE, RUNAS_ACCOUNT="acme")
    assert "no directory snapshot" in start["RUNAS_UNRESOLVED_REASON"] and "RUNAS_IDENTITY_ID" not in start
    write_snapshot_atomically(stage, directory())
    stage.call("end", sid=sid)
    stage.call("poll")
    end = one(stage.wait_journal(1, MESSAGE_ID=MESSAGE_ID_END), RUNAS_IDENTITY_USER=ALICE,
              RUNAS_IDENTITY_ID="9067a1b2c3-aaaaaaaa-1111-2222-3333-444444444444", RUNAS_ORGANIZATION="acme")
    assert "RUNAS_UNRESOLVED_REASON" not in end


def records_of(stage, sid):
    return [r["MESSAGE_ID"] for r in sorted(stage.journal(RUNAS_SESSION_ID=sid), key=lambda r: int(r["__MONOTONIC_TIMESTAMP"]))]


def test_terminate_session_gives_one_start_and_one_end(stage):
    """TerminateSession renames its own document over the live state file, deletes it, and the
    session's state is written once more and deleted after the worker completes."""
    stage.call("watcher", config=str(stage.config))
    stage.call("watcher_start")
    sid = session_id(ALICE, 130)
    stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root))
    one(stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_START), RUNAS_ACCOUNT="acme",
        RUNAS_ACCOUNT_SOURCE="shell")
    stage.call("terminate", sid=sid)
    one(stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_END), RUNAS_IDENTITY_USER=ALICE)
    assert wait_for(lambda: stage.call("alive", sids=[sid])["alive"] == {sid: False})
    time.sleep(0.5)
    assert records_of(stage, sid) == [MESSAGE_ID_START, MESSAGE_ID_END]


def test_the_root_id_look_ups_before_the_shell_are_never_taken_for_it(stage):
    """With a slow NSS source each `id` takes a while: the worker's root `sh -c "id acme"` children
    are there for seconds before the shell. The start record waits for the shell."""
    stage.call("watcher", config=str(stage.config))
    sid = session_id(BOB, 131)
    stage.call("start", sid=sid, owner=owner_arn(BOB), run_as="acme", state_root=str(stage.deb_root),
               id_delay=0.4, wait_shell=False)
    deadline = time.monotonic() + 15
    looks_during_ids = 0
    while not stage.journal(RUNAS_SESSION_ID=sid) and time.monotonic() < deadline:
        stage.call("poll", wait=0.1)
        looks_during_ids += 1
    assert looks_during_ids >= 5, "the watcher looked while only the id look-ups ran"
    one(stage.journal(RUNAS_SESSION_ID=sid), MESSAGE_ID=MESSAGE_ID_START, RUNAS_ACCOUNT="acme",
        RUNAS_ACCOUNT_UID=ACME_UID, RUNAS_ACCOUNT_SOURCE="shell")


def test_the_preferences_default_user_is_the_account_when_the_service_sends_none(stage):
    stage.call("watcher", config=str(stage.config))
    sid = session_id(ALICE, 132)
    stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="", default_user="acme", state_root=str(stage.deb_root),
               id_delay=0.3, wait_shell=False)
    stage.call("watcher_start")
    rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=sid), RUNAS_ACCOUNT="acme", RUNAS_ACCOUNT_UID=ACME_UID)
    assert "RUNAS_REQUESTED_ACCOUNT" not in rec


def test_a_shell_that_never_comes_is_recorded_with_the_state_files_account_and_says_so(stage):
    stage.call("watcher", config=str(stage.config), shell_grace=0.5)
    sid = session_id(ALICE, 133)
    stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root),
               open_delay=3.0, wait_shell=False)
    stage.call("watcher_start")
    rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=sid), RUNAS_ACCOUNT="acme", RUNAS_ACCOUNT_SOURCE="state-file",
              RUNAS_IDENTITY_USER=ALICE)
    assert "RUNAS_SHELL_PID" not in rec and "RUNAS_ACCOUNT_UID" not in rec
    assert "its shell was not seen" in rec["MESSAGE"]


def test_port_forwarding_is_recorded_without_an_account(stage):
    stage.call("watcher", config=str(stage.config))
    stage.call("watcher_start")
    sid = session_id(ALICE, 134)
    out = stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root),
                     session_type="Port", document_name="AWS-StartPortForwardingSession")
    rec = one(stage.wait_journal(1, RUNAS_SESSION_ID=sid), RUNAS_SESSION_TYPE="Port", RUNAS_IDENTITY_USER=ALICE,
              RUNAS_WORKER_PID=out["worker_pid"])
    assert "RUNAS_ACCOUNT" not in rec and "port forwarding" in rec["MESSAGE"]
    stage.call("end", sid=sid)                      # the client closes: ChannelClosed, TerminateSession
    one(stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_END))


def test_a_crashed_worker_ends_its_session_once(stage):
    stage.call("zombie_timeout", seconds=1.0)
    stage.config = stage.write_config({"reconcile_interval": 0.5})
    stage.call("watcher", config=str(stage.config))
    stage.call("watcher_start")
    sid = session_id(BOB, 135)
    stage.call("start", sid=sid, owner=owner_arn(BOB), run_as="acme", state_root=str(stage.deb_root))
    one(stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_START))
    stage.call("crash_worker", sid=sid)
    one(stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_END))
    assert stage.call("wait_done", sid=sid)["done"]       # the agent's own wait timed out: state saved, deleted
    time.sleep(1.0)
    assert records_of(stage, sid) == [MESSAGE_ID_START, MESSAGE_ID_END]


@pytest.mark.parametrize("seed", [7, 8])
def test_a_seeded_sample_of_lifecycles_on_the_stand_in(stage, seed):
    """Random sessions, ended every way the real agent ends them, with the watcher running: one start
    and one end each, never as root. (bench/campaign_sessions.py runs the long simulated campaign.)"""
    rng = random.Random(seed)
    stage.call("zombie_timeout", seconds=1.0)
    stage.config = stage.write_config({"reconcile_interval": 1.0})
    stage.call("watcher", config=str(stage.config), worker_grace=5.0)
    stage.call("watcher_start")
    ways = ["exit", "terminate", "end_sessions_of", "crash", "quick"]
    plan = [(session_id(who, 2000 + seed * 100 + i), who, rng.choice(ways))
            for i, who in enumerate(rng.choice([ALICE, BOB]) for _ in range(8))]
    for sid, who, way in plan:
        stage.call("start", sid=sid, owner=owner_arn(who), run_as=rng.choice(["acme", ""]), default_user="acme",
                   state_root=str(stage.deb_root), id_delay=rng.choice([0, 0, 0.2]), wait_shell=way != "quick")
        time.sleep(rng.uniform(0, 0.3))
    for sid, who, way in plan:
        if way in ("exit", "quick"):
            stage.call("end", sid=sid, wait=False)
        elif way == "terminate":
            stage.call("terminate", sid=sid, wait=False)
        elif way == "crash":
            stage.call("crash_worker", sid=sid)
        elif stage.wait_journal(1, RUNAS_SESSION_ID=sid):
            stage.call("end_sessions_of", names=[who], grace=1.0)
        time.sleep(rng.uniform(0, 0.3))
    for sid, _, _ in plan:
        assert stage.call("wait_done", sid=sid)["done"]
    assert wait_for(lambda: not any(stage.call("alive", sids=[p[0] for p in plan])["alive"].values()), 30)
    time.sleep(2.5)
    for sid, who, way in plan:
        records = sorted(stage.journal(RUNAS_SESSION_ID=sid), key=lambda r: int(r["__MONOTONIC_TIMESTAMP"]))
        assert [r["MESSAGE_ID"] for r in records] == [MESSAGE_ID_START, MESSAGE_ID_END], (way, records)
        assert records[0].get("RUNAS_ACCOUNT") in ("acme", None) and records[0].get("RUNAS_ACCOUNT_UID") in (str(ACME_UID), None)
