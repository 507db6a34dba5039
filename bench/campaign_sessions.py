"""A long campaign of random interleavings of the SSM agent's session lifecycles with the watcher's
looks, on the simulated host the unit tests use (tests/unit/sessions_lifecycles.py): one start and one
end per session, in that order, never `root` for a Run As session, nothing left behind. The test suite
runs a seeded sample of 150; this runs as many as asked.

    python bench/campaign_sessions.py [--examples 20000] [--seed 1]

Pure: no process, file or account is touched. Exits 1 with the smallest failing interleaving found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "agent"))
sys.path.insert(0, str(REPO))

import hypothesis.strategies as st  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.unit.sessions_lifecycles import run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    played = {"interleavings": 0, "sessions": 0}

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def campaign(data):
        host = run(data)
        played["interleavings"] += 1
        played["sessions"] += len({e.session.session_id for e in host.events})

    started = time.monotonic()
    try:
        campaign()
    except AssertionError as exc:
        print(f"FAILED after {played['interleavings']} interleavings: {exc}")
        return 1
    print(f"{played['interleavings']} interleavings, {played['sessions']} sessions: every one with one start and "
          f"one end, none as root, in {time.monotonic() - started:.0f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
