"""Run `runas-agent doctor` inside an isolated host with some probe paths pointed at staged files
(the SSM agent's binary and unit, the last sync record): `python -m tests.hosts.doctor_probe SPEC.json`.

SPEC: {"config": PATH, "probe": {Probe field: value}, "last_sync": RECORD or null, "ssm_region": R,
"processes_under": DIR, "processes_of_uids": [UID, ...]}. Prints {"exit": N, "checks": [...]} on stdout. /etc, visudo, pwd and psutil are
the host's own; with `processes_under`, the process table is psutil's, less the processes whose binary
lies outside DIR (the machine is shared: another test's stand-in SSM agent must not count as this one's),
except those running with one of `processes_of_uids` (the accounts the test itself runs processes as)."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable

import psutil

from runas_agent.doctor.chain import Doctor
from runas_agent.doctor.cli import exit_status
from runas_agent.doctor.env import Probe


def processes_under(root: str, uids: frozenset[int] = frozenset()) -> Iterable[Any]:
    return [p for p in psutil.process_iter(["pid", "name", "exe", "cmdline", "uids"])
            if (p.info.get("exe") or "").startswith(root) or (p.info.get("uids") and p.info["uids"].real in uids)]


def main(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    probe = Probe(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("probe", {}).items()})
    if "last_sync" in spec:
        record = spec["last_sync"]
        probe.last_sync = lambda: record
    if "processes_under" in spec:
        root = spec["processes_under"]
        uids = frozenset(spec.get("processes_of_uids", ()))
        probe.processes = lambda: processes_under(root, uids)
    checks = Doctor(spec["config"], probe=probe, ssm_region=spec.get("ssm_region")).run()
    print(json.dumps({"exit": int(exit_status(checks)), "checks": [c.to_json() for c in checks]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
