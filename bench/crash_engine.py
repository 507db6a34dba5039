"""Crash campaign of the account engine: SIGKILL at every step of its write and of its homes'
creation, then at many seeded random moments, each trial judged as in
tests/integration/test_accountdb_crash.py (consistent at once, useradd works, one re-run reaches
exactly the state of an uninterrupted run). In isolated hosts; this machine's accounts are never
touched.

    python bench/crash_engine.py [--random 100] [--seed 7] [--new 40]

Prints trials, how many the kill interrupted mid-work, and how many converged; every trial that
did not converge with its problems. Run as root on Debian 12.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hosts.engine_crash import Campaign  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--random", type=int, default=100, help="trials killed at random moments")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--new", type=int, default=40, help="accounts each trial creates")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the isolated hosts need mount namespaces")
    workdir = Path(tempfile.mkdtemp(prefix="runas-crash-"))
    try:
        campaign = Campaign(workdir, new=args.new)
        rng = random.Random(args.seed)
        trials = [campaign.at_step(label) for label in campaign.steps()]
        trials += [campaign.at_random(rng) for _ in range(args.random)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {"trials": len(trials), "killed": sum(t.killed == -9 for t in trials),
               "mid_work": sum(t.mid_work for t in trials), "converged": sum(t.converged for t in trials),
               "uninterrupted_run_s": round(campaign.duration, 3), "seed": args.seed, "new": args.new,
               "failures": [{"point": t.point, "problems": t.problems} for t in trials if not t.converged]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['trials']} trials ({len(campaign.steps())} at each step, {args.random} at random moments, "
              f"seed {args.seed}, {args.new} creates each): {summary['killed']} killed, "
              f"{summary['mid_work']} of them mid-work, {summary['converged']} converged")
        for failure in summary["failures"]:
            print(f"  {failure['point']}: {failure['problems']}")
    return 0 if not summary["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
