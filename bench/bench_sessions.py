"""Benchmark of the session watcher: its CPU and memory on a host with ~1,000 processes and no
sessions, the cost of one look at the process table, and the delay from a session's start (and end)
to its record.

    python bench/bench_sessions.py [--processes 1000] [--idle 30] [--sessions 20]

Run as root on Linux. Sessions are staged as in the tests (a state file renamed into current/, a root
`ssm-session-worker <sessionId>` process, a shell beneath it running as nobody); records go to an
audit file in a temporary directory. Nothing outside that directory is changed, and every process
the benchmark starts is ended. Prints a table; --json for machines.
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

from runas_agent import config  # noqa: E402
from runas_agent.sessions import host  # noqa: E402
from runas_agent.sessions.records import RecordSink  # noqa: E402
from runas_agent.sessions.watcher import SessionWatcher  # noqa: E402

NOBODY = 65534
WORKER_SCRIPT = """setpriv --reuid=%d --regid=%d --clear-groups sh -c 'sleep 100000; :' &
wait
""" % (NOBODY, NOBODY)


class TimingSink(RecordSink):
    """The real sink, noting when each record was written."""

    def __init__(self, audit_file: str):
        super().__init__(audit_file)
        self.times: dict[tuple[str, str], float] = {}
        self.cond = threading.Condition()

    def emit(self, message, message_id, fields, priority=6):
        where = super().emit(message, message_id, fields, priority)
        values = dict(fields)
        with self.cond:
            self.times[(values["RUNAS_EVENT"], values["RUNAS_SESSION_ID"])] = time.monotonic()
            self.cond.notify_all()
        return where

    def wait(self, event: str, sid: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while (event, sid) not in self.times:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no {event} record for {sid}")
                self.cond.wait(left)
            return self.times[(event, sid)]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1000, help="processes on the host during the run")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of watching with no session")
    parser.add_argument("--sessions", type=int, default=20, help="sessions per latency measurement")
    parser.add_argument("--burst", type=int, default=200, help="sessions starting at once")
    parser.add_argument("--poll-idle", type=float, default=20.0,
                        help="seconds of idle watching without inotify (directory mtimes polled)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (workers run as root, shells as nobody)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-sessions-"))
    filler: list[subprocess.Popen] = []
    workers: list[subprocess.Popen] = []
    try:
        current = tmp / "ssm" / "i-0123456789abcdef0" / "document" / "state" / "current"
        pending = current.parent / "pending"
        current.mkdir(parents=True)
        pending.mkdir()
        (tmp / "bin").mkdir()
        (tmp / "bin" / "ssm-session-worker").symlink_to(shutil.which("bash"))
        scripts = tmp / "scripts"
        scripts.mkdir()
        cfg = config.validate({
            "source": {"type": "file", "path": str(tmp / "directory.json")},
            "run_as": {"expression": "${path:enterprise.organization}"},
            "state_dir": str(tmp / "state"),
            "sessions": {"state_roots": [str(tmp / "ssm")], "audit_file": str(tmp / "audit.jsonl")},
        })

        while len(psutil.pids()) < args.processes:
            filler.append(subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL))
        processes = len(psutil.pids())

        # One look at the process table (what a new session or a reconcile costs).
        scans = []
        for _ in range(20):
            t = time.perf_counter()
            host.scan_workers()
            scans.append(time.perf_counter() - t)

        me = psutil.Process()
        rss_before = me.memory_info().rss
        sink = TimingSink(str(tmp / "audit.jsonl"))
        watcher = SessionWatcher(cfg, sink=sink)
        watcher.start()
        time.sleep(1.0)  # the first reconcile
        cpu0, wall0 = time.process_time(), time.monotonic()
        polls0 = dict(watcher.stats)
        time.sleep(args.idle)
        idle_cpu = time.process_time() - cpu0
        idle_wall = time.monotonic() - wall0
        idle_stats = {k: watcher.stats[k] - polls0[k] for k in polls0}
        rss_idle = me.memory_info().rss

        def stage(sid: str, worker_first: bool) -> float:
            doc = {"DocumentInformation": {"SessionOwner": f"arn:aws:sts::123456789012:assumed-role/"
                                           f"AWSReservedSSO_Bench_0123456789abcdef/{sid.rsplit('-', 1)[0]}",
                                           "RunAsUser": "nobody"}}
            (pending / sid).write_text(json.dumps(doc))
            (scripts / sid).write_text(WORKER_SCRIPT)

            def spawn():
                proc = subprocess.Popen([str(tmp / "bin" / "ssm-session-worker"), sid], cwd=scripts,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
                workers.append(proc)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    if any(c.uids().real == NOBODY for c in psutil.Process(proc.pid).children()):
                        return
                    time.sleep(0.002)
                raise RuntimeError("no shell")

            if worker_first:
                spawn()
                t0 = time.monotonic()
                os.rename(pending / sid, current / sid)
            else:
                t0 = time.monotonic()
                os.rename(pending / sid, current / sid)
                time.sleep(0.05)
                spawn()
            return t0

        results = {}
        for label, worker_first in (("worker and shell already running", True),
                                    ("state file first, shell 50 ms later", False)):
            delays, end_delays = [], []
            for i in range(args.sessions):
                sid = f"bench{i}@example.com-{(i + (1000 if worker_first else 0)):017x}"
                t0 = stage(sid, worker_first)
                delays.append(sink.wait("start", sid) - t0)
                t1 = time.monotonic()
                (current / sid).unlink()
                end_delays.append(sink.wait("end", sid) - t1)
                proc = workers.pop()
                for p in [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True):
                    p.kill()
                proc.wait()
            results[label] = {"start_ms": delays, "end_ms": end_delays}

        # A burst: many sessions whose state files appear at once (workers and shells already up).
        burst_sids = [f"burst{i}@example.com-{(5000 + i):017x}" for i in range(args.burst)]
        for sid in burst_sids:
            doc = {"DocumentInformation": {"SessionOwner": "arn:aws:sts::123456789012:assumed-role/"
                                           f"AWSReservedSSO_Bench_0123456789abcdef/{sid.rsplit('-', 1)[0]}",
                                           "RunAsUser": "nobody"}, "DocumentType": "StartSession"}
            (pending / sid).write_text(json.dumps(doc))
            (scripts / sid).write_text(WORKER_SCRIPT)
            workers.append(subprocess.Popen([str(tmp / "bin" / "ssm-session-worker"), sid], cwd=scripts,
                                            stdin=subprocess.DEVNULL, start_new_session=True))
        deadline = time.monotonic() + 60
        while sum(1 for w in workers for c in psutil.Process(w.pid).children() if c.uids().real == NOBODY) < args.burst:
            if time.monotonic() > deadline:
                raise RuntimeError("burst shells did not start")
            time.sleep(0.05)
        burst_processes = len(psutil.pids())
        cpu0, t0 = time.process_time(), time.monotonic()
        for sid in burst_sids:
            os.rename(pending / sid, current / sid)
        last_start = max(sink.wait("start", sid, 120) for sid in burst_sids)
        burst_start_cpu = time.process_time() - cpu0
        cpu1, t1 = time.process_time(), time.monotonic()
        for sid in burst_sids:
            (current / sid).unlink()
        last_end = max(sink.wait("end", sid, 120) for sid in burst_sids)
        burst_end_cpu = time.process_time() - cpu1
        burst = {"sessions": args.burst, "processes": burst_processes,
                 "all_starts_recorded_s": last_start - t0, "start_cpu_s": burst_start_cpu,
                 "all_ends_recorded_s": last_end - t1, "end_cpu_s": burst_end_cpu}
        watcher.close()

        # Without inotify: the state directories' mtimes compared every 2 s.
        polling = SessionWatcher(cfg, sink=sink, use_inotify=False)
        polling.start()
        time.sleep(1.0)
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(args.poll_idle)
        poll_idle_cpu, poll_idle_wall = time.process_time() - cpu0, time.monotonic() - wall0
        polling.close()

        report = {
            "processes": processes,
            "process_table_look_ms": {"median": statistics.median(scans) * 1000, "max": max(scans) * 1000},
            "idle_seconds": round(idle_wall, 1),
            "idle_cpu_seconds": idle_cpu,
            "idle_cpu_percent": 100 * idle_cpu / idle_wall,
            "idle_polls": idle_stats,
            "rss_mib_process": rss_idle / 2**20,
            "rss_mib_added_by_watcher": (rss_idle - rss_before) / 2**20,
            "reconcile_interval_s": cfg.sessions.reconcile_interval,
            "burst": burst,
            "idle_without_inotify": {"seconds": round(poll_idle_wall, 1), "cpu_seconds": poll_idle_cpu,
                                     "cpu_percent": 100 * poll_idle_cpu / poll_idle_wall},
            "latency": {label: {kind: {"median": statistics.median(v) * 1000, "p95": pct(v, 95) * 1000,
                                       "max": max(v) * 1000} for kind, v in r.items()}
                        for label, r in results.items()},
        }
    finally:
        for proc in workers:
            try:
                for p in [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True):
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        for proc in filler:
            proc.kill()
        for proc in filler + workers:
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"host: {report['processes']} processes, no session, watcher idle for {report['idle_seconds']} s "
          f"(reconcile every {report['reconcile_interval_s']:g} s)")
    print(f"  CPU while idle:            {report['idle_cpu_seconds'] * 1000:.1f} ms  "
          f"({report['idle_cpu_percent']:.3f} % of one core); polls {report['idle_polls']['polls']}, "
          f"process-table looks {report['idle_polls']['process_scans']}")
    print(f"  one process-table look:    {report['process_table_look_ms']['median']:.1f} ms median, "
          f"{report['process_table_look_ms']['max']:.1f} ms max")
    print(f"  memory: process RSS {report['rss_mib_process']:.1f} MiB, added by the watcher "
          f"{report['rss_mib_added_by_watcher']:.2f} MiB")
    b = report["burst"]
    print(f"  burst of {b['sessions']} sessions ({b['processes']} processes): all starts recorded after "
          f"{b['all_starts_recorded_s']:.2f} s using {b['start_cpu_s']:.2f} s CPU; all ends after "
          f"{b['all_ends_recorded_s']:.2f} s using {b['end_cpu_s']:.2f} s CPU")
    p = report["idle_without_inotify"]
    print(f"  idle without inotify (mtimes every 2 s): {p['cpu_seconds'] * 1000:.1f} ms CPU in {p['seconds']} s "
          f"({p['cpu_percent']:.3f} % of one core)")
    for label, r in report["latency"].items():
        s, e = r["start_ms"], r["end_ms"]
        print(f"  {label}: start record after {s['median']:.1f} ms median / {s['p95']:.1f} p95 / "
              f"{s['max']:.1f} max; end record after {e['median']:.1f} / {e['p95']:.1f} / {e['max']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
