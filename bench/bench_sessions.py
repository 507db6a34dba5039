"""Benchmark of the session watcher against sessions run the way the SSM agent runs them: its CPU and
memory on a host with ~1,000 processes and no session, the cost of one look at the process table, the
delay from a session's start (and end) to its record, and a burst of sessions starting at once.

    python bench/bench_sessions.py [--processes 1000] [--idle 125] [--sessions 20] [--burst 200]

Run as root on Linux. Sessions are run by the test suite's stand-in SSM agent (tests/hosts/ssm_agent.py,
ssm_worker.py): the state file written under pending/, renamed into current/, rewritten in place and
deleted; a root `ssm-session-worker <sessionId>` that runs its `sh -c "id nobody"` look-ups, then a
shell as nobody on a pty; the person's `exit`, the last rewrite, the deletion, the worker's last 3 s.
Records go to an audit file in a temporary directory; nothing outside it is changed, and every process
the benchmark starts is ended. The watcher's CPU is its own thread's (the stand-in runs in the same
process). Prints a table; --json for machines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "agent"))
sys.path.insert(0, str(REPO))

from runas_agent import config  # noqa: E402
from runas_agent.sessions import host  # noqa: E402
from runas_agent.journal import Journal  # noqa: E402
from runas_agent.sessions.watcher import SessionWatcher  # noqa: E402
from tests.hosts.ssm_agent import Options, SsmAgent  # noqa: E402

RUN_AS = "nobody"
INSTANCE = "i-0123456789abcdef0"


class TimingSink(Journal):
    """The real journal writer, noting when each record was written."""

    def __init__(self, audit_file: str):
        super().__init__(audit_file)
        self.times: dict[tuple[str, str], float] = {}
        self.fields: dict[tuple[str, str], dict] = {}
        self.cond = threading.Condition()

    def write(self, record):
        where = super().write(record)
        values = dict(record.fields)
        with self.cond:
            key = (values["RUNAS_EVENT"], values["RUNAS_SESSION_ID"])
            self.times.setdefault(key, time.monotonic())
            self.fields[key] = values
            self.cond.notify_all()
        return where

    def wait(self, event: str, sid: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while (event, sid) not in self.times:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no {event} record for {sid}")
                self.cond.wait(left)
            return self.times[(event, sid)]


class StandIn(SsmAgent):
    """The stand-in agent, noting when each state file was renamed into current/ and deleted, and
    when each shell started."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.renamed: dict[str, float] = {}
        self.removed: dict[str, float] = {}

    def _move(self, sid, src, dst):
        super()._move(sid, src, dst)
        if (src, dst) == ("pending", "current"):
            self.renamed[sid] = time.monotonic()

    def _remove(self, sid):
        super()._remove(sid)
        self.removed.setdefault(sid, time.monotonic())

    def shell_time(self, sid: str, timeout: float = 60.0) -> float:
        """When the master learnt of the shell (the worker reports its pid as soon as it started it)."""
        session = self.sessions[sid]
        if not session.shell_started.wait(timeout):
            raise RuntimeError(f"no shell for {sid}")
        return session.shell_at


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values) * 1000, "p95": pct(values, 95) * 1000, "max": max(values) * 1000}


def thread_cpu(native_id: int) -> float:
    for t in psutil.Process().threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    return 0.0


def owner(sid: str) -> str:
    return f"arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Bench_0123456789abcdef/{sid.rsplit('-', 1)[0]}"


def sequential(agent: StandIn, sink: TimingSink, count: int, base: int) -> dict:
    """Sessions one after another: start (state file, worker, id look-ups, shell), then `exit`."""
    to_record, shell_to_record, end_delays = [], [], []
    for i in range(count):
        sid = f"bench{i}@example.com-{base + i:017x}"
        agent.start(sid, Options(owner=owner(sid), run_as=RUN_AS), wait_shell=0)
        start = sink.wait("start", sid)
        to_record.append(start - agent.renamed[sid])
        shell_to_record.append(max(0.0, start - agent.shell_time(sid)))
        if sink.fields[("start", sid)].get("RUNAS_ACCOUNT_SOURCE") != "shell":
            raise RuntimeError(f"{sid}: recorded without its shell")
        agent.exit(sid)
        end_delays.append(sink.wait("end", sid) - agent.removed[sid])
    return {"file_to_start_record": to_record, "shell_to_start_record": shell_to_record,
            "file_removed_to_end_record": end_delays}


def burst(agent: StandIn, sink: TimingSink, watcher: SessionWatcher, count: int) -> dict:
    """`count` sessions started at once (as fast as the stand-in can start them), then all ended."""
    sids = [f"burst{i}@example.com-{5000 + i:017x}" for i in range(count)]
    started = _burst_starts(agent, sink, watcher, sids)
    processes = len(psutil.pids())
    cpu1 = thread_cpu(watcher._thread.native_id)
    for sid in sids:
        agent.exit(sid, wait=0)
    last_end = max(sink.wait("end", sid, 300) for sid in sids)
    last_removed = max(agent.removed[sid] for sid in sids)
    return {"sessions": count, "processes": processes, **started,
            "last_removal_to_last_end_record_ms": max(0.0, last_end - last_removed) * 1000,
            "end_cpu_s": thread_cpu(watcher._thread.native_id) - cpu1}


def _burst_starts(agent: StandIn, sink: TimingSink, watcher: SessionWatcher, sids: list[str]) -> dict:
    cpu0 = thread_cpu(watcher._thread.native_id)
    for sid in sids:
        agent.start(sid, Options(owner=owner(sid), run_as=RUN_AS), wait_shell=0)
    last_start = max(sink.wait("start", sid, 300) for sid in sids)
    last_shell = max(agent.shell_time(sid) for sid in sids)
    return {"first_file_to_last_start_record_s": last_start - min(agent.renamed[sid] for sid in sids),
            "last_shell_to_last_start_record_ms": max(0.0, last_start - last_shell) * 1000,
            "recorded_without_shell": sum(1 for sid in sids
                                          if sink.fields[("start", sid)].get("RUNAS_ACCOUNT_SOURCE") != "shell"),
            "start_cpu_s": thread_cpu(watcher._thread.native_id) - cpu0}


def idle(watcher: SessionWatcher, seconds: float) -> tuple[float, float, dict]:
    time.sleep(1.0)  # the first reconcile
    native = watcher._thread.native_id
    cpu0, wall0, stats0 = thread_cpu(native), time.monotonic(), dict(watcher.stats)
    time.sleep(seconds)
    return thread_cpu(native) - cpu0, time.monotonic() - wall0, {k: watcher.stats[k] - stats0[k] for k in stats0}


def measure(args: argparse.Namespace, tmp: Path, filler: list) -> dict:
    cfg = config.validate({
        "source": {"type": "file", "path": str(tmp / "directory.json")},
        "run_as": {"expression": "${path:enterprise.organization}"},
        "state_dir": str(tmp / "state"),
        "sessions": {"state_roots": [str(tmp / "ssm")], "audit_file": str(tmp / "audit.jsonl")},
    })
    load_before = os.getloadavg()
    agent = StandIn(tmp / "ssm", INSTANCE, tmp / "bin", zombie_timeout=5.0)
    try:
        while len(psutil.pids()) < args.processes:
            filler.append(subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL))
        processes = len(psutil.pids())
        scans = []
        for _ in range(20):
            t = time.perf_counter()
            host.scan_workers()
            scans.append(time.perf_counter() - t)

        me = psutil.Process()
        rss_before = me.memory_info().rss
        sink = TimingSink(str(tmp / "audit.jsonl"))
        watcher = SessionWatcher(cfg, journal=sink)
        watcher.start()
        idle_cpu, idle_wall, idle_stats = idle(watcher, args.idle)
        rss_idle = me.memory_info().rss
        latency = sequential(agent, sink, args.sessions, 1000)
        bursts = burst(agent, sink, watcher, args.burst)
        watcher.close()

        polling = SessionWatcher(cfg, journal=sink, use_inotify=False)
        polling.start()
        poll_cpu, poll_wall, _ = idle(polling, args.poll_idle)
        polling.close()
    finally:
        agent.close()
    return {
        "processes": processes,
        "process_table_look_ms": {"median": statistics.median(scans) * 1000, "max": max(scans) * 1000},
        "idle_seconds": round(idle_wall, 1), "idle_cpu_seconds": idle_cpu, "idle_cpu_percent": 100 * idle_cpu / idle_wall,
        "idle_polls": idle_stats,
        "rss_mib_process": rss_idle / 2**20, "rss_mib_added_by_watcher": (rss_idle - rss_before) / 2**20,
        "reconcile_interval_s": cfg.sessions.reconcile_interval,
        "latency": {kind: summary(v) for kind, v in latency.items()},
        "burst": bursts,
        "idle_without_inotify": {"seconds": round(poll_wall, 1), "cpu_seconds": poll_cpu,
                                 "cpu_percent": 100 * poll_cpu / poll_wall},
        "load_average_before": load_before,
    }


def show(report: dict) -> None:
    print(f"host: {report['processes']} processes, no session, watcher idle for {report['idle_seconds']} s "
          f"(reconcile every {report['reconcile_interval_s']:g} s); load average before the run {report['load_average_before'][0]:.1f}")
    print(f"  CPU while idle:            {report['idle_cpu_seconds'] * 1000:.1f} ms  "
          f"({report['idle_cpu_percent']:.3f} % of one core); process-table looks {report['idle_polls']['process_scans']}")
    print(f"  one process-table look:    {report['process_table_look_ms']['median']:.1f} ms median, "
          f"{report['process_table_look_ms']['max']:.1f} ms max")
    print(f"  memory: process RSS {report['rss_mib_process']:.1f} MiB, added by the watcher "
          f"{report['rss_mib_added_by_watcher']:.2f} MiB")
    names = {"file_to_start_record": "state file renamed into current/ -> start record",
             "shell_to_start_record": "run-as shell started -> start record",
             "file_removed_to_end_record": "state file deleted -> end record"}
    for kind, s in report["latency"].items():
        print(f"  {names[kind]}: {s['median']:.1f} ms median / {s['p95']:.1f} p95 / {s['max']:.1f} max")
    b = report["burst"]
    print(f"  burst of {b['sessions']} sessions ({b['processes']} processes): last start record "
          f"{b['first_file_to_last_start_record_s']:.2f} s after the first state file, "
          f"{b['last_shell_to_last_start_record_ms']:.0f} ms after the last shell; {b['recorded_without_shell']} "
          f"recorded without their shell; watcher CPU {b['start_cpu_s']:.2f} s; ends: last end record "
          f"{b['last_removal_to_last_end_record_ms']:.0f} ms after the last deletion, watcher CPU {b['end_cpu_s']:.2f} s")
    p = report["idle_without_inotify"]
    print(f"  idle without inotify (mtimes every 2 s): {p['cpu_seconds'] * 1000:.1f} ms CPU in {p['seconds']} s "
          f"({p['cpu_percent']:.3f} % of one core)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1000, help="processes on the host during the run")
    parser.add_argument("--idle", type=float, default=125.0,
                        help="seconds of watching with no session (two reconciles at the default 60 s)")
    parser.add_argument("--sessions", type=int, default=20, help="sessions per latency measurement")
    parser.add_argument("--burst", type=int, default=200, help="sessions starting at once")
    parser.add_argument("--poll-idle", type=float, default=30.0,
                        help="seconds of idle watching without inotify (directory mtimes polled)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (workers run as root, shells as nobody)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    filler: list[subprocess.Popen] = []
    try:
        report = measure(args, tmp, filler)
    finally:
        for proc in filler:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
