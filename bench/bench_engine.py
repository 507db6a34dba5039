"""Benchmark of the account engine alone (core/accountdb.py, host/accountdb.py, host/homes.py): a
first write of N accounts with 0700 homes and the host's skeleton, then a no-op run, in an isolated
host (a mount namespace over a copy of /etc; this machine's accounts are never touched).

    python bench/bench_engine.py [--sizes 1000 10000 50000] [--runs 3] [--json]

Each size runs --runs times on a fresh host; medians are printed. Per phase: load (read the four
databases), edits (N add_account), homes (N homes with the skeleton), commit (lock,
re-read, write the changed files, unlock, nscd/sssd); syncfs is the one sync of /home's filesystem
between the homes and the databases (on a shared machine it also flushes what others wrote). "whole" is the engine process from start to
exit, Python's start-up included; the no-op run loads the same host, finds every account present
and writes nothing. Peak memory is the engine process's ru_maxrss. Run as root on Debian 12.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hosts.engine import UID_BASE, add_op, driver_argv, env, write_spec  # noqa: E402
from tests.hosts.namespace import IsolatedHost  # noqa: E402


def ops(n: int) -> list:
    return [add_op(f"user{i:05d}@example.com", UID_BASE + i, comment=f"runas-agent User {i}") for i in range(n)]


def etc_files(host: IsolatedHost) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in host.etc.iterdir() if p.is_file()}


def timed(host: IsolatedHost, spec: dict) -> tuple[float, dict]:
    argv = driver_argv(write_spec(host, spec))
    started = time.perf_counter()
    proc = host.run(argv, env=env(), check=False, timeout=3600)
    whole = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"engine failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return whole, json.loads(proc.stdout.strip().splitlines()[-1])


def one_run(n: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="runas-bench-engine-")
    try:
        host = IsolatedHost(Path(tmp) / "host")
        batch = ops(n)
        whole, report = timed(host, {"ops": batch})
        assert not report["refused"] and not report["home_failures"], report
        assert report["written"] == ["gshadow", "group", "shadow", "passwd"]
        assert len(report["homes"]) == n and set(report["homes"].values()) == {"created"}
        assert host.id(f"user{n - 1:05d}@example.com").returncode == 0
        before = etc_files(host)
        noop, again = timed(host, {"ops": batch, "converge": True})
        assert again["written"] == [] and etc_files(host) == before, "the no-op run wrote something"
        return {"whole_s": whole, **{f"{k}_s": v for k, v in report["seconds"].items()},
                "per_account_ms": 1000 * whole / n, "maxrss_mib": report["maxrss_kib"] / 1024,
                "noop_whole_s": noop, "noop_in_engine_s": sum(again["seconds"].values()),
                "noop_maxrss_mib": again["maxrss_kib"] / 1024}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(n: int, runs: int) -> dict:
    rows = [one_run(n) for _ in range(runs)]
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {"accounts": n, "runs": runs, "median": median, "all": rows}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the isolated host needs a mount namespace")
    results = [bench(n, args.runs) for n in args.sizes]
    by_size = {r["accounts"]: r["median"] for r in results}
    ratio = (by_size[10000]["per_account_ms"] / by_size[1000]["per_account_ms"]
             if 1000 in by_size and 10000 in by_size else None)
    if args.json:
        print(json.dumps({"results": results, "per_account_ratio_10k_1k": ratio}, indent=2))
        return 0
    print(f"medians of {args.runs} runs")
    print(f"{'accounts':>8} {'whole':>8} {'per acct':>9} {'load':>6} {'edits':>6} {'homes':>7} {'syncfs':>7} {'commit':>7} "
          f"{'peak RSS':>9} {'no-op':>7} {'no-op RSS':>10}")
    for r in results:
        m = r["median"]
        print(f"{r['accounts']:>8} {m['whole_s']:>7.2f}s {m['per_account_ms']:>7.3f}ms {m['load_s']:>5.2f}s "
              f"{m['edits_s']:>5.2f}s {m['homes_s']:>6.2f}s {m['syncfs_s']:>6.2f}s {m['commit_s']:>6.2f}s {m['maxrss_mib']:>6.1f}MiB "
              f"{m['noop_whole_s']:>6.2f}s {m['noop_maxrss_mib']:>7.1f}MiB")
    if ratio is not None:
        print(f"per-account cost, 10,000 vs 1,000: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
