"""The processes of an account's UID (host side): which UIDs run something, and ending every process
of one UID before its account is parked or re-enabled.

`usermod -l` refuses to rename an account while any process has its UID as real, effective or saved
user ID (shadow's user_busy reads the `Uid:` line of /proc/<pid>/status). Those are the processes
read and ended here, the same test.
"""

from __future__ import annotations

import os

import psutil

#: seconds a process has between SIGTERM and SIGKILL
GRACE = 5.0
#: passes over the process table: a process that forks while being ended leaves children behind
ROUNDS = 3


def _status_uids(proc_root: str, pid: str) -> tuple[int, ...]:
    """Real, effective and saved UID of a live process; () for a zombie (usermod skips those too: its
    root is gone) or a process that is gone."""
    try:
        with open(f"{proc_root}/{pid}/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"State:") and b"Z" in line.split()[1:2]:
                    return ()
                if line.startswith(b"Uid:"):
                    return tuple(int(v) for v in line.split()[1:4])
    except (OSError, ValueError):
        pass
    return ()


def running_uids(proc_root: str = "/proc") -> frozenset[int]:
    """Every UID some process has as its real, effective or saved user ID."""
    uids: set[int] = set()
    with os.scandir(proc_root) as entries:
        for entry in entries:
            if entry.name.isdigit():
                uids.update(_status_uids(proc_root, entry.name))
    return frozenset(uids)


def processes_of(uid: int) -> list[psutil.Process]:
    """The live processes with `uid` as real, effective or saved UID (zombies left out)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if uid in tuple(proc.uids()) and proc.status() != psutil.STATUS_ZOMBIE and proc.pid != os.getpid():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return found


def end_processes(uid: int, grace: float = GRACE) -> list[int]:
    """SIGTERM to every process of `uid`, SIGKILL to those still there after `grace` seconds, until
    none is left or ROUNDS passes are done. Returns the pids still running."""
    for _ in range(ROUNDS):
        procs = processes_of(uid)
        if not procs:
            return []
        for proc in procs:
            _signal(proc, psutil.Process.terminate)
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            _signal(proc, psutil.Process.kill)
        psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in processes_of(uid)]


def _signal(proc: psutil.Process, send: object) -> None:
    try:
        send(proc)  # type: ignore[operator]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        pass
