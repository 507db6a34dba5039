"""Test-side client of tests/hosts/ssm_stage.py: a staged SSM agent footprint with a real journald,
inside an IsolatedHost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.hosts.namespace import _ENTER, REPO, IsolatedHost

JOURNALD = "/lib/systemd/systemd-journald"
ACCOUNT_ID = "123456789012"
SSO_ROLE = "AWSReservedSSO_VendorAccess_0123456789abcdef"


def owner_arn(user_name: str, role: str = SSO_ROLE) -> str:
    return f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role}/{user_name}"


def session_id(user_name: str, n: int) -> str:
    return f"{user_name}-{n:017x}"


class SsmStage:
    def __init__(self, host: IsolatedHost, env: dict | None = None):
        self.host = host
        self.root = host.root
        self.deb_root = self.root / "var-lib-amazon-ssm"
        self.second_root = self.root / "second-state-root"    # sessions.state_roots may name several
        self.audit = self.root / "audit" / "sessions.jsonl"
        merged = dict(os.environ)
        merged["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "agent"), merged.get("PYTHONPATH", "")])
        merged.update(env or {})
        # Its own PID namespace (and /proc): the watcher sees only this stage's processes, never another
        # test's, and every process left in it ends with the stage.
        argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc", "--",
                "sh", "-c", _ENTER, "sh", str(self.root),
                sys.executable, "-m", "tests.hosts.ssm_stage", str(self.root)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=merged,
                                     cwd=REPO)

    def call(self, op: str, **kwargs):
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the stage died (exit {self.proc.wait()}) during {op}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise AssertionError(f"stage {op} failed: {reply['error']}\n{reply.get('trace', '')}")
        return reply

    def write_config(self, sessions: dict | None = None) -> Path:
        section = {"state_roots": [str(self.deb_root), str(self.second_root)], "audit_file": str(self.audit)}
        section.update(sessions or {})
        return self.host.write_config({
            "source": {"type": "file", "path": str(self.root / "directory.json")},
            "run_as": {"expression": "${path:enterprise.organization}", "account_kind": "shared"},
            "sessions": section,
        })

    def write_snapshot(self, document: dict) -> None:
        self.host.state_dir.mkdir(parents=True, exist_ok=True)
        (self.host.state_dir / "directory.json").write_text(json.dumps(document))

    def journal(self, **match) -> list[dict]:
        return self.call("journal", match={k: str(v) for k, v in match.items()})["records"]

    def wait_journal(self, count: int, timeout: float = 20.0, **match) -> list[dict]:
        """Records matching `match`, once there are at least `count` (or whatever is there at timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.journal(**match)
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
