"""The demo: one shared account per organization from the bundled sample directory, then a change
in the directory (a person leaves, an organization goes), in a throwaway isolated host."""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.hosts.namespace import IsolatedHost  # noqa: E402

SAMPLE = REPO / "agent" / "runas_agent" / "samples" / "directory.json"


def show(title: str, proc) -> None:
    print(f"\n$ {title}")
    sys.stdout.write(proc.stdout)
    if proc.stderr.strip():
        sys.stdout.write(proc.stderr)
    if getattr(proc, "returncode", 0):
        print(f"(exit status {proc.returncode})")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="runas-agent-demo-") as tmp:
        host = IsolatedHost(Path(tmp) / "host")
        directory = json.loads(SAMPLE.read_text())
        path = host.write_directory(directory)
        cfg = host.write_config({"source": {"type": "file", "path": str(path)},
                                 "run_as": {"expression": "${path:enterprise.organization}", "account_kind": "shared"}})
        print(f"Isolated host in {host.root}; directory: {SAMPLE.relative_to(REPO)}")
        print("Run As expression: ${path:enterprise.organization}  (one shared account per organization)")
        show("runas-agent plan", host.agent("--config", str(cfg), "plan"))
        show("runas-agent --once", host.agent("--config", str(cfg), "--once"))
        show("getent passwd iret acme globex", host.run(["getent", "passwd", "iret", "acme", "globex"], check=False))
        show("id iret", host.id("iret"))
        show("runas-agent --once   # unchanged directory: nothing to do", host.agent("--config", str(cfg), "--once"))

        changed = copy.deepcopy(directory)
        changed["Users"] = [u for u in changed["Users"] if u["UserName"] != "dave@example.com"]
        for user in changed["Users"]:
            if user["UserName"] == "alice@example.com":
                user["UserStatus"] = "DISABLED"
        host.write_directory(changed)
        print("\nThe directory changes: dave@example.com (the only enabled person of 'acme') is removed,"
              " alice@example.com (one of three at 'iret') is disabled.")
        show("runas-agent --once", host.agent("--config", str(cfg), "--once"))
        show("id acme   # SSM's only check: the account no longer resolves", host.id("acme"))
        show("ls -ld /home/acme   # home and files kept, UID reserved", host.run(["ls", "-ldn", "/home/acme"], check=False))
        show("id iret   # still serves bob and carol", host.id("iret"))
        host.write_directory(directory)
        show("runas-agent --once   # dave is back: same name, same UID, same home", host.agent("--config", str(cfg), "--once"))
        show("id acme", host.id("acme"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
