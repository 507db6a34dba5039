"""Benchmark of reading a signed directory document the way the file and S3 sources do (size cap,
strict JSON, signature over the canonical bytes, records): bytes per person, peak memory of the
process and seconds, for generated directories of several sizes, each read in a fresh Python process
(as the agent is: boto3 and the agent imported first), then the last applied snapshot of the same size
beside it, as a sync holds both. What `source.max_document_bytes` and the unit's MemoryMax=512M mean
in people.

    python bench/bench_document.py [--users 1000 10000 50000] [--json]

Each person has what a publisher carries for `${path:enterprise.organization}` plus the usual
directory fields (name, display name, email, status, organization and department), and belongs to
two groups.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "agent"))

from runas_agent.directory import canonical  # noqa: E402
from tests import signing  # noqa: E402
from tests.endpoint.directories import make_directory  # noqa: E402

READ = r"""
import json, sys, time
import boto3  # the agent has it loaded too
from runas_agent.sources.document import Trust
from runas_agent.sources.signature import PublicKey

def hwm():  # this process's peak resident memory, KiB (ru_maxrss would include the parent's)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])

trust = Trust(PublicKey.load(open(sys.argv[2]).read()), None, 1 << 40)
base = hwm()
data = open(sys.argv[1], "rb").read()
started = time.perf_counter()
directory = trust.read(data, "bench")
seconds = time.perf_counter() - started
read = hwm()
# a sync holds the last applied snapshot beside it (sources/admission.py): one of the same size
from runas_agent.sources.admission import last_applied
previous, _ = last_applied(sys.argv[1])
print(json.dumps({"users": len(directory.users), "seconds": seconds, "base_mib": base / 1024, "read_mib": read / 1024,
                  "peak_mib": hwm() / 1024}))
"""


def document(users: int) -> bytes:
    body = make_directory(users, users_per_group=max(1, users // 20))
    extra = make_directory(users, users_per_group=max(1, users // 10))
    body["Groups"] += [dict(g, GroupId=g["GroupId"][:-4] + "ffff", DisplayName="x-" + g["DisplayName"]) for g in extra["Groups"]]
    body["GroupMemberships"] += [dict(m, GroupId=m["GroupId"][:-4] + "ffff", MembershipId=m["MembershipId"][:-4] + "eeee")
                                 for m in extra["GroupMemberships"]]
    return signing.signed_bytes(body)


def measure(users: int, tmp: Path) -> dict:
    data = document(users)
    path = tmp / f"d{users}.json"
    path.write_bytes(data)
    key = tmp / "key.pem"
    key.write_text(signing.public_pem())
    out = subprocess.run([sys.executable, "-c", READ, str(path), str(key)], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "agent"), "PATH": "/usr/bin:/bin"})
    result = json.loads(out.stdout)
    result.update(bytes=len(data), bytes_per_user=len(data) / users)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(n, Path(tmp)) for n in args.users]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'users':>7} {'MiB':>7} {'bytes/user':>10} {'read s':>7} {'base MiB':>9} {'read MiB':>9} {'+last MiB':>9}")
    for r in rows:
        print(f"{r['users']:>7} {r['bytes'] / 2**20:>7.1f} {r['bytes_per_user']:>10.0f} {r['seconds']:>7.2f} "
              f"{r['base_mib']:>9.0f} {r['read_mib']:>9.0f} {r['peak_mib']:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
