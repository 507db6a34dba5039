"""Crash trials of the account engine: a prepared isolated host, a batch of edits (creates with homes,
memberships, parks, an unpark, a rename, an update), the engine SIGKILLed at one of its steps or at
a seeded random moment, then judged: consistent at once, shadow-utils still works on it, and one
plain re-run brings it to exactly the state an uninterrupted run reaches.

Used by tests/integration/test_accountdb_crash.py (every step, a few random moments) and
bench/crash_engine.py (long campaigns)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.hosts.engine import (UID_BASE, add_op, assert_consistent, driver_argv, env, run_engine, start_engine,
                                tool_complaints, wait_for, write_spec)
from tests.hosts.namespace import IsolatedHost

NOLOGIN = "/usr/sbin/nologin"
EXISTING = ["a0@example.com", "a1", "a2@example.com", "a3", "a4", "a5", "a6@example.com", "a7"]
DB_STEPS = [f"db:{kind}:{step}" for kind in ("gshadow", "group", "shadow", "passwd")
            for step in ("temp", "backup", "rename", "sync")]
HOME_STEPS = ["staging", "copied", "owned", "renamed"]


def uid(i: int) -> int:
    return UID_BASE + i


def trial_ops(new: int) -> list:
    """The batch every trial runs: `new` creates (two of them added to adm), a member removed, two
    parks, an unpark, a rename and a comment update."""
    ops = [add_op(f"n{i}@example.com" if i % 2 else f"n{i}", uid(100 + i)) for i in range(new)]
    ops += [["change_group_members", ["adm"], {"add": ["n0", "n1@example.com"], "remove": ["a1"]}],
            ["park", [uid(2)], {"shell": NOLOGIN}], ["park", [uid(3)], {"shell": NOLOGIN}],
            ["unpark", [uid(6), "a6@example.com"], {"shell": "/bin/bash", "comment": "runas-agent test"}],
            ["rename_account", [uid(4), "a4-renamed"], {}],
            ["update_account", [uid(5)], {"comment": "runas-agent a5 renamed in the directory"}]]
    return ops


def involved(new: int) -> set[str]:
    """Every name a trial changes: the only names a pwck/grpck complaint may mention mid-crash."""
    names = {f"n{i}@example.com" if i % 2 else f"n{i}" for i in range(new)}
    names |= {"a1", "a2@example.com", "a3", "a4", "a4-renamed", "a6@example.com"}
    names |= {f"runas-off-{uid(i)}" for i in (2, 3, 6)}
    return names


def prepare(root: Path) -> IsolatedHost:
    """A host with eight accounts of the engine's, two of them parked."""
    host = IsolatedHost(root)
    run_engine(host, {"ops": [add_op(n, uid(i)) for i, n in enumerate(EXISTING)]
                      + [["change_group_members", ["adm"], {"add": ["a0@example.com", "a1"]}]]})
    run_engine(host, {"ops": [["park", [uid(6)], {"shell": NOLOGIN}], ["park", [uid(7)], {"shell": NOLOGIN}]]})
    return host


def clone(prepared: IsolatedHost, root: Path) -> IsolatedHost:
    subprocess.run(["cp", "-a", str(prepared.root), str(root)], check=True)
    return IsolatedHost(root)


def reset(host: IsolatedHost, prepared: IsolatedHost) -> None:
    """Put a clone back as `prepared` is: the files of /etc that trials change (the databases, their
    backups, temporary and lock files; useradd's subuid/subgid), /home and /var/mail. Much cheaper
    than a fresh copy on a loaded machine."""
    for path in host.etc.iterdir():
        if path.is_file() and not (prepared.etc / path.name).exists():
            path.unlink()
    for path in prepared.etc.iterdir():
        if path.is_file() and not path.is_symlink() and path.read_bytes() != (host.etc / path.name).read_bytes():
            shutil.copy2(path, host.etc / path.name)
    for name in ("home", "var-mail"):
        shutil.rmtree(host.root / name)
        subprocess.run(["cp", "-a", str(prepared.root / name), str(host.root / name)], check=True)


def state(host: IsolatedHost, ignore: tuple[str, ...] = ("pkg",)) -> dict:
    """What a converged host must agree on: each database's lines (as a set: order is not
    meaning), and every home's tree (owner, mode, content), leaving out the names in `ignore`."""
    out = {}
    for kind in ("passwd", "shadow", "group", "gshadow"):
        lines = (host.etc / kind).read_text().splitlines()
        out[kind] = sorted(l for l in lines if l.split(":")[0] not in ignore)
    homes = {}
    for dirpath, dirs, files in os.walk(host.home):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, host.home)
            if rel.split("/")[0] in ignore:
                continue
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode):
                content = Path(path).read_bytes()
            homes[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content)
    out["homes"] = homes
    return out


@dataclass
class Trial:
    point: str
    #: exit status of the interrupted run (-9 when the kill landed)
    killed: int = 0
    #: whether the databases or homes had changed when it was killed (neither before nor done)
    mid_work: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return not self.problems


def _allowed(complaint: str, names: set[str]) -> bool:
    return bool(set(re.findall(r"[^\s':,|]+", complaint)) & names)


def judge(host: IsolatedHost, trial: Trial, baseline: dict, reference: dict, before: dict, new: int) -> None:
    """Right after the kill: consistent, only transitional complaints, useradd works; then one
    re-run must converge to the reference."""
    now = state(host)
    trial.mid_work = now != before and now != reference
    try:
        assert_consistent(host)
    except AssertionError as exc:
        trial.problems.append(f"inconsistent after the kill: {exc}")
    names = involved(new)
    for tool, lines in tool_complaints(host).items():
        extra = [l for l in lines if l not in baseline[tool] and not _allowed(l, names)]
        if extra:
            trial.problems.append(f"{tool} after the kill: {extra}")
    useradd = host.run(["useradd", "-m", "pkg"], check=False)
    if useradd.returncode:
        trial.problems.append(f"useradd after the kill failed: {useradd.stderr.strip()}")
    report = run_engine(host, {"ops": trial_ops(new), "converge": True})
    if report.get("refused") or report.get("home_failures") or report.get("error"):
        trial.problems.append(f"re-run refused: {report}")
    if state(host) != reference:
        after = state(host)
        diff = {k: (sorted(set(map(str, after[k])) ^ set(map(str, reference[k]))))[:6] for k in reference if after[k] != reference[k]}
        trial.problems.append(f"re-run did not converge: {diff}")
    if tool_complaints(host) != baseline:
        trial.problems.append(f"pwck/grpck after the re-run: {tool_complaints(host)}")
    if any(n.startswith(".runas-agent-home.") for n in os.listdir(host.home)):
        trial.problems.append(f"staging directories left: {os.listdir(host.home)}")


def work_seconds(out: str) -> float:
    """The engine's own measure of its work, from its last output line."""
    return sum(json.loads(out.strip().splitlines()[-1])["seconds"].values())


class Campaign:
    """One prepared host and its reference; trials run on copies of it."""

    def __init__(self, workdir: Path, new: int = 6):
        self.workdir = Path(workdir)
        self.new = new
        self.prepared = prepare(self.workdir / "prepared")
        self.baseline = tool_complaints(self.prepared)
        self.before = state(self.prepared)
        reference = clone(self.prepared, self.workdir / "reference")
        works = []
        for _ in range(3):  # the shortest of three: kills drawn from it land in the work, not after it
            reset(reference, self.prepared)
            engine = start_engine(reference, {"ops": trial_ops(new)})
            wait_for(engine, "started")
            out, err = engine.communicate(timeout=600)
            if engine.returncode != 0:
                raise AssertionError(f"the uninterrupted reference run failed: {err[-2000:]}")
            works.append(work_seconds(out))
        #: how long the engine works once started (Python's start-up and exit left out)
        self.duration = min(works)
        self.reference = state(reference)
        shutil.rmtree(reference.root)
        self.host = clone(self.prepared, self.workdir / "trial")

    def _host(self) -> IsolatedHost:
        reset(self.host, self.prepared)
        if state(self.host) != self.before:
            raise AssertionError("the trial host could not be put back as prepared")
        return self.host

    def at_step(self, label: str) -> Trial:
        host = self._host()
        trial = Trial(label)
        proc = host.run(driver_argv(write_spec(host, {"ops": trial_ops(self.new), "kill_at": label})), env=env(),
                        check=False, timeout=600)
        trial.killed = proc.returncode
        if proc.returncode != -signal.SIGKILL:
            trial.problems.append(f"the run was not killed at {label} (exit {proc.returncode}): {proc.stderr[-500:]}")
        else:
            judge(host, trial, self.baseline, self.reference, self.before, self.new)
        return trial

    def at_random(self, rng: random.Random) -> Trial:
        host = self._host()
        delay = rng.uniform(0, self.duration)
        trial = Trial(f"random:{delay:.3f}s")
        engine = start_engine(host, {"ops": trial_ops(self.new)})
        wait_for(engine, "started")  # the random moment falls in the work, not in Python's start-up
        time.sleep(delay)
        engine.send_signal(signal.SIGKILL)
        out, _ = engine.communicate(timeout=60)
        trial.killed = engine.returncode
        if engine.returncode == 0:  # the run was over first: later draws come from its own length
            self.duration = min(self.duration, work_seconds(out))
        judge(host, trial, self.baseline, self.reference, self.before, self.new)
        return trial

    def steps(self) -> list[str]:
        homes = sorted({0, self.new // 2, self.new - 1})
        return DB_STEPS + [f"home:{i}:{s}" for i in homes for s in HOME_STEPS] + ["commit"]
