"""An isolated host in a mount namespace: a private copy of /etc, and fresh /home, /var/log and
/var/mail. Real shadow-utils, visudo, id and getent run inside it and see only its accounts; the
machine's own /etc is never touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import yaml

# Constant script, arguments passed positionally: nothing is interpolated into it.
_ENTER = r'''
root=$1; shift
mount --bind "$root/etc" /etc &&
mount --bind "$root/home" /home &&
mount --bind "$root/var-log" /var/log &&
mount --bind "$root/var-mail" /var/mail &&
exec "$@"
'''

REPO = Path(__file__).resolve().parents[2]


class IsolatedHost:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.etc = self.root / "etc"
        self.home = self.root / "home"
        self.state_dir = self.root / "state"
        if not self.etc.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", "/etc", str(self.etc)], check=True)
            for name in ("home", "var-log", "var-mail", "state"):
                (self.root / name).mkdir(exist_ok=True)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs `argv` inside the host."""
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _ENTER, "sh", str(self.root), *argv]

    def popen(self, argv: Sequence[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
        """Start `argv` inside the host without waiting (several such processes share its files)."""
        return subprocess.Popen(self.argv(argv), env=env, **kwargs)

    def run(self, argv: Sequence[str], check: bool = True, input: str | None = None,
            env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        full = self.argv(argv)
        proc = subprocess.run(full, capture_output=True, text=True, input=input, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{list(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def agent(self, *args: str, check: bool = False, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run the runas-agent CLI inside the host."""
        merged = dict(os.environ)
        merged["PYTHONPATH"] = str(REPO / "agent") + os.pathsep + merged.get("PYTHONPATH", "")
        merged.update(env or {})
        return self.run([sys.executable, "-m", "runas_agent", *args], check=check, env=merged, timeout=timeout)

    # --- inspection: read the host's files directly, or ask its tools ---------------------------

    def passwd(self) -> dict[str, list[str]]:
        out = {}
        for line in (self.etc / "passwd").read_text().splitlines():
            parts = line.split(":")
            out[parts[0]] = parts
        return out

    def group(self) -> dict[str, list[str]]:
        out = {}
        for line in (self.etc / "group").read_text().splitlines():
            parts = line.split(":")
            out[parts[0]] = parts
        return out

    def shadow(self) -> dict[str, list[str]]:
        return {l.split(":")[0]: l.split(":") for l in (self.etc / "shadow").read_text().splitlines()}

    def id(self, name: str) -> subprocess.CompletedProcess:
        return self.run(["id", "--", name], check=False)

    def ledger(self) -> dict:
        path = self.state_dir / "ledger.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def write_config(self, data: dict, name: str = "config.yaml") -> Path:
        data = dict(data)
        data.setdefault("state_dir", str(self.state_dir))
        path = self.root / name
        path.write_text(yaml.safe_dump(data))
        return path

    def write_directory(self, document: dict, name: str = "directory.json") -> Path:
        path = self.root / name
        path.write_text(json.dumps(document))
        return path

    def destroy(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
