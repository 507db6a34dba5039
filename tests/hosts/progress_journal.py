"""Inside an isolated host's mount namespace: start a standalone journald (as tests/hosts/doctor_journal.py
does), let the real daemon run one real first sync of the configured directory with the engine's
progress reported every `EVERY` seconds, and print the progress and sync records journald holds, as
JSON lines. `python -m tests.hosts.progress_journal CONFIG EVERY`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from runas_agent import config, events
from runas_agent.daemon import Daemon
from runas_agent.host import engine
from runas_agent.journal import Journal
from tests.hosts.doctor_journal import start_journald


def records(message_id: str) -> list[dict]:
    out = subprocess.run(["journalctl", "-o", "json", f"MESSAGE_ID={message_id}"], capture_output=True, text=True,
                         check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def main(config_path: str, every: float) -> int:
    journald = start_journald()
    try:
        engine.REPORT_EVERY = every
        notes: list[str] = []
        daemon = Daemon(config_path, config.load(config_path), notify=lambda *a: notes.extend(a),
                        journal=Journal(echo=False))
        report = daemon.sync_once()
        assert report is not None
        deadline = time.monotonic() + 10
        while not records(events.SYNC.hex) and time.monotonic() < deadline:  # journald writes asynchronously
            time.sleep(0.05)
        for record in records(events.SYNC_PROGRESS.hex) + records(events.SYNC.hex):
            print(json.dumps({k: v for k, v in record.items() if k.startswith(("SYNC_", "MESSAGE"))}))
        print(json.dumps({"notes": [n for n in notes if n.startswith("STATUS=")]}))
    finally:
        journald.terminate()
        journald.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], float(sys.argv[2])))
