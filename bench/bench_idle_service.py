"""Benchmark of the idle service: resident memory and CPU per hour of `runas-agent` running as its
systemd unit (with the session watcher) in a booted Debian container, between syncs.

    python bench/bench_idle_service.py [--seconds 60] [--users 200] [--processes 1000] [--json]

Boots a container (tests/hosts/container.py), installs the project and systemd/runas-agent.service
unchanged, serves `--users` identities from the local test endpoint, starts the service and waits
for its first sync. Then, with an SSM agent's state directories present and `--processes` sleeping
processes on the host (the session watcher's process scans see them), it samples the main process
for `--seconds`: CPU time and timeslices of every thread (/proc/PID/task/*/schedstat, in
nanoseconds; each timeslice is a wakeup), resident and proportional memory (VmRSS, VmHWM, Pss from
smaps_rollup), and extrapolates to an hour. Finally it measures one no-change sync (a reload syncs
at once), so that the hourly cost at the default interval can be added up. Run as root; the container
is powered off at the end and nothing on this machine changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hosts.container import BootedContainer  # noqa: E402
from tests.hosts.service import MESSAGE_SYNC, UNIT, Host, binds, config, directory, install  # noqa: E402
from tests.hosts.wheels import agent_wheelhouse  # noqa: E402

STATE_DIR = "/var/lib/amazon/ssm/i-0123456789abcdef0/document/state"


def sample(host: Host, pid: str) -> dict[str, float]:
    status = dict(line.split(":", 1) for line in host.ct.read_file(f"/proc/{pid}/status").decode().splitlines() if ":" in line)
    rollup = host.ct.read_file(f"/proc/{pid}/smaps_rollup").decode()
    pss = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return {
        "t": time.monotonic(),
        "rss_kib": int(status["VmRSS"].split()[0]),
        "hwm_kib": int(status["VmHWM"].split()[0]),
        "pss_kib": pss,
        "threads": int(status["Threads"]),
    }


def per_thread(host: Host, pid: str) -> tuple[float, int]:
    """(CPU seconds, context switches) summed over every thread, from each thread's schedstat
    (nanoseconds on CPU, then timeslices; the process's own stat line only has clock ticks)."""
    script = f"cat /proc/{pid}/task/*/schedstat"
    cpu_ns = slices = 0
    for line in host.sh("sh", "-c", script).stdout.splitlines():
        on_cpu, _, timeslices = line.split()
        cpu_ns += int(on_cpu)
        slices += int(timeslices)
    return cpu_ns / 1e9, slices


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window measured (default: %(default)s)")
    parser.add_argument("--users", type=int, default=200, help="identities in the directory (default: %(default)s)")
    parser.add_argument("--processes", type=int, default=1000, help="extra sleeping processes on the host (default: %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root (systemd-nspawn)")

    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        wheelhouse = agent_wheelhouse(Path(tmp) / "wheels")
        with BootedContainer(bind_ro=binds(wheelhouse)) as ct:
            host = install(ct, page_size=100)
            names = [f"user{i:04d}" for i in range(args.users)]
            host.set_directory(directory(names))
            host.write_config(config())  # daemon defaults but for the interval: no sync inside the window
            for sub in ("pending", "current", "completed"):
                host.sh("mkdir", "-p", f"{STATE_DIR}/{sub}")
            if args.processes:
                host.sh("systemd-run", "--unit=bench-sleepers", "/bin/sh", "-c",
                        f"i=0; while [ $i -lt {args.processes} ]; do sleep 100000 & i=$((i+1)); done; wait")
                host.wait_for(lambda: int(host.sh("sh", "-c", "ls -d /proc/[0-9]* | wc -l").stdout) >= args.processes,
                              what="the sleeping processes")
            started = time.monotonic()
            host.sh("systemctl", "start", UNIT, timeout=300)
            first_sync = time.monotonic() - started
            pid = host.show("MainPID")["MainPID"]
            n_proc = int(host.sh("sh", "-c", "ls -d /proc/[0-9]* | wc -l").stdout)
            time.sleep(3)  # let the start settle (imports, first watcher scan)

            a, (ca, wa) = sample(host, pid), per_thread(host, pid)
            time.sleep(args.seconds)
            b, (cb, wb) = sample(host, pid), per_thread(host, pid)
            elapsed = b["t"] - a["t"]

            syncs_before = len(host.records(f"MESSAGE_ID={MESSAGE_SYNC}"))
            cc, _ = per_thread(host, pid)
            host.sh("systemctl", "reload", UNIT)
            host.wait_for(lambda: len(host.records(f"MESSAGE_ID={MESSAGE_SYNC}")) > syncs_before, what="the sync")
            d, (cd, _) = sample(host, pid), per_thread(host, pid)
            record = host.records(f"MESSAGE_ID={MESSAGE_SYNC}")[-1]
            interval = 900  # daemon.interval_seconds default, plus on average half of jitter_seconds (120)
            syncs_per_hour = 3600 / (interval + 60)

    idle_cpu_h = (cb - ca) * 3600 / elapsed
    sync_cpu = cd - cc
    result = {
        "users": args.users,
        "host_processes": n_proc,
        "window_seconds": round(elapsed, 1),
        "first_sync_seconds_to_active": round(first_sync, 2),
        "idle_rss_kib": b["rss_kib"],
        "idle_pss_kib": b["pss_kib"],
        "peak_rss_kib": d["hwm_kib"],
        "threads": b["threads"],
        "idle_cpu_seconds_per_hour": round(idle_cpu_h, 3),
        "idle_timeslices_per_hour": round((wb - wa) * 3600 / elapsed),
        "nochange_sync_cpu_seconds": round(sync_cpu, 3),
        "nochange_sync_seconds": float(record["SYNC_SECONDS"]),
        "cpu_seconds_per_hour_with_syncs": round(idle_cpu_h + syncs_per_hour * sync_cpu, 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
