"""The session watcher (host side): notices Session Manager sessions starting and ending, attributes
each to the person behind it, and records its start and end exactly once. What a session is and when
it starts and ends is decided by the pure `tracker.Tracker`; this module feeds it what the host shows
and carries out what it asks (records, S3 tagging, killing an overdue worker).

Cost: inotify on the SSM agent's `current` state directories wakes the watcher; only then (and at a
slow periodic reconcile) does it look at the process table, reading just the short name of each
process. Without inotify it compares the directories' mtimes every few seconds.

Drive it from a thread (`start`/`stop`) or from another loop (`poll_once`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from types import SimpleNamespace
from typing import Callable, Iterable

from runas_agent.directory import Directory, parse_document
from runas_agent.events import Priority, Record
from runas_agent.host.files import StateDir
from runas_agent.journal import Journal
from runas_agent.sessions import host
from runas_agent.sessions.inotify import (IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_MOVE_SELF,
                                          IN_MOVED_FROM, IN_MOVED_TO, IN_Q_OVERFLOW, Inotify)
from runas_agent.sessions.model import (Session, StateFileError, StateInfo, attribute, parse_owner, parse_state,
                                        record, resolve)
from runas_agent.sessions.records import OpenSessions
from runas_agent.sessions.s3tags import S3Tagger
from runas_agent.sessions.tracker import SHELL_GRACE, Event, Observation, Read, Tracker, pick_shell

log = logging.getLogger("runas_agent.sessions")

#: How long a worker asked to stop (SIGTERM) may take to convert and upload the session log before
#: it is killed. The SSM agent itself never kills a worker that is still uploading.
WORKER_GRACE = 120.0
#: Re-check interval while sessions wait for their shell or a state file is half-written: from
#: PENDING_INTERVAL, growing to PENDING_MAX_INTERVAL.
PENDING_INTERVAL = 0.05
PENDING_MAX_INTERVAL = 1.0
#: Without inotify: how often the state directories' mtimes are compared.
MTIME_INTERVAL = 2.0
#: While no state directory exists yet (agent not installed, no session ever): how often to look.
DISCOVER_INTERVAL = 5.0

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

    def refresh(self, session: Session) -> Session:
        """At a session's end: a session that started before the first directory snapshot (or before
        the person was in it) gets the identity if the snapshot knows it now."""
        if session.identity is not None or not session.identity_user:
            return session
        directory, _ = self.get()
        identity, _ = resolve(parse_owner(session.owner_arn), directory)
        if identity is not None:
            session.identity, session.unresolved_reason = identity, ""
        return session


def read_state(path: str) -> Read:
    """One state file, read and parsed."""
    data, _ = host.read_state_file(path)
    if data is None:
        return Read(problem="the state file could not be read")
    try:
        return Read(parse_state(data))
    except StateFileError as exc:
        return Read(problem=f"the state file is not a session state document ({exc})")


class SessionWatcher:
    def __init__(self, cfg: SimpleNamespace, *, journal: Journal | None = None, tagger: S3Tagger | None = None,
                 use_inotify: bool = True, trusted_uids: tuple[int, ...] = (0,), shell_grace: float = SHELL_GRACE,
                 worker_grace: float = WORKER_GRACE, clock: Callable[[], float] = time.time):
        s = cfg.sessions
        self.roots = list(s.state_roots)
        self.reconcile_interval = float(s.reconcile_interval)
        self.end_disabled_people = bool(s.end_sessions_of_disabled_people)
        self.store = OpenSessions(os.path.join(cfg.state_dir, "sessions.json"))
        #: journald, else the audit file
        self.journal = journal or Journal(s.audit_file)
        if tagger is None and s.s3_tagging.enabled:
            tagger = S3Tagger(s.s3_tagging)
        self.tagger = tagger
        self.trusted_uids = trusted_uids
        self.worker_grace = worker_grace
        self.clock = clock
        self._lock = threading.RLock()
        self._snapshot = SnapshotCache(StateDir(cfg.state_dir).snapshot_path)
        self.tracker = Tracker(self._snapshot, now=time.monotonic, wall=clock, shell_grace=shell_grace,
                               live=self.store.load(), ended=self.store.load_ended())
        self._restored = bool(self.tracker.live)
        self._appeared: set[str] = set()
        self._dirs: list[str] = []
        self._mtimes: dict[str, int] = {}
        self._next_reconcile = 0.0
        self._discover_until = 0.0
        self.state_dir = cfg.state_dir
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
        self._wake()
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
            now = time.monotonic()
            wait = max(0.0, self._next_reconcile - now)
            oldest = self.tracker.oldest_pending()
            if oldest is not None:
                # Soon after a session appears its shell usually follows within milliseconds; a session
                # whose shell is slow must not cost a process-table look every 50 ms for the whole
                # grace period: the pause grows with the age of the oldest pending one.
                wait = min(wait, min(PENDING_MAX_INTERVAL, max(PENDING_INTERVAL, (now - oldest) / 4)))
            deadline = self.tracker.next_deadline()
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now) + 0.01)
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
            full = time.monotonic() >= self._next_reconcile
            changed |= self._look_at_dirs(full)
            if not (full or changed or self._restored or self._tracker_waits()):
                return
            self._scan(full)
            if full:
                self._next_reconcile = time.monotonic() + self.reconcile_interval
        if self.end_disabled_people:
            self._end_disabled()

    def _tracker_waits(self) -> bool:
        """Does the tracker wait for something (a shell, a deadline) that calls for a look now?"""
        return self.tracker.oldest_pending() is not None or self.tracker.wants_processes()

    def _end_disabled(self) -> None:
        """When the directory snapshot has changed: end the sessions of people it marks DISABLED."""
        directory, _ = self._snapshot.get()
        key = self._snapshot._key
        if directory is None or key == self._disabled_checked:
            return
        self._disabled_checked = key
        disabled = {u.user_name for u in directory.users if not u.enabled}
        with self._lock:
            targets = {_person(s) for s in self.tracker.live.values()} & disabled
        if targets:
            self.end_sessions_of(targets, poll=False)

    @property
    def live(self) -> dict[str, Session]:
        return self.tracker.live

    def sessions(self) -> list[Session]:
        """The live sessions whose start has been recorded."""
        with self._lock:
            return self.tracker.sessions()

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

    def _look_at_dirs(self, full: bool) -> bool:
        """Has anything changed in the state directories that events did not say?"""
        changed = False
        if full or not self._dirs or time.monotonic() < self._discover_until:
            changed |= self._refresh_dirs()
        if self._notify is None:
            changed |= self._mtimes_changed()
        return changed

    def _refresh_dirs(self) -> bool:
        """Look for state directories again (new instance ids); True when the set changed."""
        dirs = host.state_dirs(self.roots)
        if self._notify is not None:
            self._watch(dirs)
        changed = dirs != self._dirs
        self._dirs = dirs
        return changed

    def _wanted(self, dirs: list[str]) -> dict[str, int]:
        """Directory -> inotify events to watch it for."""
        wanted = {d: _DIR_EVENTS for d in dirs}
        wanted.update({r: _ROOT_EVENTS for r in self.roots if os.path.isdir(r)})
        if self.end_disabled_people and os.path.isdir(self.state_dir):
            wanted[self.state_dir] = _ROOT_EVENTS | IN_CLOSE_WRITE
        return wanted

    def _watch(self, dirs: list[str]) -> None:
        assert self._notify is not None
        wanted = self._wanted(dirs)
        for gone in self._notify.watched() - set(wanted):
            self._notify.remove(gone)
        for directory, mask in wanted.items():
            if directory not in self._notify.watched():
                try:
                    self._notify.add(directory, mask)
                except OSError as exc:
                    log.warning("cannot watch %s: %s", directory, exc)

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

    # --- looking -------------------------------------------------------------------------------

    def _scan(self, full: bool) -> None:
        self.stats["scans"] += 1
        files = host.state_files(self._dirs)
        appeared, self._appeared = self._appeared, set()
        reads = {sid: read_state(files[sid]) for sid in self.tracker.to_read(files)}
        events = self.tracker.files_seen(Observation(files, reads, appeared))
        if full or self.tracker.wants_processes():
            self.stats["process_scans"] += 1
            events += self.tracker.processes_seen(host.scan_workers(self.trusted_uids), full)
        self._carry_out(events, save=self._restored)
        self._restored = False

    def _carry_out(self, events: list[Event], save: bool = False) -> None:
        for event in events:
            if event.kind == "start":
                self._emit(event.session, "start")
                self.stats["starts"] += 1
            elif event.kind == "end":
                self._emit(event.session, "end", event.at)
                self.stats["ends"] += 1
                self._tag(event.session)
            elif event.kind == "kill":
                self._kill(event.session)
        if events or save:
            self._save()

    def _emit(self, session: Session, event: str, at: float | None = None) -> None:
        message, message_id, fields = record(session, event, now=at)
        priority = Priority.NOTICE if session.unresolved_reason else Priority.INFO
        self.journal.write(Record(message, message_id, priority, tuple(fields)))

    def _tag(self, session: Session) -> None:
        if self.tagger is None:
            return
        try:
            self.tagger.submit(session)
        except Exception:
            log.exception("cannot queue S3 tagging for session %s", session.session_id)

    def _kill(self, session: Session) -> None:
        stop = host.Stop(session.session_id, session.worker_pid or 0, session.worker_started)
        if host.kill_worker(stop, self.trusted_uids):
            log.warning("session %s: its worker did not exit within %.0f s of being asked to stop; killed it "
                        "(its session log may not have been uploaded)", session.session_id, self.worker_grace)

    def _save(self) -> None:
        try:
            self.store.save(self.tracker.live, ended=self.tracker.ended_sessions())
        except OSError as exc:
            log.error("cannot save open sessions to %s: %s", self.store.path, exc)

    # --- ending one person's sessions -----------------------------------------------------------

    def end_sessions_of(self, user_names: Iterable[str], reason: str = "the person is disabled",
                        grace: float = 5.0, poll: bool = True) -> list[str]:
        """End the live sessions of these Identity Center users, session by session, leaving every other
        session on the same accounts running: each session's worker is asked to stop (it uploads the
        session log, and is killed only if it has not exited after `worker_grace`), its shell and
        everything beneath it end (SIGKILL after `grace` seconds). Returns the session ids ended."""
        names = {n for n in user_names if n}
        if not names:
            return []
        if poll:
            self.poll_once()
        stops = self._stops_for(names)
        ended = host.stop_sessions(stops, grace, self.trusted_uids)
        with self._lock:
            events = []
            for sid in ended:
                events += self.tracker.end(sid, f"ended by runas-agent: {reason}", self.worker_grace)
            self._carry_out(events)
        self._wake()      # the watcher's thread waits for events: it must learn of the workers' deadline
        return ended

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _stops_for(self, names: set[str]) -> list[host.Stop]:
        """The processes to stop for the live sessions of these people (the process table is looked at
        first when one of them has no known worker)."""
        with self._lock:
            if any(s.worker_pid is None for s in self.tracker.live.values() if _person(s) in names):
                self._scan(full=True)
            targets = [s for s in self.tracker.sessions() if _person(s) in names]
        stops = []
        for session in targets:
            if session.worker_pid is None:
                log.warning("session %s of %s has no worker process to end", session.session_id, session.person)
            else:
                stops.append(host.Stop(session.session_id, session.worker_pid, session.worker_started, session.shell_pid))
        return stops

    def after_sync(self, directory: Directory) -> list[str]:
        """When sessions.end_sessions_of_disabled_people is set, end the sessions of people
        `directory` marks DISABLED. (The watcher does this by itself whenever the directory snapshot
        changes; this is for a caller that holds a directory the snapshot does not show yet.)"""
        if not self.end_disabled_people:
            return []
        disabled = {u.user_name for u in directory.users if not u.enabled}
        return self.end_sessions_of(disabled)


def _person(session: Session) -> str:
    return session.identity.user_name if session.identity else session.identity_user


def _live_row(sid: str, path: str, snapshot: SnapshotCache, workers: dict[str, host.Worker]) -> Session | None:
    data, mtime = host.read_state_file(path)
    session = Session(sid, state_path=path, started_at=mtime)
    info = None
    try:
        info = parse_state(data or b"")
        if not info.is_session:
            return None
        session = snapshot.attribute(session, info)
    except StateFileError as exc:
        session.unresolved_reason = f"the state file is not a session state document ({exc})"
    return _with_processes(session, workers.get(sid), bool(info and info.elevated))


def _with_processes(session: Session, worker: host.Worker | None, elevated: bool = False) -> Session:
    if worker is None:
        return session
    session.worker_pid, session.worker_started = worker.pid, worker.started
    shell = pick_shell(worker.children, elevated)
    if shell is not None:
        session.shell_pid, session.account, session.account_uid = shell.pid, shell.account, shell.uid
        session.account_source = "shell"
    return session


def live_sessions(cfg: SimpleNamespace, trusted_uids: tuple[int, ...] = (0,)) -> list[Session]:
    """The sessions on this host right now, attributed, without recording anything (for the CLI)."""
    snapshot = SnapshotCache(StateDir(cfg.state_dir).snapshot_path)
    files = host.state_files(host.state_dirs(list(cfg.sessions.state_roots)))
    workers = host.scan_workers(trusted_uids)
    out = [row for sid, path in sorted(files.items()) if (row := _live_row(sid, path, snapshot, workers))]
    for sid, worker in sorted(workers.items()):
        if sid not in files:
            session = Session(sid, detected_by="process", started_at=worker.started,
                              unresolved_reason="no SSM state file for this session under sessions.state_roots")
            out.append(_with_processes(session, worker))
    return out
