"""Inside an isolated host's mount namespace: start a standalone journald, write one sync record
whose message and fields carry hostile directory values through the agent's journal writer, and
print what `journalctl -o json` reads back. `python -m tests.hosts.journal_hostile`."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

from runas_agent import events
from runas_agent.journal import Journal
from tests.hosts.doctor_journal import start_journald

HOSTILE = "eve\x1b]0;pwned\x07\x1b[2J\u202e\x00\nFORGED_FIELD=1"


def main() -> int:
    journald = start_journald()
    try:
        marker = uuid.uuid4().hex
        record = events.Record.of(events.SYNC, events.Priority.WARNING, f"sync partial: skip {HOSTILE}",
                                  RUNAS_TEST_MARKER=marker, RUNAS_IDENTITY_USER=HOSTILE + "x" * 100_000)
        where = Journal(echo=False).write(record)
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(["journalctl", "-o", "json", "--all", f"RUNAS_TEST_MARKER={marker}"],
                                 capture_output=True, text=True, check=False).stdout.strip()
            if out or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(json.dumps({"where": where, "records": [json.loads(line) for line in out.splitlines()]}))
    finally:
        journald.terminate()
        journald.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
