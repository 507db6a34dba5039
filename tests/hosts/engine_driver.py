"""Run the account engine inside an isolated host: `python -m tests.hosts.engine_driver SPEC.json`.

SPEC: {"rules": "debian" | "rhel", "skel": PATH, "ops": [[method, [args], {kwargs}], ...],
       "kill_at": LABEL, "sleep_at": [LABEL, SECONDS], "lock_timeout": SECONDS,
       "converge": false, "flush": true}

The flow is the one a sync uses: load the four databases once, make the edits (a refused edit is
reported and the others go on), create the homes of the accounts added, drop the accounts whose
home could not be made, commit. With "kill_at" the process SIGKILLs itself at that step:
"db:<database>:<step>" (steps of host.accountdb's write: temp, backup, rename, sync),
"home:<n>:<step>" (the n-th home, 0-based; steps of host.homes: staging, copied, owned, renamed) or
"commit" (after the homes, before the databases are locked); with "sleep_at" it sleeps there.

"converge" plays the part of a planner that knows (from its ledger) which accounts are its own:
an add_account whose account already exists with its UID is left out, and the others adopt an
orphan group of their own name and GID. "flush": false tells no cache.

Prints one JSON object: refused edits, home outcomes and failures, the databases written, whether
the edits were replayed on files changed meanwhile, seconds per phase and the peak RSS in KiB.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time

from runas_agent.core import naming
from runas_agent.core.accountdb import AccountEditError
from runas_agent.errors import AgentError
from runas_agent.host import accountdb, homes, subp


class Killer:
    def __init__(self, label: str | None, sleep: list | None = None):
        self.label = label
        self.sleep = sleep or [None, 0]
        self.homes: dict[str, int] = {}

    def db(self, kind: str, step: str) -> None:
        self.at(f"db:{kind}:{step}")

    def home(self, path: str, step: str) -> None:
        index = self.homes.setdefault(path, len(self.homes))
        self.at(f"home:{index}:{step}")

    def at(self, label: str) -> None:
        if label == self.sleep[0]:
            print(json.dumps({"sleeping": label}), flush=True)
            time.sleep(self.sleep[1])
        if label == self.label:
            os.kill(os.getpid(), signal.SIGKILL)


def converging(db, ops: list) -> list:
    out = []
    for method, args, kwargs in ops:
        if method == "add_account":
            user = db.user(args[0])
            if user is not None and user[2] == str(args[1]):
                continue
            kwargs = dict(kwargs, adopt_group=True)
        out.append([method, args, kwargs])
    return out


def _refusal(method: str, exc: Exception) -> dict:
    return {"op": method, "account": getattr(exc, "account", ""), "error": str(exc), "type": type(exc).__name__}


def edit(db, ops: list) -> list[dict]:
    refused = []
    for method, args, kwargs in ops:
        try:
            getattr(db, method)(*args, **kwargs)
        except AccountEditError as exc:
            refused.append(_refusal(method, exc))
    return refused


def run(spec: dict) -> dict:
    print(json.dumps({"started": True}), flush=True)  # imports done: the work starts now
    killer = Killer(spec.get("kill_at"), spec.get("sleep_at"))
    seconds = {}
    started = time.perf_counter()
    db = accountdb.load("/etc", rules=naming.RULES[spec.get("rules", "debian")])
    seconds["load"] = time.perf_counter() - started
    mark = time.perf_counter()
    refused = edit(db, converging(db, spec["ops"]) if spec.get("converge") else spec["ops"])
    seconds["edits"] = time.perf_counter() - mark
    mark = time.perf_counter()
    skeleton = homes.Skeleton.read(spec.get("skel", "/etc/skel"))
    specs = [homes.HomeSpec(a.name, a.home, a.uid, a.gid) for a in db.added]
    made = homes.create_homes(specs, skeleton, step=killer.home, sync=False)
    seconds["homes"] = time.perf_counter() - mark
    mark = time.perf_counter()
    for base in sorted({os.path.dirname(s.path) for s in specs if s.path in made.done}):
        homes.sync_filesystem(base)
    seconds["syncfs"] = time.perf_counter() - mark
    failed = {s.account for s, _ in made.failed}
    if failed:
        db, more = db.with_edits([e for e in db.journal if not (e[0] == "add_account" and e[1][0] in failed)])
        refused += [_refusal(e[0], x) for e, x in more]
    killer.at("commit")
    mark = time.perf_counter()
    run_ = subp.run if spec.get("flush", True) else (lambda *a, **k: None)
    try:
        result = accountdb.commit(db, "/etc", step=killer.db, lock_timeout=spec.get("lock_timeout", 15.0), run=run_)
    except AgentError as exc:
        return {"error": str(exc), "type": type(exc).__name__, "refused": refused}
    seconds["commit"] = time.perf_counter() - mark
    refused += [_refusal(e[0], x) for e, x in result.refused]
    return {"refused": refused, "homes": made.done,
            "home_failures": [_refusal("home", x) for _, x in made.failed],
            "written": result.written, "replayed": result.replayed, "warnings": result.warnings,
            "seconds": seconds, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    print(json.dumps(run(spec)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
