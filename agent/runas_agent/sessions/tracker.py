"""Session tracking, the pure part: the life of each Session Manager session as the SSM agent's state
files and processes show it, from first sight to exactly one start record and one end record. Takes
observations (state file names and contents, the session workers and their children), returns events
(records to write, overdue workers to kill); no files, no processes, no threads. The clocks are
injected.

The SSM agent's state file of one session goes through these steps (amazon-ssm-agent
`agent/framework/processor/processor.go`, `executer/outofproc/master.go`, `docmanager/docmanager.go`):
written under `pending/`, renamed into `current/`, rewritten in place (truncated, then written) once
the worker runs and again when the session is over, then deleted. A TerminateSession document of the
same name is renamed over it and deleted, after which the session's own state is written once more
and deleted again. The worker outlives the file by at least 3 s. So a name seen again after its
session ended is not a new session: every ended session leaves a tombstone that outlives its file and
its worker.

Life of a session here:

    (first sight) -> pending -> live -> ended (tombstone) -> forgotten
                        \\______________/
                  the file went before the start was recorded: start and end together

A pending session is recorded as started when its state file has been read and its run-as shell
seen, or when SHELL_GRACE has passed (then the record says the shell was not seen).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Protocol

from runas_agent.sessions.model import PORT_SESSION, Session, StateInfo, attribute

#: How long a new session may wait for its worker's run-as shell before its start is recorded with
#: what is known. The shell starts once the client's data channel is open.
SHELL_GRACE = 10.0
#: How long an ended session's name is remembered after its state file and worker are gone. The SSM
#: agent writes the state of a terminated session once more after the worker has uploaded its log.
TOMBSTONE_LINGER = 300.0
MAX_TOMBSTONES = 10_000

#: A state file whose content never could be read is taken for a session only when its name has the
#: session id form `<role session name>-<17 hex>` (or a worker claims it): Run Command state files,
#: named by a command id (a UUID), come and go in the same directory.
SESSION_FORM = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,200}-[0-9a-f]{17}\Z")

ENDED_UNREAD = "the session ended before its state file could be read"
NO_STATE_FILE = "no SSM state file for this session under sessions.state_roots"


# --- what the host shows ---------------------------------------------------------------------

@dataclass(frozen=True)
class Child:
    """A direct child of a session worker."""

    pid: int
    uid: int | None
    account: str = ""      # the uid's name, "" when it has none
    leader: bool = False   # a session leader: the SSM agent starts the shell on a pty with setsid;
    #                        its `sh -c "id <name>"` look-ups and the log conversion are not


@dataclass(frozen=True)
class Worker:
    """One live, trusted `ssm-session-worker <sessionId>` and its children."""

    session_id: str
    pid: int
    started: float                   # create_time: tells a reused pid apart
    children: tuple[Child, ...] = ()


def pick_shell(children: Iterable[Child], elevated: bool = False) -> Child | None:
    """The run-as shell among a worker's children, or None while it has not started. Before it starts
    the shell the worker runs short-lived root children (`sh -c "id <name>"`, `id -u`, `id -g`,
    amazon-ssm-agent shell_unix.go); after the shell ends, `script` converts the log, as root. None
    of them is ever the shell: a Run As shell never runs as root (the agent refuses uid 0), so a root
    child is taken only for a session whose state file asks for root (runAsElevated). A session
    leader (the pty shell) is preferred."""
    def fits(child: Child) -> bool:
        return child.uid is not None and (child.uid != 0 or elevated)

    candidates = [c for c in children if fits(c)]
    leaders = [c for c in candidates if c.leader]
    others = [c for c in candidates if c.uid != 0]
    pool = leaders or others
    return min(pool, key=lambda c: c.pid) if pool else None


@dataclass(frozen=True)
class Read:
    """What reading one state file gave: its content, or why there is none."""

    info: StateInfo | None = None
    problem: str = ""


# --- what the tracker asks for -----------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """start / end: write the session's record. kill: the session's worker was asked to stop and did
    not within the time it was given; end it (and whatever still runs beneath it)."""

    kind: str
    session: Session
    at: float = 0.0        # wall clock, for end records


class Attributor(Protocol):
    def attribute(self, session: Session, info: StateInfo) -> Session: ...

    def refresh(self, session: Session) -> Session: ...


class NoDirectory:
    """Attribution without a directory snapshot (the owner ARN only)."""

    def attribute(self, session: Session, info: StateInfo) -> Session:
        return attribute(session, info, None)

    def refresh(self, session: Session) -> Session:
        return session


# --- the tracker's own state -------------------------------------------------------------------

@dataclass
class _Pending:
    session: Session
    first_seen: float                 # monotonic
    info: StateInfo | None = None
    problem: str = ""


@dataclass
class _Ended:
    session: Session
    gone_since: float | None = None   # monotonic: since when its state file is absent
    worker_alive: bool = False        # its worker was running at the last look
    kill_at: float | None = None      # monotonic: the worker was asked to stop and must be gone by then
    ended_wall: float = 0.0


@dataclass
class Observation:
    """One look at the state directories."""

    files: Mapping[str, str]                          # session id -> state file path
    reads: Mapping[str, Read] = field(default_factory=dict)
    appeared: Iterable[str] = ()                      # names that appeared since the last look


def _with_worker(session: Session, worker: Worker) -> Session:
    return replace(session, worker_pid=worker.pid, worker_started=worker.started,
                   started_at=min(session.started_at or worker.started, worker.started))


def _with_shell(session: Session, shell: Child) -> Session:
    return replace(session, shell_pid=shell.pid, account=shell.account or session.account,
                   account_uid=shell.uid, account_source="shell")


class Tracker:
    """The session state machine. `now` is a monotonic clock (waits and deadlines), `wall` the wall
    clock (record times). `live` and `ended` restore what a previous run recorded."""

    def __init__(self, attributor: Attributor | None = None, *, now: Callable[[], float],
                 wall: Callable[[], float], shell_grace: float = SHELL_GRACE, linger: float = TOMBSTONE_LINGER,
                 live: Mapping[str, Session] | None = None, ended: Mapping[str, float] | None = None):
        self.attributor = attributor or NoDirectory()
        self.now, self.wall = now, wall
        self.shell_grace, self.linger = shell_grace, linger
        self.live: dict[str, Session] = dict(live or {})
        self.pending: dict[str, _Pending] = {}
        self.ended: dict[str, _Ended] = {sid: _Ended(Session(sid), ended_wall=at) for sid, at in (ended or {}).items()}
        #: state files that are not sessions (Run Command, State Manager), while they exist
        self.ignored: set[str] = set()
        self._restored = set(self.live)
        self._files: Mapping[str, str] = {}

    # --- questions from the host side ----------------------------------------------------------

    def to_read(self, files: Mapping[str, str]) -> list[str]:
        """The state files whose content is wanted: new ones, and pending ones not yet understood."""
        return sorted(sid for sid in files
                      if sid not in self.live and sid not in self.ended and sid not in self.ignored
                      and (sid not in self.pending or self.pending[sid].info is None))

    def wants_processes(self) -> bool:
        """Must the next look include the process table? (New sessions wait for their shell; a worker
        may be overdue.)"""
        now = self.now()
        return bool(self.pending) or any(e.kill_at is not None and e.kill_at <= now for e in self.ended.values())

    def next_deadline(self) -> float | None:
        """The earliest monotonic time at which a worker becomes overdue, if any."""
        deadlines = [e.kill_at for e in self.ended.values() if e.kill_at is not None]
        return min(deadlines) if deadlines else None

    def oldest_pending(self) -> float | None:
        return min((p.first_seen for p in self.pending.values()), default=None)

    def sessions(self) -> list[Session]:
        return [replace(s) for _, s in sorted(self.live.items())]

    def ended_sessions(self) -> dict[str, float]:
        """Session id -> wall time of its end, for the sessions remembered as ended."""
        return {sid: e.ended_wall for sid, e in self.ended.items()}

    # --- observations ----------------------------------------------------------------------------

    def files_seen(self, obs: Observation) -> list[Event]:
        """After a look at the state directories (and reading what `to_read` asked for)."""
        now = self.now()
        self._files = obs.files
        self.ignored &= set(obs.files)
        events = self._gone_live(obs.files)
        self._restored.clear()
        self._note_files(obs, now)
        events += self._vanished(obs.files, obs.appeared)
        self._age_tombstones(obs.files, now)
        return events

    def processes_seen(self, workers: Mapping[str, Worker], full: bool) -> list[Event]:
        """After a look at the process table. `full`: also reconcile the live sessions with it."""
        events = self._match_pending(workers)
        events += self._refresh_live(workers)
        if full:
            events += self._process_only(workers)
        events += self._tombstone_workers(workers)
        return events

    def end(self, session_id: str, reason: str, worker_grace: float | None = None) -> list[Event]:
        """The agent ended this session itself (its worker and shell were signalled): the end record,
        and, when `worker_grace` is given, a deadline by which the worker must have exited (it uploads
        the session log first)."""
        if session_id not in self.live:
            return []
        self.live[session_id].end_reason = reason
        events = [self._end(session_id, reason)]
        if worker_grace is not None:
            self.ended[session_id].kill_at = self.now() + worker_grace
        return events

    # --- steps -----------------------------------------------------------------------------------

    def _gone_live(self, files: Mapping[str, str]) -> list[Event]:
        """Live sessions known by their state file whose file is gone have ended."""
        gone = [sid for sid, s in self.live.items() if s.detected_by == "state-file" and sid not in files]
        return [self._end(sid, "ended while runas-agent was not running (end time approximate)"
                          if sid in self._restored else "state file removed") for sid in gone]

    def _note_files(self, obs: Observation, now: float) -> None:
        for sid, path in obs.files.items():
            if sid in self.live or sid in self.ended or sid in self.ignored:
                continue
            pending = self.pending.get(sid)
            if pending is None:
                pending = self.pending[sid] = _Pending(Session(sid, state_path=path, started_at=self.wall()), now)
            read = obs.reads.get(sid)
            if read is not None:
                self._understand(sid, pending, read)

    def _understand(self, sid: str, pending: _Pending, read: Read) -> None:
        info = read.info
        if info is None:
            pending.problem = read.problem
        elif info.is_terminate:
            # Terminated before its own state was read: the agent writes that state once more
            # before it deletes the file; read again.
            pending.problem = "the session was being terminated when its state file was read"
        elif not info.is_session:       # a Run Command or association document: not ours
            del self.pending[sid]
            self.ignored.add(sid)
        else:
            pending.info = info
            pending.session = self.attributor.attribute(pending.session, info)

    def _vanished(self, files: Mapping[str, str], appeared: Iterable[str]) -> list[Event]:
        """Sessions whose state file went before their start was recorded: start and end together,
        with what is known."""
        events: list[Event] = []
        for sid in sorted(set(appeared)):
            if self._unknown(sid, files) and SESSION_FORM.match(sid):
                events += self._start_and_end(Session(sid, started_at=self.wall(), unresolved_reason=ENDED_UNREAD))
        for sid in [sid for sid in self.pending if sid not in files]:
            pending = self.pending.pop(sid)
            if pending.info is None and not SESSION_FORM.match(sid):
                continue
            session = self._as_started(pending, None)
            if pending.info is None:
                session.unresolved_reason = ENDED_UNREAD
            events += self._start_and_end(session)
        return events

    def _unknown(self, sid: str, files: Mapping[str, str]) -> bool:
        return not (sid in files or sid in self.live or sid in self.pending or sid in self.ended or sid in self.ignored)

    def _start_and_end(self, session: Session) -> list[Event]:
        start = self._start(session)
        return [start, self._end(session.session_id, "state file removed")]

    def _match_pending(self, workers: Mapping[str, Worker]) -> list[Event]:
        """Pending sessions whose shell is there (or whose wait is over) start."""
        events = []
        now = self.now()
        for sid, pending in list(self.pending.items()):
            worker = workers.get(sid)
            waited = now - pending.first_seen
            if not self._ready(pending, worker, waited):
                continue
            if pending.info is None and worker is None and not SESSION_FORM.match(sid):
                del self.pending[sid]      # unreadable, and nothing says it is a session
                self.ignored.add(sid)
                continue
            del self.pending[sid]
            session = self._as_started(pending, worker)
            if pending.info is None:
                session.unresolved_reason = pending.problem or "the state file could not be read"
            events.append(self._start(session))
        return events

    def _ready(self, pending: _Pending, worker: Worker | None, waited: float) -> bool:
        if waited >= self.shell_grace:
            return True
        info = pending.info
        if info is None or worker is None:
            return False
        if info.session_type == PORT_SESSION:
            return True                 # port forwarding starts no shell
        return pick_shell(worker.children, info.elevated) is not None

    def _as_started(self, pending: _Pending, worker: Worker | None) -> Session:
        """The session as its start record shows it: the shell's account when the shell was seen,
        otherwise the account the state file names, said to be that."""
        session = replace(pending.session)
        info = pending.info
        shell = pick_shell(worker.children, bool(info and info.elevated)) if worker else None
        if worker is not None:
            session = _with_worker(session, worker)
        if shell is not None:
            return _with_shell(session, shell)
        if info is not None and info.account:
            session = replace(session, account=info.account, account_source="state-file")
        return session

    def _refresh_live(self, workers: Mapping[str, Worker]) -> list[Event]:
        """Live sessions learn their worker and shell when they had none. A live session whose worker
        is gone has ended (its state file may stay a while: the agent removes it only when its own
        wait for the worker times out)."""
        events = []
        for sid, session in list(self.live.items()):
            worker = workers.get(sid)
            if self._worker_gone(session, worker):
                events.append(self._end(sid, "worker exited"))
            elif worker is not None:
                self.live[sid] = self._update(session, worker)
        return events

    @staticmethod
    def _worker_gone(session: Session, worker: Worker | None) -> bool:
        return session.worker_pid is not None and (worker is None or worker.pid != session.worker_pid)

    @staticmethod
    def _update(session: Session, worker: Worker) -> Session:
        if session.worker_pid is None:
            session = _with_worker(session, worker)
        if session.account_source != "shell":
            # A root shell fits only a session whose state file said root (runAsElevated).
            shell = pick_shell(worker.children, session.account == "root" and session.account_source == "state-file")
            if shell is not None:
                session = _with_shell(session, shell)
        return session

    def _process_only(self, workers: Mapping[str, Worker]) -> list[Event]:
        """Workers with no state file under the configured roots still are sessions. The agent renames
        the state file into place before it starts the worker, so a young worker may just have
        appeared after the directories were listed: it is taken only once it has run SHELL_GRACE."""
        events = []
        for sid, worker in sorted(workers.items()):
            if not self._unknown(sid, self._files) or self.wall() - worker.started < self.shell_grace:
                continue
            session = _with_worker(Session(sid, detected_by="process", started_at=worker.started,
                                           unresolved_reason=NO_STATE_FILE), worker)
            shell = pick_shell(worker.children)
            events.append(self._start(_with_shell(session, shell) if shell else session))
        return events

    def _tombstone_workers(self, workers: Mapping[str, Worker]) -> list[Event]:
        """Note which ended sessions' workers still run; a worker past its deadline is to be killed."""
        events = []
        now = self.now()
        for sid, ended in self.ended.items():
            worker = workers.get(sid)
            ended.worker_alive = worker is not None
            if worker is None:
                ended.kill_at = None
            elif ended.kill_at is not None and now >= ended.kill_at:
                ended.kill_at = None
                events.append(Event("kill", _with_worker(ended.session, worker)))
        return events

    def _age_tombstones(self, files: Mapping[str, str], now: float) -> None:
        for sid, ended in list(self.ended.items()):
            if sid in files:
                ended.gone_since = None
            elif ended.gone_since is None:
                ended.gone_since = now
            elif now - ended.gone_since >= self.linger and not ended.worker_alive and ended.kill_at is None:
                del self.ended[sid]
        while len(self.ended) > MAX_TOMBSTONES:
            del self.ended[next(iter(self.ended))]

    # --- records ---------------------------------------------------------------------------------

    def _start(self, session: Session) -> Event:
        self.live[session.session_id] = session
        return Event("start", session)

    def _end(self, sid: str, reason: str) -> Event:
        session = self.live.pop(sid)
        session.end_reason = session.end_reason or reason
        session = self.attributor.refresh(session)
        at = self.wall()
        self.ended.pop(sid, None)
        self.ended[sid] = _Ended(session, ended_wall=at, worker_alive=session.worker_pid is not None)
        return Event("end", session, at)
