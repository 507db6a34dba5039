"""Benchmark of the Identity Store read: 1,000 and 10,000 identities (one group per 50 users) read
by IdentityStoreSource through the real boto3 client from the local Identity Store endpoint
(`python -m tests.endpoint`, in its own process). Reports Identity Store calls made against the
minimum (ceil(users/100) ListUsers + ceil(groups/100) ListGroups + one ListGroupMemberships page per
100 members of each group), the read time, and the read time per page.

    python bench/bench_identitystore_read.py [--sizes 1000 10000] [--repeat 3] [--json]

The endpoint is local: the time per page is botocore's and the endpoint's own cost, without the
network latency of the real service.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runas_agent import config  # noqa: E402
from runas_agent.sources.identitystore import IdentityStoreSource  # noqa: E402
from tests.endpoint.directories import make_directory  # noqa: E402

REGION = "eu-west-1"
USERS_PER_GROUP = 50


def minimum_calls(document: dict) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for membership in document["GroupMemberships"]:
        sizes[membership["GroupId"]] = sizes.get(membership["GroupId"], 0) + 1
    return {
        "ListUsers": max(1, math.ceil(len(document["Users"]) / 100)),
        "ListGroups": max(1, math.ceil(len(document["Groups"]) / 100)),
        "ListGroupMemberships": sum(max(1, math.ceil(sizes.get(g["GroupId"], 0) / 100)) for g in document["Groups"]),
    }


def control(url: str, what: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}/_endpoint/{what}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.load(answer)


def bench_size(url: str, users: int, repeat: int) -> dict:
    document = make_directory(users, users_per_group=USERS_PER_GROUP)
    started = time.perf_counter()
    store_id = control(url, "seed", "POST", document)["IdentityStoreId"]
    seed_seconds = time.perf_counter() - started
    minimum = minimum_calls(document)
    cfg = config.validate({"source": {"region": REGION, "identity_store_id": store_id, "endpoint_url": url},
                           "run_as": {"expression": "${path:userName}"}})
    source = IdentityStoreSource.from_settings(cfg.source)
    runs = []
    for _ in range(repeat):
        control(url, "reset-calls", "POST")
        started = time.perf_counter()
        fetched = source.fetch()
        seconds = time.perf_counter() - started
        made = control(url, "calls")["calls"]
        if len(fetched.directory.users) != users:
            raise SystemExit(f"read {len(fetched.directory.users)} users of {users}")
        if made != fetched.stats["calls"]:
            raise SystemExit(f"the endpoint counted {made}, the source {fetched.stats['calls']}")
        runs.append((seconds, made, fetched.stats["seconds_by_call"]))
    seconds = statistics.median(s for s, _, _ in runs)
    made = runs[-1][1]
    by_call = min(runs, key=lambda r: abs(r[0] - seconds))[2]
    pages = sum(made.values())
    return {
        "users": users,
        "groups": len(document["Groups"]),
        "memberships": len(document["GroupMemberships"]),
        "seed_seconds": round(seed_seconds, 3),
        "calls": made,
        "minimum": minimum,
        "ratio": round(pages / sum(minimum.values()), 2),
        "read_seconds": round(seconds, 3),
        "ms_per_page": round(1000 * seconds / pages, 2),
        "ms_per_page_by_call": {op: round(1000 * by_call.get(op, 0) / n, 2) for op, n in made.items()},
        "runs": [round(s, 3) for s, _, _ in runs],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3, help="reads per size; the median is reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", env["AWS_ACCESS_KEY_ID"])
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", env["AWS_SECRET_ACCESS_KEY"])
    os.environ.pop("AWS_ENDPOINT_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.endpoint", "--port", "0", "--region", REGION, "--no-check"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
    )
    try:
        url = server.stdout.readline().strip()
        if not url.startswith("http://"):
            raise SystemExit("the local endpoint did not start")
        results = [bench_size(url, n, args.repeat) for n in args.sizes]
    finally:
        server.terminate()
        server.wait(timeout=10)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'users':>7} {'groups':>6} {'calls made':>10} {'minimum':>8} {'ratio':>6} {'read s':>8} {'ms/page':>8}  calls (ms/page) by operation")
    for r in results:
        by_op = ", ".join(f"{op} {n} ({r['ms_per_page_by_call'][op]:.1f})" for op, n in sorted(r["calls"].items()))
        print(f"{r['users']:>7} {r['groups']:>6} {sum(r['calls'].values()):>10} {sum(r['minimum'].values()):>8} "
              f"{r['ratio']:>6.2f} {r['read_seconds']:>8.2f} {r['ms_per_page']:>8.2f}  {by_op}")
    return 0 if all(r["ratio"] == 1.0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
