"""The small store of open sessions (host side) that makes an agent restart neither repeat a start
record nor lose an end record. The records themselves go through runas_agent/journal.py (journald,
else the audit file)."""

from __future__ import annotations

import json
import logging
from typing import Any

from runas_agent.host.files import dump_json, read_bytes, write_atomic
from runas_agent.sessions.model import Session

log = logging.getLogger("runas_agent.sessions")


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
