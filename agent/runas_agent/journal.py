"""The one journal writer (host side): records (runas_agent/events.py) to journald through
systemd-python, else appended as JSON lines to a fallback file; used by the sync loop and the session
watcher alike.

journald drops a record silently when nobody listens on its socket (no journald, or a stale socket),
so whether it listens is asked before every record. A record that can go nowhere is logged as an
error with its content, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any, Callable, Literal

from runas_agent.core.display import field
from runas_agent.events import Priority, Record

log = logging.getLogger("runas_agent.journal")

JOURNAL_SOCKET = "/run/systemd/journal/socket"
#: journal: journald took it; file: appended to the fallback file; stderr: only echoed; lost: nowhere
Destination = Literal["journal", "file", "stderr", "lost"]
_LEVELS = {Priority.EMERG: logging.CRITICAL, Priority.ALERT: logging.CRITICAL, Priority.CRIT: logging.CRITICAL,
           Priority.ERR: logging.ERROR, Priority.WARNING: logging.WARNING}


def journald_listening(path: str = JOURNAL_SOCKET) -> bool:
    """Is a journald reading `path`?"""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM=dev:ino when stderr goes to the journal (then, echoing records to
    stderr would show each one twice)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def _systemd_sendv() -> Callable[..., Any] | None:
    try:
        from systemd import journal
    except ImportError:  # the distro's python3-systemd is missing: no journald, the fallback only
        return None
    return journal.sendv


class Journal:
    """Writes records: to journald when it listens, otherwise appended to `fallback` (a JSON-lines
    file) when one is given. With `echo` every record is also logged to stderr (None: unless stderr
    is the journal already). `sendv` and `listening` replace journald in tests."""

    def __init__(self, fallback: str | None = None, *, echo: bool | None = False,
                 sendv: Callable[..., Any] | None = None, listening: Callable[[], bool] | None = None,
                 socket_path: str = JOURNAL_SOCKET):
        self.fallback = fallback
        self.echo = (not stderr_is_journal()) if echo is None else echo
        self._sendv = sendv if sendv is not None else _systemd_sendv()
        if listening is None:
            listening = (lambda: True) if sendv is not None else (lambda: journald_listening(socket_path))
        self._listening = listening

    def write(self, record: Record) -> Destination:
        """Write one record; returns where it went."""
        if self.echo:
            log.log(_LEVELS.get(record.priority, logging.INFO), "%s", field(record.message))
        if self._sendv is not None and self._listening():
            try:
                self._sendv(*record.journal_fields())
                return "journal"
            except OSError as exc:
                log.warning("journald refused a record (%s)%s", exc,
                            f"; writing it to {self.fallback}" if self.fallback else "")
        if self.fallback is not None:
            return self._append(record)
        if self.echo:
            return "stderr"
        log.error("journal record lost (journald is not listening): %s", json.dumps(record.as_json(time.time())))
        return "lost"

    def _append(self, record: Record) -> Destination:
        assert self.fallback is not None
        line = json.dumps(record.as_json(time.time()), ensure_ascii=False, sort_keys=True) + "\n"
        try:
            directory = os.path.dirname(self.fallback)
            if directory:
                os.makedirs(directory, mode=0o750, exist_ok=True)
            fd = os.open(self.fallback, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
            try:
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("journal record lost: cannot write %s: %s: %s", self.fallback, exc.strerror, line.strip())
            return "lost"
        return "file"
