"""The daemon loop's decisions, with an injected clock, wait, notify, journal, lock and sync."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from runas_agent import cli, config, daemon
from runas_agent.daemon import MESSAGE_RELOAD, MESSAGE_SYNC, MESSAGE_SYNC_FAILED, Abandon, Daemon
from runas_agent.errors import AgentError, CommandError, ConfigError, LockBusyError, SourceError
from runas_agent.exitcodes import Exit
from runas_agent.journal import Journal
from runas_agent.status import SyncCounts, SyncStatus

BASE = {"source": {"type": "file", "path": "/nonexistent/directory.json"},
        "run_as": {"expression": "${path:userName}"},
        "state_dir": "/nonexistent/state",
        "daemon": {"interval_seconds": 600, "jitter_seconds": 60, "backoff_initial_seconds": 10,
                   "backoff_max_seconds": 300, "lock_wait_seconds": 20}}


def cfg(**daemon_keys):
    data = {**BASE, "daemon": {**BASE["daemon"], **daemon_keys}}
    return config.validate(data, "/etc/runas-agent/config.yaml")


class FakeResult:
    """A sync.SyncResult as far as the daemon reads it."""

    def __init__(self, created=0, disabled=0, enabled=0, skipped=0, failed=0, refusals=()):
        self.counts = SyncCounts(created=created, disabled=disabled, enabled=enabled, skipped=skipped, failed=failed,
                                 actions=created + disabled + enabled)
        self.status = (SyncStatus.REFUSED if refusals else SyncStatus.PARTIAL if failed or skipped else SyncStatus.OK)
        self.plan = SimpleNamespace(refusals=list(refusals))
        self.directory = SimpleNamespace(users=[])


class FakeLock:
    """Busy for the first `busy` attempts, then free."""

    def __init__(self, busy=0):
        self.busy = busy
        self.attempts = 0
        self.held = False

    def __call__(self, path):
        return self

    def __enter__(self):
        self.attempts += 1
        if self.attempts <= self.busy:
            raise LockBusyError("busy")
        self.held = True
        return self

    def __exit__(self, *exc):
        self.held = False


class Harness:
    """A daemon on a fake clock. `steps` is a list of callables, one per sync: each gets
    (harness, progress) and returns a result or raises."""

    def __init__(self, steps, config_ns=None, watchdog=None, lock=None, stop_after=None, rng_value=0.5,
                 load_config=None, watcher=None):
        self.now = 1000.0
        self.notes: list[tuple[float, str]] = []
        self.records: list[dict] = []
        self.syncs: list[tuple[float, SimpleNamespace]] = []
        self.steps = list(steps)
        self.stop_after = len(self.steps) if stop_after is None else stop_after
        self.lock = lock or FakeLock()
        rng = random.Random()
        rng.random = lambda: rng_value  # type: ignore[method-assign]
        self.daemon = Daemon(
            "/etc/runas-agent/config.yaml", config_ns or cfg(),
            notify=self.notify, journal=Journal(sendv=self.sendv, echo=False),
            clock=lambda: self.now, wait=self.wait, rng=rng, watchdog=watchdog,
            sync_fn=self.sync, source_factory=lambda source_cfg, checkpoint, nap: "source",
            lock_factory=self.lock, load_config=load_config or (lambda path: cfg()),
            watcher_factory=(lambda c: watcher),
        )

    def notify(self, *assignments):
        self.notes.append((self.now, "\n".join(assignments)))

    def sendv(self, *assignments):
        self.records.append(dict(a.split("=", 1) for a in assignments))

    def wait(self, seconds):
        assert seconds >= 0
        self.now += seconds

    def sync(self, cfg_ns, *, source, progress):
        assert self.lock.held, "sync ran without the lock"
        self.syncs.append((self.now, cfg_ns))
        step = self.steps.pop(0)
        try:
            return step(self, progress)
        finally:
            if len(self.syncs) >= self.stop_after:
                self.daemon.request_stop()

    def run(self):
        return self.daemon.run()

    def with_prefix(self, prefix):
        return [(t, n) for t, n in self.notes if any(line.startswith(prefix) for line in n.split("\n"))]


def ok(**counts):
    return lambda h, progress: FakeResult(**counts)


def fails(message="ListUsers page 2: throttled"):
    def step(h, progress):
        raise SourceError(message)
    return step


# -- READY, STATUS -----------------------------------------------------------------------------------


def test_ready_only_after_the_first_sync_finished():
    seen_before_sync = []

    def step(h, progress):
        seen_before_sync.extend(h.with_prefix("READY=1"))
        h.now += 5
        return FakeResult(created=2)

    h = Harness([step, ok()])
    assert h.run() == Exit.OK
    assert seen_before_sync == []
    ready = h.with_prefix("READY=1")
    assert len(ready) == 1
    assert ready[0][0] == 1005.0
    assert "STATUS=last sync: 2 created, 0 re-enabled, 0 disabled, 0 skipped, 0 failed" in ready[0][1]


def test_a_failed_first_sync_is_reported_then_ready():
    h = Harness([fails("Identity Store d-1234567890: ListUsers page 1: access denied")])
    h.run()
    (_, note), = h.with_prefix("READY=1")
    assert "failed, nothing changed: Identity Store d-1234567890: ListUsers page 1: access denied" in note
    (record,) = [r for r in h.records if r.get("SYNC_RESULT")]
    assert record["MESSAGE_ID"] == MESSAGE_SYNC_FAILED.hex
    assert record["PRIORITY"] == "3"
    assert record["SYNC_ATTEMPT"] == "1"


def test_stopping_is_announced_and_exit_is_zero():
    h = Harness([ok()])
    assert h.run() == Exit.OK
    assert h.notes[-1][1].startswith("STOPPING=1")


# -- schedule ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rng_value", [0.0, 0.25, 0.999])
def test_interval_plus_jitter_between_sync_starts(rng_value):
    h = Harness([ok(), ok(), ok()], rng_value=rng_value)
    h.run()
    starts = [t for t, _ in h.syncs]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == [pytest.approx(600 + 60 * rng_value)] * 2


def test_each_instance_draws_its_own_jitter():
    a = Daemon("/x", cfg(), notify=lambda *a: None, journal=Journal(sendv=lambda *a: None, echo=False))
    b = Daemon("/x", cfg(), notify=lambda *a: None, journal=Journal(sendv=lambda *a: None, echo=False))
    draws_a = [a.interval() for _ in range(20)]
    draws_b = [b.interval() for _ in range(20)]
    assert all(600 <= d <= 660 for d in draws_a + draws_b)
    assert draws_a != draws_b


def test_backoff_doubles_with_jitter_up_to_the_cap_then_resets_after_success():
    steps = [fails()] * 7 + [ok(), ok()]
    h = Harness(steps, rng_value=0.5)
    h.run()
    starts = [t for t, _ in h.syncs]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # step = min(300, 10 * 2**(n-1)); equal jitter with rng 0.5 gives 3/4 of the step
    expected_steps = [10, 20, 40, 80, 160, 300, 300]
    assert gaps[:7] == [pytest.approx(0.75 * s) for s in expected_steps]
    assert gaps[7] == pytest.approx(600 + 30)  # back to the interval after a success
    assert h.daemon.failures == 0


@pytest.mark.parametrize("rng_value", [0.0, 0.999])
def test_backoff_jitter_stays_within_half_and_all_of_the_step(rng_value):
    h = Harness([])
    h.daemon.rng.random = lambda: rng_value
    for failures, step in [(1, 10), (3, 40), (10, 300)]:
        delay = h.daemon.backoff(failures)
        assert step / 2 <= delay <= step


def test_a_failed_read_never_reaches_the_host_and_is_retried():
    """The daemon calls nothing else on a SourceError: the next thing that happens is the retry."""
    calls = []

    def failing(h, progress):
        calls.append("sync")
        raise SourceError("Identity Store: ListGroupMemberships page 3: server error")

    h = Harness([failing, ok(created=1)])
    h.run()
    assert calls == ["sync"]
    results = [r["SYNC_RESULT"] for r in h.records if "SYNC_RESULT" in r]
    assert results == ["failed", "ok"]
    failed = [r for r in h.records if r.get("SYNC_RESULT") == "failed"][0]
    assert "SYNC_CREATED" not in failed and "accounts left as they are" in failed["MESSAGE"]


def test_only_a_failed_read_claims_that_nothing_changed():
    def command_failed(h, progress):
        raise CommandError(["chpasswd", "-e"], 1, "chpasswd: failure while writing changes to /etc/shadow")

    h = Harness([fails("ListUsers page 1: access denied"), command_failed])
    h.run()
    read, applied = [r for r in h.records if r.get("SYNC_RESULT") == "failed"]
    assert "accounts left as they are" in read["MESSAGE"]
    assert "left as they are" not in applied["MESSAGE"] and "nothing changed" not in applied["MESSAGE"]
    assert "chpasswd -e: exit status 1" in applied["SYNC_ERROR"]
    assert "nothing changed" not in h.notes[-2][1]


def test_unexpected_errors_are_reported_and_backed_off_not_fatal():
    def boom(h, progress):
        raise KeyError("bug")

    h = Harness([boom, ok()])
    assert h.run() == Exit.OK
    assert [r["SYNC_RESULT"] for r in h.records if "SYNC_RESULT" in r] == ["failed", "ok"]
    assert "KeyError" in [r for r in h.records if r.get("SYNC_RESULT") == "failed"][0]["SYNC_ERROR"]


def test_agent_errors_back_off_too():
    def corrupt(h, progress):
        raise AgentError("/var/lib/runas-agent/ledger.json: bad JSON; refusing to guess what the agent owns")

    h = Harness([corrupt, ok()])
    h.run()
    starts = [t for t, _ in h.syncs]
    assert starts[1] - starts[0] == pytest.approx(7.5)


# -- journal -----------------------------------------------------------------------------------------


def test_every_sync_is_one_structured_record():
    h = Harness([ok(created=3, disabled=1, enabled=2, skipped=4, failed=1),
                 lambda h, p: FakeResult(refusals=["would disable 9 of 10 accounts"])])
    h.run()
    first, second = [r for r in h.records if "SYNC_RESULT" in r]
    assert first["MESSAGE_ID"] == MESSAGE_SYNC.hex
    assert (first["SYNC_RESULT"], first["SYNC_CREATED"], first["SYNC_DISABLED"], first["SYNC_ENABLED"],
            first["SYNC_SKIPPED"], first["SYNC_FAILED"], first["SYNC_ACTIONS"]) == ("partial", "3", "1", "2", "4", "1", "6")
    assert float(first["SYNC_SECONDS"]) >= 0 and first["PRIORITY"] == "4"
    assert second["SYNC_RESULT"] == "refused" and second["SYNC_REFUSALS"] == "would disable 9 of 10 accounts"
    assert all(k == k.upper() for r in h.records for k in r)


# -- watchdog ----------------------------------------------------------------------------------------


def test_watchdog_pings_come_from_the_loop_and_stop_while_a_sync_is_stuck():
    def stuck(h, progress):
        progress()
        h.now += 500  # blocked somewhere without reaching a safe point
        return FakeResult()

    h = Harness([ok(), stuck, ok()], watchdog=60)
    h.run()
    pings = [t for t, n in h.notes if n == "WATCHDOG=1"]
    stuck_start = h.syncs[1][0]
    assert not [t for t in pings if stuck_start < t < stuck_start + 500]
    # idle: never more than half the interval between two pings
    idle = [t for t in pings if t < stuck_start]
    assert idle and max(b - a for a, b in zip(idle, idle[1:])) <= 30


def test_progress_inside_a_long_sync_keeps_the_watchdog_fed():
    def long_but_alive(h, progress):
        for _ in range(20):
            h.now += 10
            progress()
        return FakeResult(created=20)

    h = Harness([long_but_alive], watchdog=60)
    h.run()
    pings = [t for t, n in h.notes if n == "WATCHDOG=1" and 1000 < t <= 1200]
    gaps = [b - a for a, b in zip([1000.0] + pings, pings)]
    assert pings and max(gaps) <= 20


def test_no_pings_without_a_watchdog():
    h = Harness([ok(), ok()])
    h.run()
    assert not [n for _, n in h.notes if "WATCHDOG" in n]


def test_nap_sleeps_in_slices_and_pings():
    h = Harness([], watchdog=20)
    h.daemon.nap(95)
    assert h.now == 1095
    assert len([n for _, n in h.notes if n == "WATCHDOG=1"]) >= 95 // 10


# -- stop --------------------------------------------------------------------------------------------


def test_stop_abandons_the_sync_at_the_next_safe_point():
    done = []

    def step(h, progress):
        progress()
        done.append("action 1")
        h.daemon.request_stop()  # SIGTERM arrives during action 1
        progress()  # the safe point before action 2
        done.append("action 2")
        return FakeResult()

    h = Harness([step, ok()], stop_after=99)
    assert h.run() == Exit.OK
    assert done == ["action 1"]
    assert len(h.syncs) == 1
    assert not h.lock.held
    assert any(r.get("SYNC_RESULT") == "abandoned" for r in h.records)
    assert h.notes[-1][1].startswith("STOPPING=1")


def test_stop_during_a_backoff_nap_inside_the_read():
    def step(h, progress):
        h.daemon.request_stop()
        h.daemon.nap(30)
        raise AssertionError("not reached")

    h = Harness([step], stop_after=99)
    assert h.run() == Exit.OK
    assert h.now == 1000  # abandoned without sleeping


def test_abandon_is_not_an_exception_that_handlers_swallow():
    assert not issubclass(Abandon, Exception)


# -- lock --------------------------------------------------------------------------------------------


def test_waits_for_a_manual_sync_holding_the_lock_then_syncs():
    lock = FakeLock(busy=6)
    h = Harness([ok(created=1)], lock=lock, watchdog=60)
    h.run()
    assert lock.attempts == 7
    assert h.syncs[0][0] == pytest.approx(1003.0)  # six waits of 0.5 s
    assert [r["SYNC_RESULT"] for r in h.records if "SYNC_RESULT" in r] == ["ok"]


def test_gives_up_after_lock_wait_and_retries_later():
    lock = FakeLock(busy=10_000)
    h = Harness([], lock=lock)
    report = h.daemon.sync_once()
    assert report.status is SyncStatus.BUSY
    assert h.now == pytest.approx(1020.0)  # daemon.lock_wait_seconds
    assert h.daemon.next_sync - 1000 == pytest.approx(7.5)
    assert [r["SYNC_RESULT"] for r in h.records] == ["busy"]


# -- reload ------------------------------------------------------------------------------------------


def test_reload_with_a_good_config_applies_it_and_syncs_now():
    new = cfg(interval_seconds=100)

    def first(h, progress):
        h.daemon.request_reload()
        return FakeResult()

    h = Harness([first, ok(), ok()], load_config=lambda path: new)
    h.run()
    (t_reload, reloading), = h.with_prefix("RELOADING=1")
    assert "MONOTONIC_USEC=" in reloading
    ready_after = [t for t, n in h.with_prefix("READY=1") if t >= t_reload]
    assert ready_after
    assert h.syncs[1][1] is new and h.syncs[1][0] == t_reload  # synced at once with the new config
    assert h.syncs[2][0] - h.syncs[1][0] == pytest.approx(100 + 30)
    assert [r["RELOAD_RESULT"] for r in h.records if r.get("MESSAGE_ID") == MESSAGE_RELOAD.hex] == ["ok"]


def test_reload_with_a_bad_config_keeps_the_old_one():
    old = cfg()

    def bad(path):
        raise ConfigError(["daemon.interval_seconds: must be at least 10"], path)

    def first(h, progress):
        h.daemon.request_reload()
        return FakeResult()

    h = Harness([first, ok()], config_ns=old, load_config=bad)
    h.run()
    assert h.syncs[1][1] is old
    assert h.syncs[1][0] - h.syncs[0][0] == pytest.approx(630)  # the old schedule goes on
    (record,) = [r for r in h.records if r.get("MESSAGE_ID") == MESSAGE_RELOAD.hex]
    assert record["RELOAD_RESULT"] == "invalid" and record["PRIORITY"] == "3"
    assert "daemon.interval_seconds: must be at least 10" in record["CONFIG_PROBLEMS"]
    status_after = [n for t, n in h.notes if "reload refused" in n]
    assert status_after and "READY=1" in status_after[0]


def test_reload_before_the_first_sync_does_not_send_ready():
    h = Harness([ok()])
    h.daemon.request_reload()
    h.run()
    first_ready = h.with_prefix("READY=1")[0][0]
    assert first_ready >= h.syncs[0][0]
    reloading = h.with_prefix("RELOADING=1")
    assert reloading and reloading[0][0] <= h.syncs[0][0]
    assert len(h.with_prefix("READY=1")) == 1


# -- session watcher ---------------------------------------------------------------------------------


class FakeWatcher:
    def __init__(self, fail_start=False):
        self.events = []
        self.fail_start = fail_start

    def start(self):
        self.events.append("start")
        if self.fail_start:
            raise OSError("inotify: too many watches")

    def stop(self):
        self.events.append("stop")

    def after_sync(self, directory):
        self.events.append(("after_sync", directory))


def test_session_watcher_runs_for_the_life_of_the_service_and_sees_each_applied_directory():
    w = FakeWatcher()
    refused = FakeResult(refusals=["the directory has no users"])
    h = Harness([ok(), lambda h, p: refused, fails(), ok()], watcher=w)
    h.run()
    assert [e if isinstance(e, str) else e[0] for e in w.events] == ["start", "after_sync", "after_sync", "stop"]


def test_a_long_apply_reports_its_progress_as_journal_records_and_on_the_status_line():
    def step(h, progress):
        h.daemon._report_progress("making homes", 4210, 10000)
        return ok()(h, progress)

    h = Harness([step])
    h.run()
    (record,) = [r for r in h.records if r.get("MESSAGE_ID") == "96a5c843b4aa4938b15764e96e70640f"]
    assert (record["SYNC_PHASE"], record["SYNC_DONE"], record["SYNC_TOTAL"]) == ("making homes", "4210", "10000")
    assert record["MESSAGE"] == "sync in progress: making homes, 4210 of 10000" and record["PRIORITY"] == "6"
    assert h.with_prefix("STATUS=sync in progress: making homes, 4210 of 10000")


def test_a_result_without_a_directory_is_not_handed_to_the_watcher():
    w = FakeWatcher()
    bare = FakeResult()
    del bare.directory  # a publish reports no directory
    h = Harness([lambda h, p: bare, ok()], watcher=w)
    assert h.run() == Exit.OK
    assert [e if isinstance(e, str) else e[0] for e in w.events] == ["start", "after_sync", "stop"]


def test_a_watcher_that_cannot_start_does_not_stop_the_sync():
    w = FakeWatcher(fail_start=True)
    h = Harness([ok(), ok()], watcher=w)
    assert h.run() == Exit.OK
    assert len(h.syncs) == 2


# -- systemd plumbing --------------------------------------------------------------------------------


@pytest.mark.parametrize("env, pid, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 7, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7, None),
    ({"WATCHDOG_USEC": "0"}, 7, None),
    ({"WATCHDOG_USEC": "x"}, 7, None),
    ({}, 7, None),
])
def test_watchdog_interval_from_the_environment(env, pid, expected):
    assert daemon.watchdog_interval(env, pid) == expected


def test_notifier_sends_one_datagram():
    sent = []
    daemon.Notifier(sent.append)("READY=1", "STATUS=a\nb")
    assert sent == ["READY=1\nSTATUS=a b"]


def test_identitystore_source_checks_in_before_every_request(monkeypatch):
    """The heartbeat rides on botocore's before-send event; a stop raised there ends the read."""
    from botocore.awsrequest import AWSResponse

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    source_cfg = config.validate({"source": {"type": "identitystore", "region": "eu-west-1",
                                             "identity_store_id": "d-1234567890"},
                                  "run_as": {"expression": "${path:userName}"}}).source
    beats = []
    state = {"stop_at": None}

    def checkpoint():
        beats.append(1)
        if state["stop_at"] is not None and len(beats) >= state["stop_at"]:
            raise Abandon()

    source = daemon.build_source(source_cfg, checkpoint=checkpoint, nap=lambda s: None)
    bodies = {"ListUsers": b'{"Users": [{"UserId": "u1", "UserName": "alice", "UserStatus": "ENABLED", "IdentityStoreId": "d-1234567890"}]}',
              "ListGroups": b'{"Groups": []}'}

    def answer(request, **kwargs):
        target = request.headers["X-Amz-Target"].decode().split(".")[-1]

        class Raw:
            def stream(self, **kw):
                yield bodies[target]

        return AWSResponse(request.url, 200, {"Content-Type": "application/x-amz-json-1.1"}, Raw())

    # registered after the daemon's handler: the daemon checks in first, then this answers
    source._client.meta.events.register("before-send", answer)
    fetched = source.fetch()
    assert [u.user_name for u in fetched.directory.users] == ["alice"]
    assert len(beats) == 2  # ListUsers, ListGroups
    state["stop_at"] = len(beats) + 2
    with pytest.raises(Abandon):
        source.fetch()


# -- command line ------------------------------------------------------------------------------------


def test_run_subcommand_is_registered():
    args = cli.build_parser().parse_args(["run"])
    assert args.func is daemon.main and args.needs_config is False


def test_invalid_config_at_start_exits_78(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("source: {type: file}\nrun_as: {expression: '${path:userName}'}\ndaemon: {interval_seconds: 1}\n")
    assert cli.main(["--config", str(path)]) == Exit.CONFIG
    assert cli.main(["--config", str(path), "run"]) == Exit.CONFIG
    err = capsys.readouterr().err
    assert "daemon.interval_seconds: must be at least 10" in err


def test_daemon_config_cross_check():
    with pytest.raises(ConfigError) as info:
        cfg(backoff_initial_seconds=500, backoff_max_seconds=300)
    assert "daemon.backoff_initial_seconds: must not exceed daemon.backoff_max_seconds" in info.value.problems


def test_changes_applied_but_not_recorded_are_a_partial_sync_that_says_which_file():
    def step(h, progress):
        result = FakeResult(created=2)
        result.status = SyncStatus.PARTIAL
        result.unrecorded = ["/var/lib/runas-agent/directory.json: cannot write: No space left on device"]
        return result

    h = Harness([step])
    h.run()
    (record,) = [r for r in h.records if r.get("SYNC_RESULT")]
    assert record["SYNC_RESULT"] == "partial" and record["SYNC_CREATED"] == "2" and "SYNC_ATTEMPT" not in record
    assert record["SYNC_ERROR"] == ("the changes were applied, but /var/lib/runas-agent/directory.json: "
                                    "cannot write: No space left on device")
    assert "No space left on device" in record["MESSAGE"]
