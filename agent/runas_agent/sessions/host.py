"""Reading the host for sessions (host side): the SSM agent's state directories and files, the
`ssm-session-worker` processes and their children, and ending one session's processes.

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
from dataclasses import dataclass, field

import psutil

from runas_agent.sessions.model import MAX_STATE_BYTES, valid_session_id
from runas_agent.sessions.tracker import Child, Worker

log = logging.getLogger("runas_agent.sessions")

WORKER = "ssm-session-worker"
#: the kernel keeps 15 characters of a process name (comm)
_WORKER_COMM = WORKER[:15]
#: <root>/<instance-id>/document/state/current/<sessionId>. The SSM agent's data path is
#: /var/lib/amazon/ssm/ (appconfig constants_unix.go), for the snap too (classic confinement).
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


@dataclass
class ProcessTable:
    """One pass over /proc: the pids named like a session worker, every process's children, and the
    session leaders."""

    candidates: list[int] = field(default_factory=list)
    children: dict[int, list[int]] = field(default_factory=dict)
    leaders: set[int] = field(default_factory=set)


def _stat_line(proc_root: str, name: str) -> bytes | None:
    try:
        fd = os.open(f"{proc_root}/{name}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.read(fd, 1024)
        finally:
            os.close(fd)
    except OSError:
        return None       # gone meanwhile, or unreadable


def _process_table(proc_root: str = "/proc") -> ProcessTable:
    """One pass over /proc reading each process's stat line only: name, parent and session.
    (psutil.process_iter costs several times more.)"""
    table = ProcessTable()
    prefix = _WORKER_COMM.encode()
    with os.scandir(proc_root) as entries:
        for entry in entries:
            data = _stat_line(proc_root, entry.name) if entry.name.isdigit() else None
            if data is None:
                continue
            try:
                close = data.rindex(b")")
                comm = data[data.index(b"(") + 1:close]
                fields = data[close + 2:].split(b" ", 5)
                ppid, session = int(fields[1]), int(fields[3])
            except (ValueError, IndexError):
                continue
            pid = int(entry.name)
            table.children.setdefault(ppid, []).append(pid)
            if session == pid:
                table.leaders.add(pid)
            if comm.startswith(prefix):
                table.candidates.append(pid)
    return table


def _child(pid: int, leaders: set[int]) -> Child | None:
    try:
        uid = psutil.Process(pid).uids().real
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return Child(pid, uid, _account(uid), pid in leaders)


def scan_workers(trusted_uids: tuple[int, ...] = (0,)) -> dict[str, Worker]:
    """Every live session worker and its children, by session id. One pass over the process table
    reading only each process's stat line; command lines and credentials only of workers and their
    children."""
    table = _process_table()
    found: dict[str, Worker] = {}
    for pid in table.candidates:
        try:
            proc = psutil.Process(pid)
            sid = _session_of(proc, trusted_uids)
            started = proc.create_time() if sid else 0.0
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if sid is None:
            continue
        previous = found.get(sid)
        # Two workers claiming one session: keep the older (the first to start it).
        if previous is None or started < previous.started:
            children = (_child(c, table.leaders) for c in sorted(table.children.get(pid, [])))
            found[sid] = Worker(sid, pid, started, tuple(c for c in children if c is not None))
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


@dataclass(frozen=True)
class Stop:
    """One session to end: its worker (pid and create_time) and its shell, when known."""

    session_id: str
    worker_pid: int
    worker_started: float | None = None
    shell_pid: int | None = None


def _shell_tree(worker: psutil.Process, shell_pid: int | None) -> list[psutil.Process]:
    """What runs on the person's behalf beneath a worker: the shell and everything below it, and any
    other descendant not running as root. The worker's own root children (`sh -c "id <name>"`
    look-ups, the `script` that converts the session log) are left to the worker."""
    tree = []
    below_shell: set[int] = set()
    for proc in worker.children(recursive=True):
        try:
            if proc.pid == shell_pid or proc.ppid() in below_shell or proc.uids().real != 0:
                tree.append(proc)
                below_shell.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return tree


def _signal(procs: list[psutil.Process], kill: bool) -> None:
    for proc in procs:
        try:
            proc.kill() if kill else proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def stop_sessions(stops: list[Stop], grace: float = 5.0, trusted_uids: tuple[int, ...] = (0,)) -> list[str]:
    """End sessions the way the SSM agent's own TerminateSession does, and more thoroughly: SIGTERM to
    each worker (it kills its shell, converts and uploads the session log, then exits by itself; it
    is given time for that and is not killed here), and SIGTERM to each session's shell and
    everything beneath it, SIGKILL to what of those is left after `grace` seconds (one wait for all).
    The shells' trees are taken before any signal: once the worker kills its shell, the shell's
    background jobs are reparented away from the worker. Only these sessions' processes are
    signalled, never an account's; a pid that is no longer its session's worker is left alone.
    Returns the session ids signalled."""
    workers: dict[str, psutil.Process] = {}
    trees: dict[str, list[psutil.Process]] = {}
    for stop in stops:
        if not worker_alive(stop.worker_pid, stop.worker_started, stop.session_id, trusted_uids):
            continue
        try:
            worker = psutil.Process(stop.worker_pid)
            trees[stop.session_id] = _shell_tree(worker, stop.shell_pid)
            workers[stop.session_id] = worker
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    everything = [proc for tree in trees.values() for proc in tree]
    _signal(list(workers.values()), kill=False)
    _signal(everything, kill=False)
    _, alive = psutil.wait_procs(everything, timeout=grace)
    _signal(alive, kill=True)
    if alive:
        psutil.wait_procs(alive, timeout=grace)
    for session_id, tree in trees.items():
        log.info("ended session %s: SIGTERM to worker %d, %d process(es) of its shell ended (%d killed)",
                 session_id, workers[session_id].pid, len(tree), len([p for p in alive if p in tree]))
    return list(trees)


def kill_worker(stop: Stop, trusted_uids: tuple[int, ...] = (0,)) -> bool:
    """SIGKILL a session's worker and whatever still runs beneath it, if `stop.worker_pid` still is
    that session's worker. True when it was."""
    if not worker_alive(stop.worker_pid, stop.worker_started, stop.session_id, trusted_uids):
        return False
    try:
        worker = psutil.Process(stop.worker_pid)
        procs = [worker] + worker.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    _signal(procs, kill=True)
    psutil.wait_procs(procs, timeout=5.0)
    return True
