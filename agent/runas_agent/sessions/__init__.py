"""Session attribution: every Session Manager session on the host, recorded with the real Identity
Center person behind it (see watcher.SessionWatcher; model is the pure part)."""

from runas_agent.sessions.model import MESSAGE_ID_END, MESSAGE_ID_START, Session
from runas_agent.sessions.watcher import SessionWatcher, live_sessions

__all__ = ["SessionWatcher", "Session", "live_sessions", "MESSAGE_ID_START", "MESSAGE_ID_END"]
