"""Where session records go (host side): journald through systemd-python, else a JSON-lines audit
file; and the small store of open sessions that makes an agent restart neither repeat a start record
nor lose an end record."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from runas_agent.host.files import dump_json, read_bytes, write_atomic
from runas_agent.sessions.model import Session

log = logging.getLogger("runas_agent.sessions")

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "runas-agent"


def journald_listening(path: str = JOURNAL_SOCKET) -> bool:
    """Is a journald reading `path`? sd_journal_sendv drops records silently when nobody listens
    (no socket, or a stale one), so this is asked before every record."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(path)
        return True
    except OSError:
        return False
    finally:
        sock.close()


class RecordSink:
    """Writes session records: to journald when it listens, otherwise appended to `audit_file`.
    A record that can go nowhere is logged as an error with its content, never dropped silently."""

    def __init__(self, audit_file: str, journal_socket: str = JOURNAL_SOCKET):
        self.audit_file = audit_file
        self.journal_socket = journal_socket
        try:
            from systemd import journal
        except ImportError:  # the distro's python3-systemd is missing: the audit file only
            journal = None
        self._journal = journal

    def emit(self, message: str, message_id: str, fields: list[tuple[str, str]], priority: int = 6) -> str:
        """Write one record. Returns where it went: "journal", "file" or "lost"."""
        if self._journal is not None and journald_listening(self.journal_socket):
            args = [f"MESSAGE={message}", f"MESSAGE_ID={message_id}", f"PRIORITY={priority}",
                    f"SYSLOG_IDENTIFIER={SYSLOG_IDENTIFIER}"] + [f"{k}={v}" for k, v in fields]
            try:
                self._journal.sendv(*args)
                return "journal"
            except OSError as exc:
                log.warning("journald refused a session record (%s); writing it to %s", exc, self.audit_file)
        line = self._json_line(message, message_id, fields, priority)
        try:
            self._append(line)
            return "file"
        except OSError as exc:
            log.error("session record lost: cannot write %s: %s: %s", self.audit_file, exc.strerror, line.strip())
            return "lost"

    @staticmethod
    def _json_line(message: str, message_id: str, fields: list[tuple[str, str]], priority: int) -> str:
        data: dict[str, Any] = {"__REALTIME": time.time(), "MESSAGE": message, "MESSAGE_ID": message_id,
                                "PRIORITY": str(priority), "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER}
        for key, value in fields:
            if key in data:  # repeated field (RUNAS_GROUP): a list, as journalctl -o json shows it
                data[key] = (data[key] if isinstance(data[key], list) else [data[key]]) + [value]
            else:
                data[key] = value
        return json.dumps(data, ensure_ascii=False, sort_keys=True) + "\n"

    def _append(self, line: str) -> None:
        directory = os.path.dirname(self.audit_file)
        if directory:
            os.makedirs(directory, mode=0o750, exist_ok=True)
        fd = os.open(self.audit_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class OpenSessions:
    """The sessions whose start was recorded and whose end was not yet, kept in
    `<state_dir>/sessions.json` so that a restarted agent knows them; beside them, the sessions
    recently ended (id and end time), whose state file the SSM agent may still write once more."""

    def __init__(self, path: str):
        self.path = path

    def _document(self) -> dict | None:
        data = read_bytes(self.path)
        if data is None:
            return None
        try:
            document = json.loads(data)
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            return document
        except ValueError as exc:
            log.error("%s is damaged (%s); starting with no open sessions", self.path, exc)
            return None

    def load(self) -> dict[str, Session]:
        document = self._document()
        if document is None:
            return {}
        try:
            sessions = document["sessions"]
            if not isinstance(sessions, list):
                raise ValueError("sessions is not a list")
            out = {}
            for item in sessions:
                session = Session.from_dict(item)
                out[session.session_id] = session
            return out
        except (ValueError, KeyError, TypeError) as exc:
            # The store is our own file; a damaged one must not stop attribution. Sessions it held
            # get a second start record when seen again, which is better than none.
            log.error("%s is damaged (%s); starting with no open sessions", self.path, exc)
            return {}

    def load_ended(self) -> dict[str, float]:
        """Session id -> end time of the recently ended sessions ({} when unknown)."""
        ended = (self._document() or {}).get("ended")
        if not isinstance(ended, dict):
            return {}
        return {k: float(v) for k, v in ended.items() if isinstance(k, str) and isinstance(v, (int, float))}

    def save(self, sessions: dict[str, Session], ended: dict[str, float] | None = None) -> None:
        document: dict[str, Any] = {"sessions": [s.to_dict() for _, s in sorted(sessions.items())]}
        if ended:
            document["ended"] = dict(sorted(ended.items()))
        write_atomic(self.path, dump_json(document), mode=0o600)
