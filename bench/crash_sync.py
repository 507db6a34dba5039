"""Crash campaign of whole syncs: `runas-agent --once` SIGKILLed at every step of each phase (first
sync, disable, re-enable, rename, a name changing hands in two syncs; see tests/hosts/sync_crash.py)
and at seeded random moments within each
phase's uninterrupted duration, in isolated hosts; then plain syncs. Counts the trials, the kills
that landed, and the trials that converged to the uninterrupted run's state.

    python bench/crash_sync.py [--random 30] [--seed 7] [--json]

Run as root on Debian 12 (this machine's accounts are never touched). The small seeded sample that
runs with the tests: tests/integration/test_sync_crash.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "agent"))

from tests.hosts import sync_crash  # noqa: E402


def points(rng: random.Random, ref: sync_crash.Reference, randoms: int) -> list[tuple[str, str]]:
    out = [(phase, step) for phase in sync_crash.PHASES for step in sync_crash.STEPS]
    for _ in range(randoms):
        phase = rng.choice(sync_crash.PHASES)
        out.append((phase, f"t={rng.uniform(0, ref.seconds[phase]):.3f}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--random", type=int, default=30, help="random-moment trials")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the isolated hosts need mount namespaces")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="runas-crash-") as tmp:
        ref = sync_crash.reference(Path(tmp) / "reference")
        trials = []
        for index, (phase, step) in enumerate(points(rng, ref, args.random)):
            result = sync_crash.trial(Path(tmp) / f"trial-{index}", ref, phase, step)
            trials.append(result)
            if not args.json:
                print(f"{phase:>9} {step:>14}: {result.ended}, {result.syncs} sync(s) after, "
                      f"{'converged' if result.converged else 'NOT converged: ' + result.problems}", flush=True)
    killed = [t for t in trials if t.ended == "killed"]
    summary = {"trials": len(trials), "killed": len(killed), "converged": sum(t.converged for t in trials),
               "killed_and_converged": sum(t.converged for t in killed),
               "most_syncs_after": max((t.syncs for t in trials), default=0),
               "reference_seconds": {k: round(v, 2) for k, v in ref.seconds.items()}}
    print(json.dumps(summary if not args.json else {**summary, "trials_detail": [t.__dict__ for t in trials]}, indent=1))
    return 0 if summary["converged"] == summary["trials"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
