"""Inside an isolated host's mount namespace: start a standalone journald (tmpfs on /run/systemd and
/run/log), let the real daemon loop journal the syncs named on the command line (each `ok`,
`partial`, `failed` or `abandoned`, in order), then run the doctor's last-sync check against that
journal. `python -m tests.hosts.doctor_journal CONFIG RESULT...`; prints {"record": ..., "check": ...}."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

from runas_agent import config
from runas_agent.daemon import Abandon, Daemon
from runas_agent.doctor.chain import Doctor
from runas_agent.doctor.sync import read_last_sync
from runas_agent.errors import SourceError
from runas_agent.journal import Journal
from runas_agent.status import SyncCounts, SyncStatus


def start_journald() -> subprocess.Popen:
    for path in ("/run/systemd", "/run/log"):
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path], check=True)
    journald = subprocess.Popen(["/lib/systemd/systemd-journald"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists("/run/systemd/journal/socket"):
        if time.monotonic() > deadline:
            raise RuntimeError("journald did not start")
        time.sleep(0.02)
    return journald


def outcome(kind: str):
    """A stand-in for sync(): what one scheduled sync came to."""

    def sync_fn(cfg, *, source, progress):
        if kind == "failed":
            raise SourceError("Identity Store d-1234567890: ListUsers page 1: access denied")
        if kind == "abandoned":
            raise Abandon()
        counts = SyncCounts(created=2, skipped=1 if kind == "partial" else 0, actions=2)
        return types.SimpleNamespace(counts=counts, status=SyncStatus(kind), plan=types.SimpleNamespace(refusals=[]))

    return sync_fn


def main(config_path: str, kinds: list[str]) -> int:
    journald = start_journald()
    try:
        cfg = config.load(config_path)
        for kind in kinds:
            daemon = Daemon(config_path, cfg, notify=lambda *a: None, journal=Journal(echo=False),
                            sync_fn=outcome(kind), source_factory=lambda *a, **k: types.SimpleNamespace(describe=lambda: "stand-in"))
            daemon.sync_once()
        # journald writes asynchronously: wait until the last record can be read back
        deadline = time.monotonic() + 10
        record = read_last_sync()
        while (record is None or record.get("SYNC_RESULT") != next((k for k in reversed(kinds) if k != "abandoned"), None)) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
            record = read_last_sync()
        (check,) = Doctor(config_path).run(only=["last-sync"])
        print(json.dumps({"record": record, "check": check.to_json()}))
    finally:
        journald.terminate()
        journald.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))
