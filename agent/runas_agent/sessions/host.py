"""Reading the host for sessions (host side): the SSM agent's state directories and files, the
`ssm-session-worker` processes and the run-as shells beneath them, and ending one session's processes.

A worker is trusted only if it runs as root (the SSM agent's workers do): anyone can start a process
called `ssm-session-worker` with a made-up session id, and such a process must never be taken for a
session, attributed to a person or be the reason another session's processes are signalled.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import stat
from dataclasses import dataclass

import psutil

from runas_agent.sessions.model import MAX_STATE_BYTES, valid_session_id

log = logging.getLogger("runas_agent.sessions")

WORKER = "ssm-session-worker"
#: the kernel keeps 15 characters of a process name (comm)
_WORKER_COMM = WORKER[:15]
#: <root>/<instance-id>/document/state/current/<sessionId>; the same layout under every root
#: (deb/rpm: /var/lib/amazon/ssm; snap: UNCONFIRMED, hence /var/snap/amazon-ssm-agent/common as well,
#: and the roots are configurable).
STATE_SUBDIR = ("document", "state", "current")


def state_dirs(roots: list[str]) -> list[str]:
    """Every existing `current` state directory under the roots, one per instance id."""
    found = []
    for root in roots:
        pattern = os.path.join(glob.escape(root), "*", *STATE_SUBDIR)
        found.extend(p for p in sorted(glob.glob(pattern)) if os.path.isdir(p) and not os.path.islink(p))
    return found


def state_files(dirs: list[str]) -> dict[str, str]:
    """session id -> state file path, for every session state file in `dirs`."""
    out: dict[str, str] = {}
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if valid_session_id(name):
                out.setdefault(name, os.path.join(directory, name))
    return out


def read_state_file(path: str) -> tuple[bytes | None, float]:
    """(content, mtime) of a state file; (None, 0) when it is gone, not a regular file, or too big.
    Never follows a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None, 0.0
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_STATE_BYTES:
            return None, 0.0
        chunks, total = [], 0
        while total <= MAX_STATE_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks), st.st_mtime
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Worker:
    """One live `ssm-session-worker <sessionId>` and the run-as shell it started."""

    session_id: str
    pid: int
    started: float                   # create_time
    shell_pid: int | None = None
    shell_uid: int | None = None
    shell_account: str = ""


def _account(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def _session_of(proc: psutil.Process, trusted_uids: tuple[int, ...]) -> str | None:
    """The session id when `proc` is a trusted ssm-session-worker, else None."""
    try:
        cmdline = proc.cmdline()
        if len(cmdline) < 2 or os.path.basename(cmdline[0]) != WORKER:
            return None
        if proc.uids().real not in trusted_uids:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    sid = cmdline[1]
    return sid if valid_session_id(sid) else None


def _shell(children: list[int]) -> tuple[int | None, int | None, str]:
    """The run-as shell among a worker's children: the first not running as root, else the first."""
    chosen = None
    for pid in sorted(children):
        try:
            uid = psutil.Process(pid).uids().real
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if uid != 0:
            return pid, uid, _account(uid)
        chosen = chosen or (pid, uid)
    if chosen:
        return chosen[0], chosen[1], _account(chosen[1])
    return None, None, ""


def _process_table(proc_root: str = "/proc") -> tuple[list[int], dict[int, list[int]]]:
    """One pass over /proc reading each process's stat line only: the pids whose name looks like a
    session worker, and every process's children. (psutil.process_iter costs several times more.)"""
    candidates: list[int] = []
    children: dict[int, list[int]] = {}
    prefix = _WORKER_COMM.encode()
    with os.scandir(proc_root) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                fd = os.open(f"{proc_root}/{entry.name}/stat", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    data = os.read(fd, 1024)
                finally:
                    os.close(fd)
                close = data.rindex(b")")
                comm = data[data.index(b"(") + 1:close]
                ppid = int(data[close + 2:].split(b" ", 3)[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or unreadable
            pid = int(entry.name)
            children.setdefault(ppid, []).append(pid)
            if comm.startswith(prefix):
                candidates.append(pid)
    return candidates, children


def scan_workers(trusted_uids: tuple[int, ...] = (0,)) -> dict[str, Worker]:
    """Every live session worker, by session id. One pass over the process table reading only each
    process's stat line (name and parent); command lines and credentials only of workers and their
    children."""
    pids, children = _process_table()
    candidates = []
    for pid in pids:
        try:
            candidates.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    found: dict[str, Worker] = {}
    for proc in candidates:
        sid = _session_of(proc, trusted_uids)
        if sid is None:
            continue
        try:
            started = proc.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        shell_pid, shell_uid, account = _shell(children.get(proc.pid, []))
        previous = found.get(sid)
        # Two workers claiming one session: keep the older (the first to start it).
        if previous is None or started < previous.started:
            found[sid] = Worker(sid, proc.pid, started, shell_pid, shell_uid, account)
    return found


def worker_alive(pid: int, started: float | None, session_id: str, trusted_uids: tuple[int, ...] = (0,)) -> bool:
    """Is `pid` still the worker of `session_id` (not a reused PID)?"""
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > 0.05:
            return False
        return _session_of(proc, trusted_uids) == session_id
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def end_sessions(workers: list[tuple[int, float | None, str]], grace: float = 5.0,
                 trusted_uids: tuple[int, ...] = (0,)) -> list[str]:
    """End sessions, each given as (worker pid, worker create_time, session id): SIGTERM every worker
    and the processes beneath it, then SIGKILL whatever is left after `grace` seconds (one wait for
    all). Only these sessions' process trees are signalled, never an account's processes. A pid that is
    no longer its session's worker is left alone. Returns the session ids ended."""
    trees: dict[str, list[psutil.Process]] = {}
    for pid, started, session_id in workers:
        if not worker_alive(pid, started, session_id, trusted_uids):
            continue
        try:
            worker = psutil.Process(pid)
            trees[session_id] = [worker] + worker.children(recursive=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    everything = [proc for tree in trees.values() for proc in tree]
    for proc in everything:
        try:
            proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _, alive = psutil.wait_procs(everything, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    if alive:
        psutil.wait_procs(alive, timeout=grace)
    for session_id, tree in trees.items():
        log.info("ended session %s (worker %d, %d processes)", session_id, tree[0].pid, len(tree))
    return list(trees)
