"""The long-running service (shell): the sync loop under systemd.

`runas-agent` with no command (or `runas-agent run`) syncs at once, then every
`daemon.interval_seconds` plus a per-instance random jitter. It tells systemd the truth:

* READY=1 only once the first sync has finished, or failed and been reported. The unit is ordered
  before the SSM agent, so on the first boot of an image no Run As session is accepted before the
  accounts exist.
* WATCHDOG=1 only from the thread that does the work: while idle between syncs, and during a sync at
  the points where it proves progress (before each Identity Store request, between backoff naps,
  after the read, before each account action). A sync stuck anywhere else stops the pings, and
  systemd kills and restarts the service. No other thread ever pings.
* STATUS= the last result; RELOADING=1 / READY=1 around SIGHUP; STOPPING=1 on SIGTERM.

A failed directory read (SourceError) changes nothing on the host (sync raises before planning); the
daemon keeps the accounts as they are and retries with exponential backoff and jitter. SIGTERM during
a sync abandons it at the next safe point (nothing is half-done between two actions: each file the
agent writes is replaced atomically, and the ledger recording what may be created was written before
the first action), then the service exits 0. Every sync is one structured journal record.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import random
import select
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from runas_agent import __version__, config, events
from runas_agent.errors import AgentError, CommandError, ConfigError, LockBusyError, SourceError
from runas_agent.events import SYNC_PROGRESS, Priority, Record
from runas_agent.exitcodes import Exit
from runas_agent.core.plan import EndProcesses
from runas_agent.host.files import StateDir
from runas_agent.host.lock import SyncLock
from runas_agent.settings import Config, SourceSettings
from runas_agent.sources import make_source, source_type
from runas_agent.journal import Journal
from runas_agent.status import SyncCounts, SyncStatus
from runas_agent.sync import sync

log = logging.getLogger("runas_agent.daemon")

#: The service's MESSAGE_IDs (runas_agent/events.py lists every one).
MESSAGE_SYNC, MESSAGE_SYNC_FAILED, MESSAGE_RELOAD, MESSAGE_LIFECYCLE = (events.SYNC, events.SYNC_FAILED, events.RELOAD,
                                                                        events.LIFECYCLE)


class Abandon(BaseException):
    """Raised at a safe point of a sync when the service has been asked to stop. A BaseException, so
    that no `except Exception` on the way (botocore, the applier) can swallow it."""


# --------------------------------------------------------------------------------------------------
# systemd plumbing


def _sd_notify() -> Callable[[str], Any]:
    try:
        from systemd import daemon as sd_daemon
    except ImportError:  # not under systemd, or python3-systemd missing: nothing to tell
        return lambda state: False
    return lambda state: sd_daemon.notify(state)


class Notifier:
    """sd_notify(3) through systemd-python. A no-op outside systemd (no NOTIFY_SOCKET)."""

    def __init__(self, send: Callable[[str], Any] | None = None):
        self._send = send or _sd_notify()

    def __call__(self, *assignments: str) -> None:
        # One datagram: systemd applies its assignments together (e.g. READY=1 with STATUS=).
        self._send("\n".join(a.replace("\n", " ") for a in assignments))


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds of WatchdogSec= when systemd asks this process for keep-alive pings, else None."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = env.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(os.getpid() if pid is None else pid)):
        return None
    return usec / 1_000_000


# --------------------------------------------------------------------------------------------------
# the loop


@dataclass
class Report:
    """What one scheduled sync came to."""

    status: SyncStatus
    seconds: float
    counts: SyncCounts = field(default_factory=SyncCounts)
    error: str = ""
    refusals: list[str] = field(default_factory=list)
    #: seconds until the next sync
    next_in: float = 0.0
    #: for failures: the directory could not be read, so nothing was planned or changed
    read_failed: bool = False

    def summary(self) -> str:
        if self.status.applied:
            return f"{self.counts.summary()} in {self.seconds:.2f}s" + (f"; {self.error}" if self.error else "")
        if self.status is SyncStatus.REFUSED:
            return "refused, nothing changed: " + "; ".join(self.refusals)
        if self.read_failed or self.status is SyncStatus.BUSY:
            return f"{self.status.value}, nothing changed: {self.error}"
        return f"{self.status.value}: {self.error}"


class Daemon:
    """The sync loop. Everything that touches the clock, sleeping, systemd, the journal, the source,
    the lock and the sync itself is injectable, so the loop's decisions are unit-tested. A loop of
    other work (the publisher's) is a subclass: its `work`, its lock, interval and records."""

    #: what one round of the loop is called in systemd's STATUS
    work = "sync"

    def __init__(
        self,
        config_path: str,
        cfg: Config,
        *,
        notify: Callable[..., None] | None = None,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        watchdog: float | None = None,
        sync_fn: Callable[..., Any] | None = None,
        source_factory: Callable[..., Any] | None = None,
        lock_factory: Callable[[str], Any] | None = None,
        load_config: Callable[[str], Config] = config.load,
        watcher_factory: Callable[[Config], Any] | None = None,
    ):
        self.config_path = config_path
        self.cfg = cfg
        self.notify = notify or Notifier()
        self.journal = journal or Journal(echo=None)
        self.clock = clock
        #: blocks up to the given seconds; returns early when a signal arrived
        self.wait = wait
        # Each instance draws its own jitter: seeded from the OS, never from anything fleet-wide.
        self.rng = rng or random.Random(os.urandom(16))
        self.watchdog = watchdog
        self.sync_fn = sync_fn or self._default_sync
        self.source_factory = source_factory or build_source
        self.lock_factory = lock_factory or _default_lock
        self.load_config = load_config
        self.watcher_factory = watcher_factory or make_session_watcher

        self.stop_requested = False
        self.reload_requested = False
        self.ready = False
        self.failures = 0
        self.syncs = 0
        self.last: Report | None = None
        self.next_sync = 0.0
        self._source: Any = None
        self._watcher: Any = None
        self._last_ping: float | None = None
        self._status_note = ""

    # -- signals (set from signal handlers; acted on by the loop) -----------------------------------

    def request_stop(self) -> None:
        self.stop_requested = True

    def request_reload(self) -> None:
        self.reload_requested = True

    # -- watchdog ---------------------------------------------------------------------------------

    def ping(self) -> None:
        """WATCHDOG=1, at most four times per watchdog interval."""
        if not self.watchdog:
            return
        now = self.clock()
        if self._last_ping is None or now - self._last_ping >= self.watchdog / 4:
            self.notify("WATCHDOG=1")
            self._last_ping = now

    def checkpoint(self) -> None:
        """A safe point of the work: prove progress to the watchdog, or abandon the sync here when
        the service is stopping."""
        if self.stop_requested:
            raise Abandon()
        self.ping()

    def nap(self, seconds: float) -> None:
        """Sleep inside the work (a backoff between two requests), pinging, and waking for signals."""
        deadline = self.clock() + seconds
        while True:
            self.checkpoint()
            left = deadline - self.clock()
            if left <= 0:
                return
            self.wait(min(left, self._max_nap()))

    def _max_nap(self) -> float:
        return self.watchdog / 2 if self.watchdog else 3600.0

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> Exit:
        self.notify(f"STATUS=first {self.work} in progress (runas-agent {__version__})")
        self.journal.write(Record.of(MESSAGE_LIFECYCLE, Priority.INFO,
                                     f"runas-agent {__version__} starting: config {self.config_path}",
                                     DAEMON_EVENT="start", CONFIG_PATH=self.config_path, AGENT_VERSION=__version__))
        self._check_watchdog_margin()
        self.next_sync = self.clock()
        try:
            self._start_watcher()
            while not self.stop_requested:
                if self.reload_requested:
                    self._reload()
                    continue
                now = self.clock()
                if now >= self.next_sync:
                    report = self.sync_once()
                    if report is None:  # abandoned: we are stopping
                        break
                    self._announce(report)
                    continue
                self.ping()
                self.wait(min(self.next_sync - now, self._max_nap()))
        finally:
            self.notify("STOPPING=1", "STATUS=stopping")
            self._stop_watcher()
            self.journal.write(Record.of(MESSAGE_LIFECYCLE, Priority.INFO, "runas-agent stopped", DAEMON_EVENT="stop",
                                         SYNC_COUNT=self.syncs))
        return Exit.OK

    def _announce(self, report: Report) -> None:
        status = f"STATUS=last {self.work}: {report.summary()}; next in {report.next_in:.0f}s{self._status_note}"
        if not self.ready:
            self.ready = True
            self.notify("READY=1", status)
        else:
            self.notify(status)

    def sync_once(self) -> Report | None:
        """One scheduled sync, reported. Returns None when it was abandoned because of a stop."""
        started = self.clock()
        self.syncs += 1
        try:
            if self._source is None:
                self._source = self.source_factory(self.cfg.source, checkpoint=self.checkpoint, nap=self.nap)
            with self._locked():
                result = self.sync_fn(self.cfg, source=self._source, progress=self.checkpoint)
        except Abandon:
            self._journal_abandoned(self.clock() - started)
            return None
        except LockBusyError as exc:
            report = Report(SyncStatus.BUSY, self.clock() - started, error=str(exc))
        except SourceError as exc:
            report = Report(SyncStatus.FAILED, self.clock() - started, error=str(exc), read_failed=True)
        except (AgentError, CommandError) as exc:
            report = Report(SyncStatus.FAILED, self.clock() - started, error=str(exc))
        except Exception as exc:  # a bug: report it with its traceback and keep the last good state
            log.exception("sync failed unexpectedly")
            report = Report(SyncStatus.FAILED, self.clock() - started, error=f"{type(exc).__name__}: {exc}")
        else:
            report = self._report(result, self.clock() - started)
            directory = getattr(result, "directory", None)  # a publish has none
            if report.status is not SyncStatus.REFUSED and directory is not None:
                self._after_sync(directory)

        if report.status in (SyncStatus.FAILED, SyncStatus.BUSY):
            self.failures += 1
            delay = self.backoff(self.failures)
        else:
            self.failures = 0
            delay = self.interval()
        self.next_sync = started + delay
        report.next_in = max(0.0, self.next_sync - self.clock())
        self.last = report
        self._journal_sync(report)
        return report

    def _journal_abandoned(self, seconds: float) -> None:
        abandoned = SyncStatus.ABANDONED
        self.journal.write(Record.of(abandoned.message_id, abandoned.priority,
                                     "sync abandoned at a safe point: the service is stopping",
                                     SYNC_RESULT=abandoned.value, SYNC_SECONDS=f"{seconds:.3f}"))

    def _report(self, result: Any, seconds: float) -> Report:
        unrecorded = "; ".join(f"the changes were applied, but {problem}" for problem in getattr(result, "unrecorded", ()))
        return Report(result.status, seconds, result.counts, refusals=list(result.plan.refusals), error=unrecorded)

    def _journal_sync(self, report: Report) -> None:
        fields: dict[str, Any] = dict(
            SYNC_RESULT=report.status.value,
            SYNC_SECONDS=f"{report.seconds:.3f}",
            SYNC_NEXT_SECONDS=f"{report.next_in:.0f}",
            SYNC_SOURCE=_describe(self._source, self.cfg.source),
        )
        if report.status.applied or report.status is SyncStatus.REFUSED:
            fields.update(report.counts.journal_fields())
        if report.refusals:
            fields["SYNC_REFUSALS"] = "; ".join(report.refusals)
        if report.error:
            fields["SYNC_ERROR"] = report.error
            if not report.status.applied:
                fields["SYNC_ATTEMPT"] = str(self.failures)
        status = report.status
        self.journal.write(Record.of(status.message_id, status.priority, self._sync_message(report), **fields))

    def _sync_message(self, report: Report) -> str:
        retry = f"retry in {report.next_in:.0f}s"
        if report.status is SyncStatus.FAILED and report.read_failed:
            return (f"directory read failed (attempt {self.failures}), accounts left as they are: "
                    f"{report.error}; {retry}")
        if report.status is SyncStatus.FAILED:
            return f"sync failed (attempt {self.failures}): {report.error}; {retry}"
        if report.status is SyncStatus.BUSY:
            return f"sync postponed: {report.error}; {retry}"
        return f"sync {report.summary()}"

    # -- timing -----------------------------------------------------------------------------------

    def interval(self) -> float:
        d = self.cfg.daemon
        return d.interval_seconds + self.rng.random() * d.jitter_seconds

    def backoff(self, failures: int) -> float:
        """Exponential, capped, with "equal jitter": between half and all of the step."""
        d = self.cfg.daemon
        step = min(d.backoff_max_seconds, d.backoff_initial_seconds * 2 ** min(failures - 1, 30))
        return step / 2 + self.rng.random() * step / 2

    def _check_watchdog_margin(self) -> None:
        """Warn when the source can block, without proving progress, for most of the watchdog interval."""
        if not self.watchdog:
            return
        step = source_type(self.cfg.source.type).longest_step(self.cfg.source)
        if step is not None and step.seconds >= self.watchdog * 0.75:
            log.warning("%s (%gs) is close to the watchdog interval (%gs): %s may get the service restarted",
                        step.what, step.seconds, self.watchdog, step.step)

    # -- the lock ---------------------------------------------------------------------------------

    def lock_path(self) -> str:
        return StateDir(self.cfg.state_dir).lock_path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock shared with `--once`; while a manual sync holds it, wait (pinging) up to
        daemon.lock_wait_seconds."""
        path = self.lock_path()
        deadline = self.clock() + self.cfg.daemon.lock_wait_seconds
        while True:
            lock = self.lock_factory(path)
            try:
                lock.__enter__()
                break
            except LockBusyError:
                if self.clock() >= deadline:
                    raise LockBusyError(f"another runas-agent {self.work} held {path} for more than "
                                        f"daemon.lock_wait_seconds ({self.cfg.daemon.lock_wait_seconds:g}s)") from None
                self.checkpoint()
                self.wait(min(0.5, max(0.0, deadline - self.clock())))
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    # -- reload -----------------------------------------------------------------------------------

    def _reload(self) -> None:
        self.reload_requested = False
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
                    "STATUS=reloading the configuration")
        try:
            new = self.load_config(self.config_path)
        except ConfigError as exc:
            problems = "; ".join(exc.problems)
            self._status_note = f"; reload refused, previous configuration kept: {problems}"
            self.journal.write(Record.of(MESSAGE_RELOAD, Priority.ERR,
                                         f"invalid configuration {self.config_path}, keeping the previous one: {problems}",
                                         RELOAD_RESULT="invalid", CONFIG_PATH=self.config_path, CONFIG_PROBLEMS=problems))
        else:
            self.cfg = new
            self._source = None  # rebuilt from the new source section on the next sync
            self.failures = 0
            self._status_note = ""
            self.next_sync = self.clock()  # apply the new configuration now
            self._restart_watcher()
            self._check_watchdog_margin()
            self.journal.write(Record.of(MESSAGE_RELOAD, Priority.INFO, f"configuration {self.config_path} reloaded",
                                         RELOAD_RESULT="ok", CONFIG_PATH=self.config_path))
        last = f"last {self.work}: {self.last.summary()}" if self.last else f"first {self.work} pending"
        if self.ready:
            self.notify("READY=1", f"STATUS={last}{self._status_note}")
        else:  # READY=1 waits for the first sync, reload or not
            self.notify(f"STATUS={last}{self._status_note}")

    # -- session watcher --------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        try:
            self._watcher = self.watcher_factory(self.cfg)
            if self._watcher is not None:
                self._watcher.start()
        except Exception:  # sessions are a record, not the sync: the sync loop goes on without them
            log.exception("the session watcher did not start")
            self._watcher = None

    def _stop_watcher(self) -> None:
        if self._watcher is not None:
            try:
                self._watcher.stop()
            except Exception:
                log.exception("the session watcher did not stop cleanly")
            self._watcher = None

    def _default_sync(self, cfg: Config, *, source: Any, progress: Callable[[], None]) -> Any:
        return sync(cfg, apply=True, source=source, progress=progress, report=self._report_progress,
                    before_apply=self._before_apply)

    def _report_progress(self, phase: str, done: int, total: int) -> None:
        """A long apply's progress, every few seconds: a journal record, and the unit's status line
        (`systemctl status runas-agent`)."""
        self.journal.write(Record.of(SYNC_PROGRESS, Priority.INFO, f"sync in progress: {phase}, {done} of {total}",
                                     SYNC_PHASE=phase, SYNC_DONE=done, SYNC_TOTAL=total))
        self.notify(f"STATUS={self.work} in progress: {phase}, {done} of {total}")

    def _before_apply(self, plan: Any, directory: Any) -> None:
        """A plan that ends a person's processes (before parking their account) lets the session
        watcher end that person's sessions first, session by session, so each gets its end record
        and its log uploaded (when sessions.end_sessions_of_disabled_people is set)."""
        if any(isinstance(a, EndProcesses) for a in plan.actions):
            self._after_sync(directory)

    def _after_sync(self, directory: Any) -> None:
        """Let the session watcher act on the directory just applied (it ends the sessions of
        people now disabled when sessions.end_sessions_of_disabled_people is set)."""
        after_sync = getattr(self._watcher, "after_sync", None)
        if after_sync is None:
            return
        try:
            after_sync(directory)
        except Exception:
            log.exception("the session watcher failed to act on the sync")

    def _restart_watcher(self) -> None:
        self._stop_watcher()
        self._start_watcher()


# --------------------------------------------------------------------------------------------------
# defaults wired to the real host



def _default_lock(path: str) -> Any:
    return SyncLock(path, wait=0)


def _describe(source: Any, source_cfg: SourceSettings) -> str:
    if source is not None:
        try:
            return str(source.describe())
        except Exception:
            pass
    return str(source_cfg.type)


def build_source(source_cfg: SourceSettings, *, checkpoint: Callable[[], None], nap: Callable[[float], None]) -> Any:
    """The configured source, wired to the loop: the source type calls `checkpoint` where its read
    proves progress and sleeps its backoffs through `nap` (see Source.from_settings)."""
    return make_source(source_cfg, checkpoint=checkpoint, nap=nap)


def make_session_watcher(cfg: Config) -> Any:
    """The session watcher (runas_agent.sessions.watcher.SessionWatcher). It runs beside the sync
    loop with start()/stop(); the loop's watchdog pings do not depend on it. Its module is loaded
    here, by the service that runs it: `--once`, `plan` and the other one-shot commands import this
    module for their command line and never start a watcher."""
    from runas_agent.sessions.watcher import SessionWatcher

    return SessionWatcher.from_config(cfg)  # type: ignore[arg-type]  # its annotation predates typed settings


class SignalWaker:
    """Signals wake the loop: handlers only set flags, and signal.set_wakeup_fd makes the loop's
    select() return at once, whenever the signal arrives."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)

    def wait(self, seconds: float) -> None:
        if seconds > 0:
            select.select([self._r], [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 512):
                pass

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._r)
        os.close(self._w)


# --------------------------------------------------------------------------------------------------
# command line


def main(args: Any, daemon_class: type[Daemon] = Daemon, load: Callable[[str], Config] = config.load) -> Exit:
    """Run the service until SIGTERM. Exit.CONFIG (78) when the configuration is invalid at start:
    the unit's RestartPreventExitStatus keeps systemd from restarting into the same error.
    `daemon_class` and `load` (also used on reload) make it another loop (the publisher's)."""
    # On the watchdog's SIGABRT, the journal gets the Python stack of the step that hung.
    with contextlib.suppress(ValueError, OSError, AttributeError):  # stderr without a file descriptor
        faulthandler.enable()
    notify = Notifier()
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        notify(f"STATUS=invalid configuration {args.config}: {'; '.join(exc.problems)}")
        raise  # cli prints every problem and exits with Exit.CONFIG
    waker = SignalWaker()
    daemon = daemon_class(args.config, cfg, notify=notify, wait=waker.wait, watchdog=watchdog_interval(), load_config=load)
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: daemon.request_stop()),
        signal.SIGINT: signal.signal(signal.SIGINT, lambda *_: daemon.request_stop()),
        signal.SIGHUP: signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload()),
    }
    try:
        return daemon.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        waker.close()


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="run the service: sync now, then on an interval with jitter, until SIGTERM (the default)")
    p.set_defaults(func=main, needs_config=False)
