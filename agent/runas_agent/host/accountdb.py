"""The account databases on disk (host side): read once, each changed file written once, under the
locks shadow-utils takes, with the caches told afterwards.

    db = accountdb.load("/etc", rules=naming.DEBIAN)     # passwd, shadow, group, gshadow, read once
    db.add_account("alice", 1234567890, 1234567890, comment=..., home=..., shell=...)
    db.park(1234567891, shell="/usr/sbin/nologin")
    result = accountdb.commit(db)                        # lock, write what changed, unlock, flush caches

Locking. `lckpwdf()`'s lock (a POSIX write lock on the whole of /etc/.pwd.lock, taken with a
timeout) serialises every tool that changes the databases: shadow-utils takes it before its per-file
locks, systemd-sysusers takes only it. It is taken here with fcntl() exactly as glibc takes it, not
by calling glibc's lckpwdf(): that one times out with alarm() and a process-wide SIGALRM handler,
which a multi-threaded daemon cannot afford, and it only knows /etc. Then shadow-utils' lock file of
each database is taken as lib/commonio.c does it: a file `<db>.<pid>` holding the PID is hard-linked
to `<db>.lock`; a link count of 2 proves the lock ours; a lock file whose PID no longer runs is
stale and is replaced.

Writing (per file, as shadow-utils and systemd-sysusers do): a temporary file in the same directory
with the owner, group, mode and SELinux label of the file it replaces, written and fsync'ed; the
previous version kept as `<db>-`; rename over the file; fsync of the directory. A file nobody
changed is not written. The files are written in this order (core.accountdb.WRITE_ORDER):

    gshadow, group, shadow, passwd

A name becomes visible to NSS (passwd, group) only after its secret counterpart (shadow, gshadow)
is in place, and a user only after its group: whatever point a crash interrupts the write at,
every user has its primary group, no new user resolves without its locked shadow entry, and group
members are removed before the user they belonged to is renamed. What a crash can leave (and the
same edits, run again, finish, because edits find their pieces by UID): a group or shadow entry
already under its new name while the passwd line still has the old one, a gshadow/shadow entry
without its group/passwd line yet, or a member list naming an account that the passwd write was
about to add. None of these lets anyone log in or resolve as a name that is not meant to.

Caches: `nscd -i passwd` / `nscd -i group` (exit 1 = nscd not running) and `sss_cache -UG` when
those programs are installed, after the locks are released, as shadow-utils does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from runas_agent.core import naming
from runas_agent.core.accountdb import WRITE_ORDER, AccountDB, AccountEditError, ShadowPolicy
from runas_agent.errors import AgentError, CommandError, LockBusyError
from runas_agent.host import subp

DATABASES = ("passwd", "shadow", "group", "gshadow")
#: shadow-utils takes its per-file locks in this order (useradd: passwd, group, gshadow, shadow)
LOCK_ORDER = ("passwd", "group", "gshadow", "shadow")
#: glibc's lckpwdf() gives up after 15 seconds; so do we by default
LCKPWDF_TIMEOUT = 15.0
SELINUX_XATTR = "security.selinux"
#: where to look for nscd and sss_cache besides PATH
SBIN = "/usr/sbin:/sbin"

#: called at each step of a write: (database, step); steps: "temp", "backup", "rename", "sync"
StepHook = Callable[[str, str], None]


class DatabaseError(AgentError):
    """A database could not be read or written (the error names the file)."""


# --- reading -------------------------------------------------------------------------------------

def _path(etc: str, kind: str) -> str:
    return os.path.join(etc, kind)


def read_databases(etc: str = "/etc") -> dict[str, Optional[bytes]]:
    """The four files' bytes (None for a shadow or gshadow file the host does not have)."""
    out: dict[str, Optional[bytes]] = {}
    for kind in DATABASES:
        path = _path(etc, kind)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            if kind in ("passwd", "group"):
                raise DatabaseError(f"{path} does not exist") from None
            out[kind] = None
            continue
        except OSError as exc:
            raise DatabaseError(f"{path}: cannot open: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise DatabaseError(f"{path} is not a regular file")
            out[kind] = handle.read()
    return out


def login_defs(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#"):
            values[parts[0]] = parts[1]
    return values


def shadow_policy(etc: str = "/etc", today: int | None = None) -> ShadowPolicy:
    """What useradd puts in a new shadow entry: today's day number and login.defs' aging fields."""
    try:
        with open(os.path.join(etc, "login.defs"), encoding="utf-8", errors="replace") as handle:
            defs = login_defs(handle.read())
    except FileNotFoundError:
        defs = {}

    def number(key: str) -> int | None:
        try:
            value = int(defs[key])
        except (KeyError, ValueError):
            return None
        return value if value >= 0 else None

    day = int(time.time() // 86400) if today is None else today
    return ShadowPolicy(day, number("PASS_MIN_DAYS"), number("PASS_MAX_DAYS"), number("PASS_WARN_AGE"))


def load(etc: str = "/etc", *, rules: naming.NameRules, policy: ShadowPolicy | None = None) -> AccountDB:
    """Read the four databases once into a model to edit. Nothing is locked: `commit` locks, and
    replays the edits on a fresh read when the files changed in between."""
    data = read_databases(etc)
    return AccountDB(data["passwd"] or b"", data["shadow"], data["group"] or b"", data["gshadow"],
                     rules=rules, policy=policy or shadow_policy(etc))


def _same_files(db: AccountDB, current: dict[str, Optional[bytes]]) -> bool:
    for kind in DATABASES:
        table = db.tables[kind]
        if current[kind] != (table.original if table.present else None):
            return False
    return True


# --- locking -------------------------------------------------------------------------------------

def _take_pwd_lock(etc: str, timeout: float) -> int:
    """The lock lckpwdf() takes: a write lock on the whole of <etc>/.pwd.lock, waiting up to
    `timeout` seconds."""
    path = os.path.join(etc, ".pwd.lock")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise DatabaseError(f"{path}: cannot lock: {exc.strerror}") from None
        if time.monotonic() >= deadline:
            os.close(fd)
            raise LockBusyError(f"{path} is locked by another program changing the account databases "
                                f"(waited {timeout:g}s)")
        time.sleep(0.05)


def _lock_holder(lock: str) -> int | None:
    """The PID a shadow-utils lock file names, or None when it names none."""
    try:
        with open(lock, "rb") as handle:
            text = handle.read(31).split(b"\0", 1)[0].strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _link_lock(mine: str, lock: str) -> bool:
    try:
        os.link(mine, lock)
    except FileExistsError:
        return False
    return os.stat(mine).st_nlink == 2


def _take_file_lock(path: str) -> str:
    """shadow-utils' lock of one database (lib/commonio.c, do_lock_file). Returns the lock path."""
    pid = os.getpid()
    mine, lock = f"{path}.{pid}", f"{path}.lock"
    fd = os.open(mine, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{pid}\0".encode())
        os.fdatasync(fd)
    finally:
        os.close(fd)
    try:
        if _link_lock(mine, lock):
            return lock
        holder = _lock_holder(lock)
        if holder is None:
            raise LockBusyError(f"{lock} exists and names no process; remove it if nothing is changing {path}")
        if _alive(holder):
            raise LockBusyError(f"{lock} is held by process {holder}")
        os.unlink(lock)  # stale: its process is gone
        if _link_lock(mine, lock):
            return lock
        raise LockBusyError(f"{lock} was taken by another process meanwhile")
    finally:
        os.unlink(mine)


class DatabaseLock:
    """Everything shadow-utils takes before it changes a database: lckpwdf's lock, then the lock
    file of each database the host has. Per-file locks are tried a few times over a second (the
    programs that take them without lckpwdf hold them briefly), then the lock is refused."""

    def __init__(self, etc: str = "/etc", timeout: float = LCKPWDF_TIMEOUT, retries: int = 10):
        self.etc = etc
        self.timeout = timeout
        self.retries = retries
        self.pwd_fd: int | None = None
        self.locks: list[str] = []

    def __enter__(self) -> "DatabaseLock":
        try:
            self.pwd_fd = _take_pwd_lock(self.etc, self.timeout)
            for kind in LOCK_ORDER:
                path = _path(self.etc, kind)
                if os.path.lexists(path):
                    self.locks.append(self._file_lock(path))
        except OSError as exc:
            self.__exit__()
            raise DatabaseError(f"{exc.filename or self.etc}: cannot lock: {exc.strerror or exc}") from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def _file_lock(self, path: str) -> str:
        for attempt in range(self.retries):
            try:
                return _take_file_lock(path)
            except LockBusyError:
                if attempt == self.retries - 1:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def __exit__(self, *exc_info) -> None:
        for lock in reversed(self.locks):
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
        self.locks = []
        if self.pwd_fd is not None:
            os.close(self.pwd_fd)  # closing releases the fcntl lock
            self.pwd_fd = None


# --- writing -------------------------------------------------------------------------------------

def _label(fd: int) -> bytes | None:
    """The SELinux label of an open file, when it has one (and the filesystem keeps labels)."""
    try:
        return os.getxattr(fd, SELINUX_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_like(path: str, data: bytes, st: os.stat_result, label: bytes | None) -> None:
    """Create `path` afresh (a leftover from an interrupted write is replaced) holding `data`, with
    the owner, mode and label given, synced to disk."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        if label is not None:
            os.setxattr(fd, SELINUX_XATTR, label)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)


def _replace(etc: str, kind: str, old: bytes, new: bytes, step: StepHook) -> None:
    path = _path(etc, kind)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        label = _label(fd)
    finally:
        os.close(fd)
    temp = f"{path}.runas-agent-new"
    _write_like(temp, new, st, label)
    step(kind, "temp")
    backup_temp = f"{path}-.runas-agent-new"
    _write_like(backup_temp, old, st, label)
    os.utime(backup_temp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(backup_temp, f"{path}-")
    step(kind, "backup")
    os.rename(temp, path)
    step(kind, "rename")
    _fsync_dir(etc)
    step(kind, "sync")


def write_databases(etc: str, db: AccountDB, step: StepHook | None = None) -> list[str]:
    """Write every database `db` changed, in WRITE_ORDER; the caller holds the lock. Returns the
    databases written."""
    written: list[str] = []
    for kind, data in db.rendered().items():
        try:
            _replace(etc, kind, db.tables[kind].original, data, step or (lambda *_: None))
        except OSError as exc:
            raise DatabaseError(f"{_path(etc, kind)}: cannot write: {exc.strerror or exc}"
                                + (f" (already written: {', '.join(written)})" if written else "")) from None
        written.append(kind)
    return written


# --- caches --------------------------------------------------------------------------------------

def _which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH", os.defpath) + ":" + SBIN)


def flush_caches(run: Callable = subp.run) -> list[str]:
    """Tell nscd and sssd that passwd and group changed, as shadow-utils does. Returns problems
    (the databases are written by then: a cache that cannot be told is worth a warning)."""
    problems: list[str] = []
    calls: list[tuple[list[str], tuple[int, ...]]] = []
    if _which("nscd"):
        # exit 1: nscd is installed but not running, so it caches nothing
        calls += [(["nscd", "-i", "passwd"], (0, 1)), (["nscd", "-i", "group"], (0, 1))]
    if _which("sss_cache"):
        calls.append((["sss_cache", "-UG"], (0,)))
    for argv, ok in calls:
        try:
            run(argv, ok=ok, timeout=30.0)
        except CommandError as exc:
            problems.append(f"the account databases changed but {argv[0]} could not be told: {exc}")
    return problems


# --- commit --------------------------------------------------------------------------------------

@dataclass
class CommitResult:
    #: the databases written, in the order they were written
    written: list[str] = field(default_factory=list)
    #: edits refused when replayed on files that changed after they were read: ((method, args,
    #: kwargs), error); every other edit was written
    refused: list[tuple[tuple, AccountEditError]] = field(default_factory=list)
    #: whether the files had changed since `load` (the edits were replayed on a fresh read)
    replayed: bool = False
    #: cache notifications that failed
    warnings: list[str] = field(default_factory=list)
    #: the model as written
    db: AccountDB | None = None


def commit(db: AccountDB, etc: str = "/etc", *, step: StepHook | None = None,
           lock_timeout: float = LCKPWDF_TIMEOUT, run: Callable = subp.run) -> CommitResult:
    """Write the edits made to `db`: lock, read the files again, replay the edits on them if they
    changed since `load` (a concurrent useradd), write each changed database once, unlock, and tell
    the caches. A model nobody edited is not even locked. Raises LockBusyError or DatabaseError; edits refused on replay are reported in the
    result, the others are written."""
    result = CommitResult(db=db)
    if not db.journal:
        return result  # nothing was edited: nothing to lock, read or write
    with DatabaseLock(etc, lock_timeout):
        current = read_databases(etc)
        if not _same_files(db, current):
            fresh = AccountDB(current["passwd"] or b"", current["shadow"], current["group"] or b"",
                              current["gshadow"], rules=db.rules, policy=db.policy)
            result.refused = fresh.replay(db.journal)
            result.replayed = True
            result.db = db = fresh
        result.written = write_databases(etc, db, step)
    if result.written:
        result.warnings = flush_caches(run)
    return result


__all__ = ["CommitResult", "DatabaseError", "DatabaseLock", "WRITE_ORDER", "commit", "flush_caches", "load",
           "read_databases", "shadow_policy", "write_databases"]
