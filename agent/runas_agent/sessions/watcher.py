"""The session watcher (host side): notices Session Manager sessions starting and ending, attributes
each to the person behind it, and records its start and end exactly once.

Cost: inotify on the SSM agent's `current` state directories wakes the watcher; only then (and at a
slow periodic reconcile) does it look at the process table, reading just the short name of each
process. Without inotify it compares the directories' mtimes every few seconds.

Drive it from a thread (`start`/`stop`) or from another loop (`poll_once`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Callable, Iterable

from runas_agent.directory import Directory, parse_document
from runas_agent.host.files import StateDir
from runas_agent.sessions import host
from runas_agent.sessions.inotify import (IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF,
                                          IN_MOVED_FROM, IN_MOVED_TO, IN_Q_OVERFLOW, Inotify)
from runas_agent.sessions.model import (Session, StateFileError, StateInfo, attribute, parse_owner, parse_state,
                                        record, resolve)
from runas_agent.sessions.records import OpenSessions, RecordSink
from runas_agent.sessions.s3tags import S3Tagger

log = logging.getLogger("runas_agent.sessions")

#: How long a new session may wait for its worker and run-as shell to appear before its start is
#: recorded with what is known. The shell starts when the client's data channel opens.
SHELL_GRACE = 10.0
#: Re-check interval while sessions wait for their shell or a state file is half-written: from
#: PENDING_INTERVAL, growing to PENDING_MAX_INTERVAL.
PENDING_INTERVAL = 0.05
PENDING_MAX_INTERVAL = 1.0
#: Without inotify: how often the state directories' mtimes are compared.
MTIME_INTERVAL = 2.0
#: While no state directory exists yet (agent not installed, no session ever): how often to look.
DISCOVER_INTERVAL = 5.0

#: A state file whose content never could be read is taken for a session only when its name has the
#: session id form `<role session name>-<17 hex>` (or a worker claims it): Run Command state files,
#: named by a command id (a UUID), come and go in the same directory.
SESSION_FORM = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,200}-[0-9a-f]{17}$")

_DIR_EVENTS = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF
_ROOT_EVENTS = IN_CREATE | IN_MOVED_TO
#: After a new entry under a state root: how long to keep looking for its state directories.
DISCOVER_WINDOW = 10.0
_APPEAR = IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE


class SnapshotCache:
    """The agent's last directory snapshot, parsed again only when the file changes."""

    def __init__(self, path: str):
        self.path = path
        self._key: tuple | None = None
        self._value: tuple[Directory | None, str] = (None, "")

    def get(self) -> tuple[Directory | None, str]:
        """(directory, "") or (None, why there is none)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None, "no directory snapshot to resolve the owner in (the agent has not synced yet)"
        except OSError as exc:
            return None, f"cannot read the directory snapshot: {exc.strerror}"
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key != self._key:
            try:
                with open(self.path, "rb") as handle:
                    self._value = (parse_document(json.loads(handle.read()), self.path), "")
            except Exception as exc:  # a damaged snapshot must not stop attribution
                self._value = (None, f"the directory snapshot is unreadable: {exc}")
            self._key = key
        return self._value

    def attribute(self, session: Session, info: StateInfo) -> Session:
        directory, problem = self.get()
        session = attribute(session, info, directory)
        if directory is None and session.identity is None and session.identity_user:
            session.unresolved_reason = problem
        return session


@dataclass
class _Pending:
    session: Session
    first_seen: float                 # monotonic
    info: StateInfo | None = None
    problem: str = ""


class SessionWatcher:
    def __init__(self, cfg: SimpleNamespace, *, sink: RecordSink | None = None, tagger: S3Tagger | None = None,
                 use_inotify: bool = True, trusted_uids: tuple[int, ...] = (0,), shell_grace: float = SHELL_GRACE,
                 clock: Callable[[], float] = time.time):
        s = cfg.sessions
        self.roots = list(s.state_roots)
        self.reconcile_interval = float(s.reconcile_interval)
        self.end_disabled_people = bool(s.end_sessions_of_disabled_people)
        self.store = OpenSessions(os.path.join(cfg.state_dir, "sessions.json"))
        self.sink = sink or RecordSink(s.audit_file)
        if tagger is None and s.s3_tagging.enabled:
            tagger = S3Tagger(s.s3_tagging)
        self.tagger = tagger
        self.trusted_uids = trusted_uids
        self.shell_grace = shell_grace
        self.clock = clock
        self._lock = threading.RLock()
        self.live: dict[str, Session] = self.store.load()
        self._restored = set(self.live)
        self._pending: dict[str, _Pending] = {}
        #: state files that are not (or no longer) live sessions: other documents' state, and
        #: sessions ended by worker exit or by us while the file stays
        self._ignored: set[str] = set()
        self._appeared: set[str] = set()
        self._dirs: list[str] = []
        self._mtimes: dict[str, int] = {}
        self._next_reconcile = 0.0
        self._discover_until = 0.0
        self.state_dir = cfg.state_dir
        self._snapshot = SnapshotCache(StateDir(cfg.state_dir).snapshot_path)
        self._disabled_checked: tuple | None = None
        self._use_inotify = use_inotify
        self._notify: Inotify | None = None
        self._wake_r = self._wake_w = -1
        self._open()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: counters for status and benchmarks
        self.stats = {"polls": 0, "scans": 0, "process_scans": 0, "starts": 0, "ends": 0}

    # --- driving ------------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: SimpleNamespace) -> "SessionWatcher":
        return cls(cfg)

    def _open(self) -> None:
        """Open inotify and the wake-up pipe (again, after `stop`)."""
        if self._wake_r < 0:
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._use_inotify and self._notify is None:
            try:
                self._notify = Inotify()
                self._next_reconcile = 0.0  # watch every directory again
            except (OSError, AttributeError) as exc:
                self._use_inotify = False
                log.warning("inotify unavailable (%s); polling the state directories every %.0fs", exc, MTIME_INTERVAL)

    def start(self) -> None:
        """Watch in a background thread until `stop`."""
        if self._thread and self._thread.is_alive():
            return
        self._open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="runas-sessions", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread:
            self._thread.join(timeout)
            self._thread = None
        if self.tagger:
            if self.tagger.pending():
                log.warning("stopping with %d session log(s) not yet tagged in S3", self.tagger.pending())
            self.tagger.stop()
        with self._lock:
            if self._notify:
                self._notify.close()
                self._notify = None
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def close(self) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once(self.next_wait())
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("session watcher poll failed; retrying")
                self._stop.wait(DISCOVER_INTERVAL)

    def next_wait(self) -> float:
        """How long the next poll may block waiting for events."""
        with self._lock:
            wait = max(0.0, self._next_reconcile - time.monotonic())
            if self._pending:
                # Soon after a session appears its shell usually follows within milliseconds; a session
                # with no shell at all (port forwarding) must not cost a process-table look every 50 ms
                # for the whole grace period: the pause grows with the age of the oldest pending one.
                age = time.monotonic() - min(p.first_seen for p in self._pending.values())
                wait = min(wait, min(PENDING_MAX_INTERVAL, max(PENDING_INTERVAL, age / 4)))
            if not self._dirs:
                wait = min(wait, DISCOVER_INTERVAL)
            if time.monotonic() < self._discover_until:
                wait = min(wait, 0.2)
            if self._notify is None:
                wait = min(wait, MTIME_INTERVAL)
            return wait

    def poll_once(self, wait: float = 0.0) -> None:
        """Wait up to `wait` seconds for state directory events, then bring records up to date."""
        self._open()
        changed = self._wait(wait)
        with self._lock:
            self.stats["polls"] += 1
            changed |= self._drain()
            now_m = time.monotonic()
            full = now_m >= self._next_reconcile
            if full or not self._dirs or now_m < self._discover_until:
                changed |= self._refresh_dirs()
            if self._notify is None:
                changed |= self._mtimes_changed()
            if not (full or changed or self._pending or self._restored):
                return
            self._scan(full)
            if full:
                self._next_reconcile = time.monotonic() + self.reconcile_interval
        if self.end_disabled_people:
            self._end_disabled()

    def _end_disabled(self) -> None:
        """When the directory snapshot has changed: end the sessions of people it marks DISABLED."""
        directory, _ = self._snapshot.get()
        key = self._snapshot._key
        if directory is None or key == self._disabled_checked:
            return
        self._disabled_checked = key
        disabled = {u.user_name for u in directory.users if not u.enabled}
        with self._lock:
            targets = {s.identity.user_name if s.identity else s.identity_user for s in self.live.values()} & disabled
        if targets:
            self.end_sessions_of(targets, poll=False)

    def sessions(self) -> list[Session]:
        """The live sessions whose start has been recorded."""
        with self._lock:
            return [replace(s) for _, s in sorted(self.live.items())]

    # --- events -------------------------------------------------------------------------------

    def _wait(self, wait: float) -> bool:
        if wait <= 0:
            return False
        if self._notify is not None:
            self._notify.wait(wait, self._wake_r)
        else:
            self._stop.wait(wait)
        try:
            os.read(self._wake_r, 4096)
        except (BlockingIOError, OSError):
            pass
        return False

    def _drain(self) -> bool:
        if self._notify is None:
            return False
        events = self._notify.read()
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                self._next_reconcile = 0.0
            if event.mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                self._next_reconcile = 0.0
            if event.path == self.state_dir:
                continue  # the directory snapshot: looked at after every poll
            if event.path in self.roots:
                # A new instance id: its state directories are made one after another; look for a while.
                self._discover_until = time.monotonic() + DISCOVER_WINDOW
            elif event.name and event.mask & _APPEAR:
                self._appeared.add(event.name)
        return bool(events)

    def _refresh_dirs(self) -> bool:
        """Look for state directories again (new instance ids); True when the set changed."""
        dirs = host.state_dirs(self.roots)
        if self._notify is not None:
            roots = [r for r in self.roots if os.path.isdir(r)]
            wanted = {d: _DIR_EVENTS for d in dirs}
            wanted.update({r: _ROOT_EVENTS for r in roots})
            if self.end_disabled_people and os.path.isdir(self.state_dir):
                wanted[self.state_dir] = _ROOT_EVENTS | IN_CLOSE_WRITE
            for gone in self._notify.watched() - set(wanted):
                self._notify.remove(gone)
            for directory, mask in wanted.items():
                if directory not in self._notify.watched():
                    try:
                        self._notify.add(directory, mask)
                    except OSError as exc:
                        log.warning("cannot watch %s: %s", directory, exc)
        changed = dirs != self._dirs
        self._dirs = dirs
        return changed

    def _mtimes_changed(self) -> bool:
        mtimes = {}
        for directory in self._dirs:
            try:
                mtimes[directory] = os.stat(directory).st_mtime_ns
            except OSError:
                mtimes[directory] = -1
        changed = mtimes != self._mtimes
        self._mtimes = mtimes
        return changed

    # --- reconciling --------------------------------------------------------------------------

    def _attribute(self, session: Session, info: StateInfo) -> Session:
        return self._snapshot.attribute(session, info)

    def _scan(self, full: bool) -> None:
        self.stats["scans"] += 1
        files = host.state_files(self._dirs)
        appeared, self._appeared = self._appeared, set()
        restored, self._restored = self._restored, set()
        dirty = False
        self._ignored &= set(files)

        # Sessions whose state file is gone have ended.
        for sid in [sid for sid, s in self.live.items() if s.detected_by == "state-file" and sid not in files]:
            reason = "ended while runas-agent was not running (end time approximate)" if sid in restored else ""
            self._end(sid, reason or "state file removed")
            dirty = True

        # New state files: read them; a half-written one is read again on the next poll.
        now_m = time.monotonic()
        for sid, path in files.items():
            if sid in self.live or sid in self._ignored:
                continue
            pending = self._pending.get(sid)
            if pending is None:
                pending = self._pending[sid] = _Pending(Session(sid, state_path=path, started_at=self.clock()), now_m)
            if pending.info is None:
                data, mtime = host.read_state_file(path)
                if data is None:
                    pending.problem = "the state file could not be read"
                    continue
                try:
                    info = parse_state(data)
                    if not info.is_session:   # a Run Command or association document: not ours
                        del self._pending[sid]
                        self._ignored.add(sid)
                        continue
                    pending.info = info
                    pending.session = self._attribute(pending.session, pending.info)
                except StateFileError as exc:
                    pending.problem = f"the state file is not a session state document ({exc})"

        # Sessions that started and ended between two looks: recorded with what is known.
        for sid in sorted(appeared):
            if sid in files or sid in self.live or sid in self._pending or not SESSION_FORM.match(sid):
                continue
            session = Session(sid, started_at=self.clock(),
                              unresolved_reason="the session ended before its state file could be read")
            self._start(session)
            self._end(sid, "state file removed")
            dirty = True
        for sid in [sid for sid in self._pending if sid not in files]:
            pending = self._pending.pop(sid)
            session = pending.session
            if pending.info is None:
                if not SESSION_FORM.match(sid):
                    continue
                session.unresolved_reason = "the session ended before its state file could be read"
            self._start(session)
            self._end(sid, "state file removed")
            dirty = True

        # Find workers and shells for new sessions (and everything, at a reconcile).
        if self._pending or full:
            self.stats["process_scans"] += 1
            workers = host.scan_workers(self.trusted_uids)
            for sid, pending in list(self._pending.items()):
                worker = workers.get(sid)
                waited = now_m - pending.first_seen
                if not (worker and worker.shell_pid) and waited < self.shell_grace:
                    continue
                session = pending.session
                if pending.info is None:
                    if waited < self.shell_grace:
                        continue
                    if worker is None and not SESSION_FORM.match(sid):
                        del self._pending[sid]   # unreadable, and nothing says it is a session
                        self._ignored.add(sid)
                        log.warning("state file %s is unreadable and not a session's: %s", session.state_path,
                                    pending.problem)
                        continue
                    session.unresolved_reason = pending.problem or "the state file could not be read"
                if worker:
                    session = self._with_worker(session, worker)
                del self._pending[sid]
                self._start(session)
                dirty = True
            if full:
                dirty |= self._reconcile(files, workers)
        if dirty or restored:
            self._save()

    def _reconcile(self, files: dict[str, str], workers: dict[str, host.Worker]) -> bool:
        dirty = False
        for sid, session in list(self.live.items()):
            worker = workers.get(sid)
            if session.worker_pid is not None:
                if worker is None or worker.pid != session.worker_pid:
                    # The worker is gone but the state file (if any) stayed: the session is over.
                    if sid in files:
                        self._ignored.add(sid)
                    self._end(sid, "worker exited")
                    dirty = True
            elif worker is not None:
                self.live[sid] = self._with_worker(session, worker)
                dirty = True
            elif session.detected_by == "process":
                self._end(sid, "worker exited")
                dirty = True
        # Workers without a state file under the configured roots still are sessions.
        for sid, worker in workers.items():
            if sid in self.live or sid in self._pending or sid in files or sid in self._ignored:
                continue
            session = Session(sid, detected_by="process", started_at=worker.started,
                              unresolved_reason="no SSM state file for this session under sessions.state_roots")
            self._start(self._with_worker(session, worker))
            dirty = True
        return dirty

    @staticmethod
    def _with_worker(session: Session, worker: host.Worker) -> Session:
        return replace(session, worker_pid=worker.pid, worker_started=worker.started, shell_pid=worker.shell_pid,
                       account=worker.shell_account or session.account,
                       account_uid=worker.shell_uid if worker.shell_uid is not None else session.account_uid,
                       started_at=min(session.started_at or worker.started, worker.started))

    # --- records ------------------------------------------------------------------------------

    def _start(self, session: Session) -> None:
        message, message_id, fields = record(session, "start")
        self.sink.emit(message, message_id, fields, priority=5 if session.unresolved_reason else 6)
        self.live[session.session_id] = session
        self.stats["starts"] += 1

    def _end(self, sid: str, reason: str) -> None:
        session = self.live.pop(sid)
        session.end_reason = session.end_reason or reason
        if session.identity is None and session.identity_user:
            # Started before the first directory snapshot (or before the person was in it): the end
            # record and the S3 tags carry the identity if the snapshot knows it now.
            directory, _ = self._snapshot.get()
            identity, _ = resolve(parse_owner(session.owner_arn), directory)
            if identity is not None:
                session.identity, session.unresolved_reason = identity, ""
        message, message_id, fields = record(session, "end", now=self.clock())
        self.sink.emit(message, message_id, fields, priority=5 if session.unresolved_reason else 6)
        self.stats["ends"] += 1
        if self.tagger is not None:
            try:
                self.tagger.submit(session)
            except Exception:
                log.exception("cannot queue S3 tagging for session %s", sid)

    def _save(self) -> None:
        try:
            self.store.save(self.live)
        except OSError as exc:
            log.error("cannot save open sessions to %s: %s", self.store.path, exc)

    # --- ending one person's sessions -----------------------------------------------------------

    def end_sessions_of(self, user_names: Iterable[str], reason: str = "the person is disabled",
                        grace: float = 5.0, poll: bool = True) -> list[str]:
        """End the live sessions of these Identity Center users, session by session (their workers and
        the processes beneath), leaving every other session on the same accounts running. Returns the
        session ids ended."""
        names = {n for n in user_names if n}
        if not names:
            return []
        if poll:
            self.poll_once()
        with self._lock:
            targets = [replace(s) for s in self.live.values()
                       if (s.identity.user_name if s.identity else s.identity_user) in names]
            if any(s.worker_pid is None for s in targets):
                workers = host.scan_workers(self.trusted_uids)
                targets = [self._with_worker(s, workers[s.session_id]) if s.worker_pid is None and s.session_id in workers
                           else s for s in targets]
        for session in targets:
            if session.worker_pid is None:
                log.warning("session %s of %s has no worker process to end", session.session_id, session.person)
        ended = host.end_sessions([(s.worker_pid, s.worker_started, s.session_id) for s in targets
                                   if s.worker_pid is not None], grace, self.trusted_uids)
        with self._lock:
            files = host.state_files(self._dirs)
            for sid in ended:
                if sid in self.live:
                    self.live[sid].end_reason = f"ended by runas-agent: {reason}"
                    if sid in files:
                        self._ignored.add(sid)
                    self._end(sid, "")
            if ended:
                self._save()
        return ended

    def after_sync(self, directory: Directory) -> list[str]:
        """When sessions.end_sessions_of_disabled_people is set, end the sessions of people
        `directory` marks DISABLED. (The watcher does this by itself whenever the directory snapshot
        changes; this is for a caller that holds a directory the snapshot does not show yet.)"""
        if not self.end_disabled_people:
            return []
        disabled = {u.user_name for u in directory.users if not u.enabled}
        return self.end_sessions_of(disabled)


def live_sessions(cfg: SimpleNamespace, trusted_uids: tuple[int, ...] = (0,)) -> list[Session]:
    """The sessions on this host right now, attributed, without recording anything (for the CLI)."""
    snapshot = SnapshotCache(StateDir(cfg.state_dir).snapshot_path)
    files = host.state_files(host.state_dirs(list(cfg.sessions.state_roots)))
    workers = host.scan_workers(trusted_uids)
    out = []
    for sid, path in sorted(files.items()):
        data, mtime = host.read_state_file(path)
        session = Session(sid, state_path=path, started_at=mtime)
        try:
            info = parse_state(data or b"")
            if not info.is_session:
                continue
            session = snapshot.attribute(session, info)
        except StateFileError as exc:
            session.unresolved_reason = f"the state file is not a session state document ({exc})"
        if sid in workers:
            session = SessionWatcher._with_worker(session, workers[sid])
        out.append(session)
    for sid, worker in sorted(workers.items()):
        if sid not in files:
            session = Session(sid, detected_by="process", started_at=worker.started,
                              unresolved_reason="no SSM state file for this session under sessions.state_roots")
            out.append(SessionWatcher._with_worker(session, worker))
    return out
