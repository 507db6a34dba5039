"""Home directories (host side): created 0700 for their account with the skeleton copied in, and
renamed with the account, never following a symbolic link and never overwriting what is there.

Creating a home. The skeleton is copied into a staging directory `<base>/.runas-agent-home.<uid>`
that is owned by root and mode 0700 while the copy runs, so no other user can enter it, let alone
swap one of its directories for a symbolic link. Once the copy is complete the staging directory is
given to the account (owner, group, 0700) and renamed to the home's name with RENAME_NOREPLACE. The
rename is the completion marker: a home that exists under its name is complete, and a staging
directory left by an interrupted run is recognised by its name and owner and finished by the next
run (still root's: the copy is redone, overwriting only inside it; already the account's: it is
complete and only renamed). Nothing is ever copied into an existing home, and an existing home
owned by anyone but the account is a conflict, reported and left as it is.

Every path below the base directory is opened relative to a directory descriptor: with openat2()
and RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where the kernel has it (Linux 5.6), otherwise one
component at a time with O_NOFOLLOW|O_DIRECTORY. The base directory itself (`/home`) is the
administrator's: its path may contain symbolic links, but every directory on the way must be
root's and writable by nobody else (or sticky), or nothing is created under it.

Renaming a home (an account renamed): renameat2(RENAME_NOREPLACE) between the two parents'
descriptors, on one filesystem; a home is never copied and deleted.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from dataclasses import dataclass, field
from typing import Callable, Iterable

from runas_agent.errors import AgentError

HOME_MODE = 0o700
STAGING_PREFIX = ".runas-agent-home."

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RENAME_NOREPLACE = 1
_SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall tables merged)
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "ppc64le": 357, "s390x": 347, "riscv64": 276}

#: called at each step of a home's creation: (home path, step); steps: "staging", "copied", "owned", "renamed"
StepHook = Callable[[str, str], None]


class HomeError(AgentError):
    """A home could not be created or moved. `account` names the account."""

    def __init__(self, account: str, path: str, reason: str):
        self.account = account
        self.path = path
        super().__init__(f"{account}: home {path}: {reason}")


class HomeConflict(HomeError):
    """Something is already where the home should be and it is not the account's; left as it is."""


# --- system calls Python does not wrap -------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _syscall(number: int, *args) -> int:
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0,
            resolve: int = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _syscall(_SYS_OPENAT2, ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(path)),
                    ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))


def have_openat2() -> bool:
    """Whether this kernel has openat2() (probed once)."""
    global _openat2_works
    if _openat2_works is None:
        root = os.open("/", os.O_PATH | os.O_CLOEXEC)
        try:
            os.close(openat2(root, ".", os.O_PATH | os.O_DIRECTORY))
            _openat2_works = True
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
                raise
            _openat2_works = False
        finally:
            os.close(root)
    return _openat2_works


def renameat2_noreplace(old_dir: int, old: str, new_dir: int, new: str) -> None:
    """rename(2) that fails with EEXIST instead of replacing `new`. Where the kernel or filesystem
    lacks RENAME_NOREPLACE (EINVAL, ENOSYS: older NFS), falls back to checking and renaming: the
    callers' parents are root's and writable by nobody else, so only root could race it."""
    number = _SYS_RENAMEAT2.get(platform.machine())
    if number is not None:
        try:
            _syscall(number, ctypes.c_int(old_dir), ctypes.c_char_p(os.fsencode(old)),
                     ctypes.c_int(new_dir), ctypes.c_char_p(os.fsencode(new)), ctypes.c_uint(RENAME_NOREPLACE))
            return
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
    if _lstat_at(new_dir, new) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), new)
    os.rename(old, new, src_dir_fd=old_dir, dst_dir_fd=new_dir)


# --- walking without following links ---------------------------------------------------------

def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_beneath(dir_fd: int, relpath: str, flags: int, mode: int = 0) -> int:
    """Open `relpath` below `dir_fd` without following any symbolic link on the way or at the end
    and without leaving `dir_fd` (ELOOP/EXDEV/ENOTDIR when something is in the way)."""
    if have_openat2():
        return openat2(dir_fd, relpath, flags | os.O_NOFOLLOW, mode)
    parts = [p for p in relpath.split("/") if p]
    if not parts or any(p == ".." for p in parts):
        raise OSError(errno.EXDEV, "path leaves its directory", relpath)
    current = dir_fd
    try:
        for part in parts[:-1]:
            following = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            if current != dir_fd:
                os.close(current)
            current = following
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
    finally:
        if current != dir_fd:
            os.close(current)


def _trusted(st: os.stat_result) -> bool:
    """Root's, and nobody else can replace its entries (not group/other-writable, or sticky)."""
    return st.st_uid == 0 and (not st.st_mode & 0o022 or bool(st.st_mode & stat.S_ISVTX))


def open_trusted_dir(path: str, account: str = "") -> int:
    """A descriptor of the directory `path` (symbolic links resolved: it is the administrator's
    setting), after checking that every directory from / down to it is root's and writable by
    nobody else, so no other user can swap any of them while we work below it."""
    real = os.path.realpath(path)
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [p for p in real.split("/") if p] + [None]:
            if not _trusted(os.fstat(fd)):
                raise HomeError(account, path, f"a directory on the way to {real} is not root's or is writable by others")
            if part is None:
                return fd
            following = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = following
    except OSError as exc:
        os.close(fd)
        raise HomeError(account, path, f"cannot open {real}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    raise AssertionError("unreachable")


# --- the skeleton ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SkelEntry:
    path: str  # relative to the skeleton, parents listed before children
    kind: str  # "dir", "file" or "link"
    mode: int
    data: bytes  # a file's content or a link's target


@dataclass(frozen=True)
class Skeleton:
    entries: tuple[SkelEntry, ...] = ()

    @classmethod
    def read(cls, path: str) -> "Skeleton":
        """The skeleton directory read once (directories, regular files, symbolic links; anything
        else is not copied, as useradd copies nothing but these either). A missing one is empty."""
        if not os.path.isdir(path):
            return cls()
        entries = []
        for root, dirs, files in os.walk(path):
            dirs.sort()
            rel = os.path.relpath(root, path)
            for name in dirs + sorted(files):
                entry = _skel_entry(os.path.join(root, name), name if rel == "." else os.path.join(rel, name))
                if entry is not None:
                    entries.append(entry)
        return cls(tuple(entries))


def _skel_entry(source: str, rel: str) -> SkelEntry | None:
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        return SkelEntry(rel, "link", 0, os.fsencode(os.readlink(source)))
    if stat.S_ISDIR(st.st_mode):
        return SkelEntry(rel, "dir", stat.S_IMODE(st.st_mode), b"")
    if stat.S_ISREG(st.st_mode):
        with open(source, "rb") as handle:
            return SkelEntry(rel, "file", stat.S_IMODE(st.st_mode), handle.read())
    return None


def current_umask() -> int | None:
    """The process's umask (from /proc, without changing it), or None when it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _make(dir_fd: int, entry: SkelEntry) -> tuple[int, bool]:
    """Create (or open what an interrupted copy left of) one directory or file; returns its
    descriptor and whether it was created just now."""
    if entry.kind == "dir":
        try:
            os.mkdir(entry.path.rsplit("/", 1)[-1], entry.mode & 0o777, dir_fd=dir_fd)
            fresh = True
        except FileExistsError:
            fresh = False
        name = entry.path.rsplit("/", 1)[-1]
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd), fresh
    name = entry.path.rsplit("/", 1)[-1]
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd, fresh = os.open(name, flags | os.O_CREAT | os.O_EXCL, entry.mode & 0o777, dir_fd=dir_fd), True
    except FileExistsError:
        fd, fresh = os.open(name, flags | os.O_TRUNC, dir_fd=dir_fd), False
    view = memoryview(entry.data)
    while view:
        view = view[os.write(fd, view):]
    return fd, fresh


def _copy_entry(staging: int, entry: SkelEntry, uid: int, gid: int, umask: int | None = None) -> None:
    """One skeleton entry into the (root-only) staging directory; whatever an interrupted copy left
    under that name is replaced. The mode is set explicitly unless creating the entry under `umask`
    already gave it exactly (a batch of homes saves a system call per file)."""
    parent, name = os.path.split(entry.path)
    dir_fd = open_beneath(staging, parent, os.O_RDONLY | os.O_DIRECTORY) if parent else staging
    try:
        if entry.kind == "link":
            if _lstat_at(dir_fd, name) is not None:
                os.unlink(name, dir_fd=dir_fd)
            os.symlink(os.fsdecode(entry.data), name, dir_fd=dir_fd)
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            return
        fd, fresh = _make(dir_fd, entry)
        try:
            os.fchown(fd, uid, gid)
            exact = fresh and umask is not None and entry.mode & ~umask == entry.mode and not entry.mode & 0o7000
            if not exact:
                os.fchmod(fd, entry.mode)
        finally:
            os.close(fd)
    finally:
        if dir_fd != staging:
            os.close(dir_fd)


# --- homes -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class HomeSpec:
    account: str
    path: str
    uid: int
    gid: int


def _split(spec_account: str, path: str) -> tuple[str, str]:
    """(parent, name) of a home path, which must be absolute and canonical (no trailing '/', '.',
    '..' or '//': the path in passwd is the path made)."""
    parent, leaf = os.path.split(path)
    if not os.path.isabs(path) or os.path.normpath(path) != path or leaf in ("", ".", "..") \
            or leaf.startswith(STAGING_PREFIX):
        raise HomeError(spec_account, path, "not a usable home path")
    return parent, leaf


def _existing_home(spec: HomeSpec, base: int, leaf: str) -> bool:
    """True when the home exists and is the account's; HomeConflict when something else is there."""
    st = _lstat_at(base, leaf)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise HomeConflict(spec.account, spec.path, "exists and is not a directory (a link or a file); left alone")
    if st.st_uid != spec.uid:
        raise HomeConflict(spec.account, spec.path, f"exists and is owned by uid {st.st_uid}, not by the account; "
                                                    "left alone and not used")
    return True


def _open_staging(spec: HomeSpec, base: int, name: str) -> tuple[int, bool, bool]:
    """The staging directory (made when missing): its descriptor, whether its copy is already
    complete, and whether an earlier run had made it."""
    try:
        os.mkdir(name, 0o700, dir_fd=base)
        resumed = False
    except FileExistsError:
        resumed = True
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=base)
    st = os.fstat(fd)
    if st.st_uid == spec.uid and spec.uid != 0:
        return fd, True, resumed
    if st.st_uid != 0:
        os.close(fd)
        raise HomeConflict(spec.account, spec.path, f"its staging directory {name} is owned by uid {st.st_uid}; left alone")
    if st.st_gid != 0:  # a set-group-ID parent hands its group down
        os.fchown(fd, 0, 0)
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.fchmod(fd, 0o700)
    return fd, False, resumed


def create_home(spec: HomeSpec, skeleton: Skeleton, base: int, step: StepHook | None = None,
                umask: int | None = None) -> str:
    """Create `spec`'s home below the trusted directory descriptor `base` (its parent). Returns
    "present" (it existed and is the account's: untouched), "created" or "finished" (an
    interrupted earlier creation was completed). Raises HomeConflict or HomeError. `umask`: the
    process's, when the caller knows it (modes the umask leaves alone are then not set twice)."""
    step = step or (lambda *_: None)
    _, leaf = _split(spec.account, spec.path)
    if _existing_home(spec, base, leaf):
        return "present"
    staging = f"{STAGING_PREFIX}{spec.uid}"
    fd, complete, resumed = _open_staging(spec, base, staging)
    try:
        step(spec.path, "staging")
        if not complete:
            for entry in skeleton.entries:
                _copy_entry(fd, entry, spec.uid, spec.gid, umask)
            step(spec.path, "copied")
            os.fchown(fd, spec.uid, spec.gid)  # the mode is 0700 already
            step(spec.path, "owned")
    finally:
        os.close(fd)
    try:
        renameat2_noreplace(base, staging, base, leaf)
    except FileExistsError:
        raise HomeConflict(spec.account, spec.path, f"appeared while it was being made; the new home is left in {staging}") from None
    step(spec.path, "renamed")
    return "finished" if resumed else "created"


@dataclass
class HomesResult:
    #: home path -> "present" | "created" | "finished"
    done: dict[str, str] = field(default_factory=dict)
    failed: list[tuple[HomeSpec, HomeError]] = field(default_factory=list)


def _syncfs(fd: int) -> None:
    if _libc.syncfs(ctypes.c_int(fd)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def sync_filesystem(path: str) -> None:
    """syncfs() of the filesystem holding `path`: everything written there is on disk afterwards."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _syncfs(fd)
    finally:
        os.close(fd)


def create_homes(specs: Iterable[HomeSpec], skeleton: Skeleton, step: StepHook | None = None,
                 sync: bool = True) -> HomesResult:
    """Create many homes: each parent directory checked and opened once, one failure recorded
    against its account without stopping the others, and (unless `sync` is False: the caller then
    calls sync_filesystem itself) each filesystem synced once at the end, so the homes are on disk
    before the accounts that use them are written. One syncfs() for the batch instead of an fsync()
    per file: a power cut after the accounts are written must not leave a home with empty files,
    since an existing home is never written again."""
    result = HomesResult()
    bases: dict[str, int] = {}
    umask = current_umask()
    try:
        for spec in specs:
            try:
                parent, _ = _split(spec.account, spec.path)
                if parent not in bases:
                    bases[parent] = open_trusted_dir(parent, spec.account)
                result.done[spec.path] = create_home(spec, skeleton, bases[parent], step, umask)
            except HomeError as exc:
                result.failed.append((spec, exc))
            except OSError as exc:
                result.failed.append((spec, HomeError(spec.account, spec.path, exc.strerror or str(exc))))
        for fd in bases.values() if sync else ():
            _syncfs(fd)
    finally:
        for fd in bases.values():
            os.close(fd)
    return result


def rename_home(account: str, old: str, new: str, uid: int) -> str:
    """Move the home of the account with `uid` from `old` to `new` (same filesystem, never over
    anything). Returns "renamed", or "already" when `new` is already the account's and `old` is not
    (an interrupted earlier rename: `old` is gone, or is by now the home of the account that took
    the name, as after a hand-over stopped before its accounts were written). Raises HomeConflict
    or HomeError."""
    old_parent, old_leaf = _split(account, old)
    new_parent, new_leaf = _split(account, new)
    old_base = open_trusted_dir(old_parent, account)
    new_base = old_base if new_parent == old_parent else open_trusted_dir(new_parent, account)
    try:
        source = _lstat_at(old_base, old_leaf)
        if source is None or not stat.S_ISDIR(source.st_mode) or source.st_uid != uid:
            if _existing_home(HomeSpec(account, new, uid, -1), new_base, new_leaf):
                return "already"
        if source is None:
            raise HomeError(account, old, "does not exist, and neither does " + new)
        if not stat.S_ISDIR(source.st_mode) or source.st_uid != uid:
            raise HomeConflict(account, old, f"is not a directory owned by uid {uid}; not moved")
        try:
            renameat2_noreplace(old_base, old_leaf, new_base, new_leaf)
        except FileExistsError:
            raise HomeConflict(account, new, "exists already; the home stays at " + old) from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise HomeError(account, old, f"{new} is on another filesystem; a home is never copied") from None
            raise HomeError(account, old, f"cannot move to {new}: {exc.strerror}") from None
        return "renamed"
    finally:
        os.close(old_base)
        if new_base != old_base:
            os.close(new_base)


def close_home(account: str, path: str, uid: int) -> None:
    """Mode 0700 on the home at `path`, opened without following a link, and only when it is a
    directory of `uid` (anything else is left as it is). Raises HomeError."""
    parent, leaf = _split(account, path)
    base = open_trusted_dir(parent, account)
    try:
        fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=base)
    except OSError as exc:
        raise HomeError(account, path, f"moved, but not closed: {exc.strerror}") from None
    finally:
        os.close(base)
    try:
        if os.fstat(fd).st_uid == uid:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
