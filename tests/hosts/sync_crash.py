"""Crash trials of a whole sync: a real `runas-agent --once` killed (SIGKILL) at a step of its work
or at a seeded random moment, inside an isolated host, then plain syncs; the host must end exactly
as an uninterrupted run leaves it. Shared by tests/integration/test_sync_crash.py (a small seeded
sample) and bench/crash_sync.py (every step, many random moments).

The scenario has six phases, each one sync: a first sync of ten people (five of them put in the
local group `deploy` by a directory group), three of them leaving (parked), the three coming back
(re-enabled), two people's user names changing (renamed: account, group, membership and home), then
a name changing hands: `p8` leaves and a newcomer gets the user name `p8` ("leave": the leaver's
account is parked, the newcomer skipped until it is), and the next sync hands the name over
("hand-over": the leaver's home set aside, the newcomer's account made). A trial runs the phases
before its own uninterrupted, then its own with a kill, then plain syncs until one has nothing left
to do. A killed "leave" may settle straight into the hand-over, so both are compared with the
settled state after the hand-over:

- "<file>": when the agent creates its next version of /etc/<file> (gshadow, group, shadow,
  passwd: the engine writes them in this order) or the state file `<file>` (ledger.json,
  sudoers.json, directory.json);
- "home": when the first home's staging directory appears;
- "t=<seconds>": at that moment after the start.

The kill is sent when inotify reports the step, so it lands at the step or a little after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runas_agent.sessions.inotify import IN_CREATE, IN_MOVED_TO, Inotify
from tests.hosts.engine import tool_complaints
from tests.hosts.namespace import REPO, IsolatedHost

STORE = "d-1234567890"
UID_MIN = 1_000_000_000
PEOPLE = [f"p{i}" for i in range(10)]
OPS = PEOPLE[:5]
LEAVERS = PEOPLE[7:]
PHASES = ("create", "disable", "re-enable", "rename", "leave", "hand-over")
#: phases whose own sync leaves identities skipped (exit 3): the newcomer waits for the parking
PARTIAL_PHASES = ("leave",)
#: the leaver whose user name a newcomer (UserId id-new-p8) gets in the "leave" phase
HANDED = "p8"
#: the user names that change in the "rename" phase (same UserId): one in `deploy`, one not
RENAMED = {"p0": "r0", "p9": "r9"}
ETC_STEPS = ("gshadow", "group", "shadow", "passwd")
STATE_STEPS = ("ledger.json", "directory.json")
STEPS = ETC_STEPS + ("home",) + STATE_STEPS


def _user(name: str, renamed: bool = False) -> dict:
    user_id = f"id-new-{HANDED}" if name == f"new-{HANDED}" else f"id-{name}"
    user_name = HANDED if name == f"new-{HANDED}" else RENAMED.get(name, name) if renamed else name
    return {"IdentityStoreId": STORE, "UserId": user_id, "UserName": user_name, "UserStatus": "ENABLED",
            "DisplayName": name.upper()}


def document(people: list[str], renamed: bool = False) -> dict:
    ops = [p for p in OPS if p in people]
    return {"IdentityStoreId": STORE, "Users": [_user(p, renamed) for p in people],
            "Groups": [{"IdentityStoreId": STORE, "GroupId": "g-ops", "DisplayName": "Ops"}],
            "GroupMemberships": [{"IdentityStoreId": STORE, "GroupId": "g-ops", "MemberId": {"UserId": f"id-{p}"}}
                                 for p in ops]}


HANDED_OVER = [p for p in PEOPLE if p != HANDED] + [f"new-{HANDED}"]
PEOPLE_BY_PHASE = {"create": PEOPLE, "disable": [p for p in PEOPLE if p not in LEAVERS], "re-enable": PEOPLE,
                   "rename": PEOPLE, "leave": HANDED_OVER, "hand-over": HANDED_OVER}


def prepare(root: Path) -> tuple[IsolatedHost, Path]:
    host = IsolatedHost(root)
    host.run(["groupadd", "deploy"])
    skel = host.root / "skel"
    (skel / ".config" / "app").mkdir(parents=True)
    (skel / ".profile").write_text("# profile\n")
    (skel / ".config" / "app" / "settings").write_text("x=1\n")
    path = host.write_directory(document(PEOPLE))
    cfg = host.write_config({"source": {"type": "file", "path": str(path)}, "run_as": {"expression": "${path:userName}"},
                             "accounts": {"skel": str(skel)},
                             "groups": [{"identity_store_group": "Ops", "local_groups": ["deploy"]}]})
    return host, cfg


def agent_argv(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "runas_agent", "--config", str(cfg), "--once"]


def agent_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "agent") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def sync(host: IsolatedHost, cfg: Path) -> subprocess.CompletedProcess:
    return host.run(agent_argv(cfg), check=False, env=agent_env(), timeout=600)


def enter_phase(host: IsolatedHost, phase: str) -> None:
    host.write_directory(document(PEOPLE_BY_PHASE[phase], renamed=PHASES.index(phase) >= PHASES.index("rename")))


def _listing(path: Path) -> list[tuple[str, int, int, int]]:
    out = []
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs) + sorted(files):
            full = os.path.join(root, name)
            st = os.lstat(full)
            out.append((os.path.relpath(full, path), st.st_uid, st.st_gid, st.st_mode & 0o7777))
    return sorted(out)


def _entries(host: IsolatedHost, kind: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (host.etc / kind).read_text().splitlines():
        if line and line[0] not in "#+-":
            out.setdefault(line.split(":")[0], line.split(":"))
    return out


def state(host: IsolatedHost) -> dict:
    """What an uninterrupted run and an interrupted one must agree on."""
    passwd = {n: e for n, e in _entries(host, "passwd").items() if int(e[2]) >= UID_MIN}
    group = {n: e for n, e in _entries(host, "group").items() if int(e[2]) >= UID_MIN or n == "deploy"}
    shadow = _entries(host, "shadow")
    gshadow = _entries(host, "gshadow")
    ledger = json.loads((host.state_dir / "ledger.json").read_text())
    return {
        "passwd": passwd,
        "group": group,
        "shadow": {n: (shadow[n][1], shadow[n][7]) if n in shadow else None for n in passwd},
        "gshadow": {n: gshadow.get(n, [None])[1:] for n in group},
        "homes": {name: _listing(host.home / name) + [(".", *_owner_mode(host.home / name))]
                  for name in sorted(os.listdir(host.home))},
        "ledger": ledger,
    }


def _owner_mode(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


@dataclass
class Reference:
    """Each phase's end state when nothing is interrupted, how long its sync took, and what pwck
    and grpck say of the host."""

    states: dict[str, dict]
    seconds: dict[str, float]
    complaints: dict[str, list[str]]


def reference(root: Path) -> Reference:
    host, cfg = prepare(root)
    states, seconds = {}, {}
    for phase in PHASES:
        enter_phase(host, phase)
        started = time.monotonic()
        result = sync(host, cfg)
        seconds[phase] = time.monotonic() - started
        assert result.returncode == (3 if phase in PARTIAL_PHASES else 0), result.stdout + result.stderr
        states[phase] = state(host)
    states["leave"] = states["hand-over"]  # see the module docstring
    return Reference(states, seconds, tool_complaints(host))


def _watched(host: IsolatedHost, step: str) -> tuple[Path, Callable[[str], bool]]:
    if step in ETC_STEPS:
        return host.etc, lambda name: name == f"{step}.runas-agent-new"
    if step == "home":
        return host.home, lambda name: name.startswith(".runas-agent-home.")
    return host.state_dir, lambda name: name.startswith(".") and name.endswith(".tmp") or name == step


def run_killed(host: IsolatedHost, cfg: Path, step: str) -> str:
    """Start the sync and SIGKILL it at `step`; returns "killed" or how it ended otherwise."""
    watch = Inotify()
    matches: Callable[[str], bool] = lambda name: False
    deadline = None
    if step.startswith("t="):
        deadline = time.monotonic() + float(step[2:])
    else:
        path, matches = _watched(host, step)
        watch.add(str(path), IN_CREATE | IN_MOVED_TO)
    proc = host.popen(agent_argv(cfg), env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if watch.wait(0.005) and any(matches(e.name) for e in watch.read()):
                break
        else:
            return f"finished (exit {proc.returncode}) before the kill"
        proc.send_signal(signal.SIGKILL)  # the process is the agent itself: unshare and sh exec it
        proc.wait()
        return "killed" if proc.returncode == -signal.SIGKILL else f"finished (exit {proc.returncode}) before the kill"
    finally:
        watch.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class Trial:
    phase: str
    step: str
    ended: str = ""
    syncs: int = 0
    converged: bool = False
    problems: str = ""


def trial(root: Path, ref: Reference, phase: str, step: str, max_syncs: int = 4) -> Trial:
    """One trial: the phases before `phase` uninterrupted, `phase` killed at `step`, then plain
    syncs until one changes nothing; the host is compared with the reference."""
    host, cfg = prepare(root)
    result = Trial(phase, step)
    try:
        for earlier in PHASES[:PHASES.index(phase)]:
            enter_phase(host, earlier)
            assert sync(host, cfg).returncode == (3 if earlier in PARTIAL_PHASES else 0)
        enter_phase(host, phase)
        result.ended = run_killed(host, cfg, step)
        for _ in range(max_syncs):
            result.syncs += 1
            done = sync(host, cfg)
            if done.returncode == 0 and not any(line[:2] in ("+ ", "- ", "~ ", ". ") for line in done.stdout.splitlines()):
                break  # a sync with nothing left to do
        problems = []
        got = state(host)
        for key, want in ref.states[phase].items():
            if got[key] != want:
                problems.append(f"{key}: {json.dumps(got[key], sort_keys=True)[:600]} != {json.dumps(want, sort_keys=True)[:600]}")
        complaints = tool_complaints(host)
        if complaints != ref.complaints:
            problems.append(f"pwck/grpck: {complaints} != {ref.complaints}")
        result.problems = "\n".join(problems)
        result.converged = not problems
        return result
    finally:
        host.destroy()
