"""Helpers for running the account engine (tests/hosts/engine_driver.py) inside an isolated host and
judging the result with the host's own tools."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.hosts.namespace import REPO, IsolatedHost

_specs = itertools.count()
UID_BASE = 1_500_000_000
DATABASES = ("passwd", "shadow", "group", "gshadow")


def scratch_etc(root: Path) -> Path:
    """`root`/etc holding copies of this machine's four account databases and login.defs, with
    their owners: a stand-in for /etc that a test may write (never the machine's own)."""
    path = root / "etc"
    path.mkdir()
    for name in ("passwd", "shadow", "group", "gshadow", "login.defs"):
        shutil.copy2(f"/etc/{name}", path / name)
        st = os.stat(f"/etc/{name}")
        os.chown(path / name, st.st_uid, st.st_gid)
    return path


def env() -> dict:
    return dict(os.environ, PYTHONPATH=f"{REPO / 'agent'}{os.pathsep}{REPO}")


def write_spec(host: IsolatedHost, spec: dict) -> Path:
    path = host.root / f"engine-spec-{next(_specs)}.json"
    path.write_text(json.dumps(spec))
    return path


def driver_argv(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "tests.hosts.engine_driver", str(spec_path)]


def run_engine(host: IsolatedHost, spec: dict, timeout: float = 900) -> dict:
    """Run the engine once inside `host`; returns its JSON report (raises when it did not finish)."""
    proc = host.run(driver_argv(write_spec(host, spec)), env=env(), timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"engine exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_engine(host: IsolatedHost, spec: dict) -> subprocess.Popen:
    return host.popen(driver_argv(write_spec(host, spec)), env=env(), stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)


def wait_for(engine: subprocess.Popen, key: str) -> dict:
    """Read the engine's progress lines until one carries `key` (such as "sleeping")."""
    for line in engine.stdout:
        record = json.loads(line)
        if key in record:
            return record
    raise AssertionError(f"the engine ended without saying {key!r}: {engine.stderr.read()[-2000:]}")


def add_op(name: str, uid: int, comment: str = "runas-agent test", home_base: str = "/home", shell: str = "/bin/bash") -> list:
    return ["add_account", [name, uid, uid], {"comment": comment, "home": f"{home_base}/{name}", "shell": shell}]


def tool_complaints(host: IsolatedHost) -> dict[str, list[str]]:
    """What `pwck -r` and `grpck -r` report, one complaint per item (a fix they would offer, such
    as "delete line 'x:...'? No", is joined to the complaint it belongs to)."""
    out = {}
    for tool in ("pwck", "grpck"):
        proc = host.run([tool, "-r"], check=False)
        complaints: list[str] = []
        for line in (proc.stdout + proc.stderr).splitlines():
            if not line.strip() or line.endswith("no changes"):
                continue
            if line.endswith("? No") and complaints:
                complaints[-1] += " | " + line
            else:
                complaints.append(line)
        out[tool] = sorted(complaints)
    return out


def entries(host: IsolatedHost, kind: str) -> dict[str, list[str]]:
    """The entries of one database file as read directly (first line per name wins)."""
    out: dict[str, list[str]] = {}
    for line in (host.etc / kind).read_bytes().decode("utf-8", "surrogateescape").splitlines():
        if line and line[0] not in "#+-":
            out.setdefault(line.split(":")[0], line.split(":"))
    return out


def getent(host: IsolatedHost, database: str, key: str) -> list[str] | None:
    proc = host.run(["getent", database, key], check=False)
    return proc.stdout.strip().split(":") if proc.returncode == 0 else None


def assert_consistent(host: IsolatedHost) -> None:
    """What must hold at every moment, whatever was interrupted: each file parses with the right
    number of fields, no name or ID is held twice, and every user has its primary group."""
    widths = {"passwd": 7, "shadow": 9, "group": 4, "gshadow": 4}
    for kind in DATABASES:
        names = []
        for line in (host.etc / kind).read_text().splitlines():
            if line and line[0] not in "#+-":
                assert len(line.split(":")) == widths[kind], (kind, line)
                names.append(line.split(":")[0])
        assert len(names) == len(set(names)), (kind, [n for n in names if names.count(n) > 1])
    users = entries(host, "passwd")
    groups = entries(host, "group")
    uids = [u[2] for u in users.values()]
    assert len([u for u in uids if int(u) >= UID_BASE]) == len({u for u in uids if int(u) >= UID_BASE})
    gids = {g[2] for g in groups.values()}
    assert len(gids) == len(groups)
    missing = [u[0] for u in users.values() if u[3] not in gids]
    assert not missing, f"users without their group: {missing}"
