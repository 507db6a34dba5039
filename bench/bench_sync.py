"""Benchmark of the sync: first sync, no-op resync, peak memory and bytes written to /etc, at 1,000,
10,000 and 50,000 identities from a generated directory, in an isolated host (a mount namespace over a copy of
/etc; this machine's accounts are never touched). Also times a plain `useradd` loop for comparison.

    python bench/bench_sync.py [--sizes 1000 10000 50000] [--before 1000] [--baseline 1000] [--profile 10000]

Each sync is `runas-agent --once` (with the account engine), its modules compiled beforehand as an
installed package has them; `--before N` syncs N identities through the shadow-utils applier the
agent used before the engine, for comparison. After the first sync, one no-op sync plans and
remembers that there is nothing to do (core/memo.py); `--noop-runs` more no-op syncs follow, and
their median is the no-op resync figure.

Run as root on Debian 12. Prints a table; --json for machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hosts.namespace import IsolatedHost  # noqa: E402


def directory(n: int) -> dict:
    users = []
    for i in range(n):
        users.append({"IdentityStoreId": "d-1234567890", "UserId": f"9067{i:06d}-bench-4000-8000-{i:012d}",
                      "UserName": f"user{i:05d}@example.com", "DisplayName": f"User {i}", "UserStatus": "ENABLED",
                      "Extensions": {"aws:identitystore:enterprise": {"organization": f"org{i % 50}"}}})
    return {"IdentityStoreId": "d-1234567890", "Users": users, "Groups": [], "GroupMemberships": []}


def etc_files(host: IsolatedHost) -> dict[str, tuple[int, int, int]]:
    return etc_files_of(host.etc)


def etc_files_of(top: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under `top`: path -> (mtime, size, inode)."""
    out = {}
    for root, _, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            out[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


# `runas-agent --config CFG --once --json` as installed (python -m runas_agent), with its peak RSS
# printed on stderr when it exits; or (`shadow-utils`) the same sync applying accounts through the
# shadow-utils applier the agent used before the account engine (host/apply.py's Applier).
_ONCE = r"""
import resource, runpy, sys
mode, cfg = sys.argv[1], sys.argv[2]
try:
    if mode == "engine":
        sys.argv = ["runas-agent", "--config", cfg, "--once", "--json"]
        runpy.run_module("runas_agent", run_name="__main__")
    else:
        import json
        from runas_agent import config, sync
        from runas_agent.host.apply import Applier
        from runas_agent.host.sudoers import SudoersHost
        settings = config.load(cfg)
        using = sync.Appliers(Applier(skel=settings.accounts.skel), SudoersHost(settings.sudo.sudoers_dir, settings.state_dir, settings.sudo.visudo))
        result = sync.sync(settings, using=using)
        print(json.dumps({"counts": result.counts.to_dict(), "seconds": round(result.seconds, 3)}))
        sys.exit(int(result.exit))
finally:
    print("maxrss_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


#: Compiled modules, as an installed package has them (pip and the .deb compile at install time):
#: without them every run would compile the agent's modules from source first.
PYCACHE = Path(tempfile.gettempdir()) / "runas-bench-pycache"


def agent_env() -> dict[str, str]:
    """The environment of every timed run: the agent from this tree, its compiled modules kept."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "agent"), PYTHONPYCACHEPREFIX=str(PYCACHE))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_agent() -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "agent" / "runas_agent")],
                   env=agent_env(), check=True, stdout=subprocess.DEVNULL)


def timed_sync(host: IsolatedHost, cfg: Path, applier: str = "engine") -> tuple[float, dict]:
    """One sync; its JSON report with `maxrss_mib` added."""
    env = agent_env()
    started = time.perf_counter()
    proc = host.run([sys.executable, "-c", _ONCE, applier, str(cfg)], check=False, env=env, timeout=7200)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"sync failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout)
    rss = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("maxrss_kib ")]
    data["maxrss_mib"] = round(int(rss[-1]) / 1024, 1) if rss else None
    return elapsed, data


def prepared_host(tmp: str, n: int) -> tuple[IsolatedHost, Path]:
    """An isolated host with a generated directory of n people and a per-person config."""
    host = IsolatedHost(Path(tmp) / "host")
    path = host.write_directory(directory(n))
    cfg = host.write_config({"source": {"type": "file", "path": str(path)},
                             "run_as": {"expression": "${path:userName}"}})
    return host, cfg


def bench_size(n: int, applier: str = "engine", noop_runs: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="runas-bench-") as tmp:
        host, cfg = prepared_host(tmp, n)
        first, data = timed_sync(host, cfg, applier)
        created = data["counts"]["created"]
        assert created == n, data["counts"]
        assert host.id(f"user{n - 1:05d}@example.com").returncode == 0
        # The first sync with nothing to do plans and remembers its plan (core/memo.py); the
        # no-op resyncs measured after it take the remembered plan while nothing has changed.
        planned, planned_data = timed_sync(host, cfg, applier)
        before = etc_files(host)
        state_before = etc_files_of(host.state_dir)
        runs = [timed_sync(host, cfg, applier) for _ in range(noop_runs)]
        noop, data2 = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
        after = etc_files(host)
        changed = [p for p in set(before) | set(after) if before.get(p) != after.get(p)]
        written = sum(after[p][1] for p in changed if p in after)
        assert all(d["counts"]["actions"] == 0 for _, d in runs + [(planned, planned_data)])
        state_after = etc_files_of(host.state_dir)
        state_changed = sorted(p for p in set(state_before) | set(state_after) if state_before.get(p) != state_after.get(p))
        return {"identities": n, "applier": applier, "first_maxrss_mib": data["maxrss_mib"],
                "noop_maxrss_mib": data2["maxrss_mib"], "first_sync_s": round(first, 2), "per_account_ms": round(1000 * first / n, 2),
                "in_agent_s": data["seconds"], "noop_planned_s": round(planned, 2),
                "noop_planned_in_agent_s": planned_data["seconds"], "noop_resync_s": round(noop, 2),
                "noop_in_agent_s": data2["seconds"],
                "noop_runs_s": [round(t, 2) for t, _ in runs], "noop_runs_in_agent_s": [d["seconds"] for _, d in runs],
                "noop_runs_remembered": [d.get("plan_remembered", False) for _, d in runs],
                "state_files_changed_on_noop": len(state_changed),
                "etc_files_changed_on_noop": len(changed), "etc_bytes_written_on_noop": written}


_PROFILE = r"""
import cProfile, contextlib, io, json, pstats, sys
from runas_agent import cli
profile = cProfile.Profile()
with contextlib.redirect_stdout(io.StringIO()):
    profile.runcall(cli.main, ["--config", sys.argv[1], "--once", "--json"])
stats = pstats.Stats(profile).stats
wanted = {"fetch": "read the directory", "compute": "desired state", "read_host": "read /etc/passwd, /etc/group",
          "plan": "plan", "_create_batch": "create (newusers + chpasswd + skel)", "_copy_skel": "  of which skel copies",
          "run": "  of which shadow-utils processes", "_set_members": "group memberships",
          "save": "ledger writes", "save_snapshot": "snapshot write",
          "_edit": "account edits (engine)", "_make_homes": "homes (engine)", "_commit": "commit (engine: lock, write, caches)"}
# where a name is not unique: the module it must come from
where = {"run": "host/subp", "plan": "core/plan", "save": "host/files", "_edit": "host/engine",
         "_make_homes": "host/engine", "_commit": "host/engine"}
out = {}
for (filename, _, name), (_, _, _, cumulative, _) in stats.items():
    if "runas_agent" in filename and name in wanted and where.get(name, "") in filename:
        out[wanted[name]] = max(out.get(wanted[name], 0.0), cumulative)
print(json.dumps(out))
"""


def where_time_goes(n: int) -> dict:
    """A first sync of n identities under cProfile, inside an isolated host: seconds per stage."""
    with tempfile.TemporaryDirectory(prefix="runas-bench-") as tmp:
        host, cfg = prepared_host(tmp, n)
        env = agent_env()
        proc = host.run([sys.executable, "-c", _PROFILE, str(cfg)], env=env, timeout=7200)
        return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_useradd_loop(n: int) -> dict:
    """The naive way: one useradd per account. Each call rewrites passwd/shadow/group/gshadow whole."""
    with tempfile.TemporaryDirectory(prefix="runas-bench-") as tmp:
        host = IsolatedHost(Path(tmp) / "host")
        script = ("i=0; while [ $i -lt $1 ]; do useradd --no-log-init -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "
                  "-u $((1500000000 + i)) -m \"loop$i\" 2>/dev/null || exit 1; i=$((i + 1)); done")
        started = time.perf_counter()
        host.run(["sh", "-c", script, "sh", str(n)], timeout=7200)
        total = time.perf_counter() - started
        # The marginal cost at this size: ten more accounts on top.
        started = time.perf_counter()
        host.run(["sh", "-c", script.replace("loop$i", "more$i").replace("1500000000", "1600000000"), "sh", "10"])
        marginal = (time.perf_counter() - started) / 10
        return {"identities": n, "useradd_loop_s": round(total, 2), "per_account_ms": round(1000 * total / n, 2),
                "marginal_ms_at_size": round(1000 * marginal, 2)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--baseline", type=int, nargs="*", default=[1000])
    parser.add_argument("--before", type=int, nargs="*", default=[], metavar="N",
                        help="also sync N identities through the shadow-utils applier (before the account engine)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile a first sync of N identities and show where the time goes")
    parser.add_argument("--noop-runs", type=int, default=1, metavar="N",
                        help="no-op resyncs after the first sync (the median is the table's figure; all are in --json)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the isolated host needs a mount namespace")
    compile_agent()
    rows = ([bench_size(n, "engine", args.noop_runs) for n in args.sizes]
            + [bench_size(n, "shadow-utils", args.noop_runs) for n in args.before])
    base = [bench_useradd_loop(n) for n in args.baseline]
    profile = where_time_goes(args.profile) if args.profile else {}
    if args.json:
        print(json.dumps({"sync": rows, "useradd_loop": base, "profile": profile}, indent=2))
        return 0
    print(f"{'applier':>12} {'identities':>10} {'first sync':>11} {'per account':>12} {'peak RSS':>9} {'no-op planned':>14} "
          f"{'no-op resync':>13} {'files written on no-op (/etc, state)':>37}")
    for r in rows:
        print(f"{r['applier']:>12} {r['identities']:>10} {r['first_sync_s']:>10.2f}s {r['per_account_ms']:>10.2f}ms "
              f"{r['first_maxrss_mib']:>7}MiB {r['noop_planned_s']:>13.2f}s {r['noop_resync_s']:>12.2f}s "
              f"{r['etc_files_changed_on_noop']:>30}, {r['state_files_changed_on_noop']}")
    for b in base:
        print(f"plain useradd loop, {b['identities']} accounts: {b['useradd_loop_s']:.2f}s "
              f"({b['per_account_ms']:.2f} ms/account on average, {b['marginal_ms_at_size']:.2f} ms for the next one)")
    if profile:
        print(f"where a first sync of {args.profile} identities spends its time:")
        for label, seconds in sorted(profile.items(), key=lambda kv: -kv[1]):
            print(f"  {label:<40} {seconds:8.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
