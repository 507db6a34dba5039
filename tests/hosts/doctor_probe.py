"""Run `runas-agent doctor` inside an isolated host with some probe paths pointed at staged files
(the SSM agent's binary and unit, the last sync record): `python -m tests.hosts.doctor_probe SPEC.json`.

SPEC: {"config": PATH, "probe": {Probe field: value}, "last_sync": RECORD or null, "ssm_region": R}.
Prints {"exit": N, "checks": [...]} on stdout. /etc, visudo, pwd and psutil are the host's own."""

from __future__ import annotations

import json
import sys

from runas_agent.doctor.chain import Doctor
from runas_agent.doctor.cli import exit_status
from runas_agent.doctor.env import Probe


def main(path: str) -> int:
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    probe = Probe(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("probe", {}).items()})
    if "last_sync" in spec:
        record = spec["last_sync"]
        probe.last_sync = lambda: record
    checks = Doctor(spec["config"], probe=probe, ssm_region=spec.get("ssm_region")).run()
    print(json.dumps({"exit": int(exit_status(checks)), "checks": [c.to_json() for c in checks]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
