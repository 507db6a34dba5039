"""A minimal inotify(7) binding over ctypes (host side): watch a few directories, read what changed.

Only what the session watcher needs: non-blocking, close-on-exec, directory events by name. Where
inotify is unavailable (`Inotify.available()` is False) the watcher polls directory mtimes instead.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
from dataclasses import dataclass

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000

IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("iIII")


@dataclass(frozen=True)
class Event:
    path: str     # the watched directory
    name: str     # the entry inside it ("" for events on the directory itself)
    mask: int


def _libc():
    # The process's own symbols include libc's (no ctypes.util.find_library: it runs ldconfig).
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "inotify_init1"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


class Inotify:
    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self._paths: dict[int, str] = {}
        self._wds: dict[str, int] = {}

    @staticmethod
    def available() -> bool:
        try:
            Inotify().close()
            return True
        except (OSError, AttributeError):
            return False

    def add(self, path: str, mask: int) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._paths[wd] = path
        self._wds[path] = wd

    def remove(self, path: str) -> None:
        wd = self._wds.pop(path, None)
        if wd is not None:
            self._paths.pop(wd, None)
            self._libc.inotify_rm_watch(self.fd, wd)

    def watched(self) -> set[str]:
        return set(self._wds)

    def wait(self, timeout: float, wake_fd: int | None = None) -> bool:
        """Block up to `timeout` seconds for events (or a byte on `wake_fd`). True if any arrived."""
        fds = [self.fd] + ([wake_fd] if wake_fd is not None else [])
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            return False
        return bool(ready)

    def read(self) -> list[Event]:
        """Every queued event, without blocking."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return events
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size: offset + _HEADER.size + length]
                offset += _HEADER.size + length
                name = os.fsdecode(raw.split(b"\0", 1)[0])
                path = self._paths.get(wd, "")
                if mask & IN_IGNORED:
                    stale = self._paths.pop(wd, None)
                    if stale is not None and self._wds.get(stale) == wd:
                        del self._wds[stale]
                events.append(Event(path, name, mask))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
