"""Attack 7: a disable the person can block.

The SSM agent checks only `id <name>`, so a disable works by renaming the account away; `usermod -l`
refuses while any process of the account runs. A leaver who left `setsid sleep` behind would keep the
account resolving, and Run As working, for as long as they like. Before a per-person account is
parked, every process of its UID ends; whether the person was disabled, deleted or left the scope.
A re-enable whose parked UID still runs something must not lock the person out. A shared account is
never emptied of processes: only the sessions of the member who left may end, a colleague's go on."""

from __future__ import annotations

import time

import pytest

from tests.security.common import configure, kill_all_of, processes_of, publish, start_as, sync, uid_of, user

pytestmark = pytest.mark.host

PERSON = "${path:userName}"
DAVE, ALICE = user("id-dave", "dave"), user("id-alice", "alice")
BLOCKED = pytest.mark.xfail(strict=True, raises=AssertionError, reason="attack 7 (a disable the person can block): the account is "
                            "parked while its processes run, but the processes a leaver left behind are not ended")


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def background(host, uid: int):
    """What the leaver leaves behind: a detached process of the account's UID."""
    proc = start_as(host, uid, ["sleep", "600"])
    wait_for(lambda: processes_of(uid))
    return proc


@BLOCKED
def test_a_leavers_background_process_does_not_keep_the_account(isolated_host):
    """Three leavers, each with a process left running: dave is disabled in the directory, erin is
    deleted from it, frank leaves the scope group. None of them may still resolve after the sync."""
    host = isolated_host
    erin, frank = user("id-erin", "erin"), user("id-frank", "frank")
    everyone = ["id-dave", "id-erin", "id-frank", "id-alice"]
    cfg = configure(host, [DAVE, erin, frank, ALICE], PERSON, directory_groups={"Staff": everyone},
                    scope={"groups": ["Staff"]})
    sync(host, cfg)
    leavers = {name: uid_of(host, name) for name in ("dave", "erin", "frank")}
    procs = [background(host, uid) for uid in leavers.values()]
    try:
        publish(host, [user("id-dave", "dave", status="DISABLED"), frank, ALICE],
                {"Staff": ["id-dave", "id-erin", "id-alice"]})
        sync(host, cfg)
        still = {name: uid for name, uid in leavers.items() if uid_of(host, name) is not None}
        assert still == {}, f"{sorted(still)} still resolve: Run As as them still works"
        assert [p.pid for uid in leavers.values() for p in processes_of(uid)] == []
        assert uid_of(host, "alice") is not None
    finally:
        for uid in leavers.values():
            kill_all_of(uid)
        for proc in procs:
            proc.wait()


def test_a_re_enable_is_not_blocked_by_a_process_of_the_parked_uid(isolated_host):
    host = isolated_host
    cfg = configure(host, [DAVE, ALICE], PERSON)
    sync(host, cfg)
    uid = uid_of(host, "dave")
    publish(host, [ALICE])
    sync(host, cfg)
    assert uid_of(host, "dave") is None
    proc = background(host, uid)       # e.g. a job root started as the parked UID
    try:
        publish(host, [DAVE, ALICE])
        sync(host, cfg)
        assert uid_of(host, "dave") == uid, "dave is locked out"
    finally:
        kill_all_of(uid)
        proc.wait()


def test_a_colleagues_process_survives_a_member_leaving_a_shared_account(isolated_host):
    """Keeps working: alice leaves organization acme; bob's process on the shared account runs on."""
    host = isolated_host
    bob = user("id-bob", "bob", "acme")
    cfg = configure(host, [user("id-alice", "alice", "acme"), bob], "${path:enterprise.organization}")
    sync(host, cfg)
    uid = uid_of(host, "acme")
    proc = background(host, uid)
    try:
        publish(host, [bob])
        sync(host, cfg)
        assert uid_of(host, "acme") == uid
        assert processes_of(uid) != [] and proc.poll() is None
    finally:
        kill_all_of(uid)
        proc.wait()
