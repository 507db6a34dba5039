"""The single-instance lock (host side), shared by the daemon and `--once`: syncs never interleave."""

from __future__ import annotations

import errno
import fcntl
import os
import time

from runas_agent.errors import AgentError, LockBusyError


class SyncLock:
    def __init__(self, path: str, wait: float = 0.0):
        self.path = path
        self.wait = wait
        self.fd: int | None = None

    def __enter__(self) -> "SyncLock":
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise AgentError(f"{self.path}: cannot open the sync lock: {exc.strerror or exc}; nothing was changed") from None
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockBusyError(f"another runas-agent sync holds {self.path}"
                                        + (f" (waited {self.wait:g}s)" if self.wait else "")) from None
                time.sleep(0.1)
        self.fd = fd
        return self

    def __exit__(self, *_: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
