"""Benchmark of the pure account planner: a first plan for N identities on an empty host, and a plan
after a tenth of them were renamed in the directory (every account made, the host as the first plan
left it). Planning only: no host is read or changed.

    python bench/bench_plan.py [--sizes 2000 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from runas_agent.core import naming  # noqa: E402
from runas_agent.core.desired import Settings, compute  # noqa: E402
from runas_agent.core.expression import parse  # noqa: E402
from runas_agent.core.ledger import Ledger  # noqa: E402
from runas_agent.core.observed import HostGroup, HostState, HostUser  # noqa: E402
from runas_agent.core.plan import PlanSettings, plan  # noqa: E402
from runas_agent.directory import make_document, parse_document  # noqa: E402

SETTINGS = Settings(parse("${path:userName}"), "person", naming.DEBIAN)


def desired(users):
    return compute(parse_document(make_document("d-1234567890", users, [], [])), SETTINGS)


def run(n: int) -> tuple[float, float, int]:
    users = [{"UserId": f"id-{i}", "UserName": f"user{i}", "DisplayName": "U", "UserStatus": "ENABLED"} for i in range(n)]
    status = {u["UserId"]: True for u in users}
    want = desired(users)
    started = time.perf_counter()
    first = plan(want, HostState.build([], []), Ledger(), PlanSettings(), status)
    first_s = time.perf_counter() - started
    host = HostState.build([HostUser(a.name, a.uid, a.gid, a.comment, a.home, a.shell) for a in first.actions],
                           [HostGroup(a.name, a.gid, ()) for a in first.actions])
    renamed = desired([dict(u, UserName="r" + u["UserName"]) if i % 10 == 0 else u for i, u in enumerate(users)])
    started = time.perf_counter()
    again = plan(renamed, host, first.ledger, PlanSettings(), status, force=True)
    return first_s, time.perf_counter() - started, len(again.actions)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    args = parser.parse_args()
    print(f"{'identities':>10} {'first plan s':>13} {'10% renamed s':>14} {'actions':>8}")
    for n in args.sizes:
        first_s, renamed_s, actions = run(n)
        print(f"{n:>10} {first_s:>13.2f} {renamed_s:>14.2f} {actions:>8}")


if __name__ == "__main__":
    main()
