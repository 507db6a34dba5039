"""Random interleavings of the SSM agent's session lifecycles with the watcher's looks, on the
simulated host of sessions_sim.py. `run(data)` draws sessions and an interleaving with hypothesis and
checks what must always hold; the unit test runs a seeded sample, bench/campaign_sessions.py a long
campaign.

Each session follows the steps of the real agent (amazon-ssm-agent):
  processor.go submit/processCommand   state written under pending/, renamed into current/
  master.go initialize + Run           the worker started, the state rewritten in place (pid)
  shell_unix.go                        root children `sh -c "id <name>"` (x4), then the pty shell
  shell.go finishLogging               after the shell: `script` converts the log (root), upload
  master.go messaging end              the state rewritten in place again, processor.go deletes it
  sessionworker/main.go                the worker sleeps 3 s and exits
  processor.go cancel/processCancelCommand (TerminateSession)
                                       a TerminateSession document renamed over the file, deleted;
                                       the session's own state written again after the worker
                                       completes, and deleted
"""

from __future__ import annotations

import hypothesis.strategies as st

from runas_agent.sessions.tracker import Event
from tests.unit.sessions_sim import ACME_UID, SimHost, directory, owner_arn, start_document, terminate_document

KINDS = ("normal", "terminate", "agent_end", "crash", "port", "elevated", "default_user", "run_command")
USERS = ("alice", "bob", "carol")
ID_LOOKUPS = ["id+", "id-"] * 4


def _worker_steps(kind: str) -> list[str]:
    if kind == "port":
        return []
    if kind == "elevated":
        return ["root_shell+"]
    return ID_LOOKUPS + ["shell+"]


def _tail(kind: str) -> list[str]:
    if kind in ("terminate", "port"):
        return ["trename", "tdelete", "shell-", "script+", "script-", "rewrite2", "delete", "sleep3", "worker-"]
    if kind == "crash":
        return ["worker_kill", "wait60", "trunc2", "write2", "delete"]
    head = ["agent_end"] if kind == "agent_end" else []
    return head + ["shell-", "script+", "script-", "trunc2", "write2", "delete", "sleep3", "worker-"]


def steps_for(kind: str, data: st.DataObject) -> list[str]:
    if kind == "run_command":
        return ["rc_write", "rc_delete"]
    worker, master = _worker_steps(kind), ["trunc1", "write1"]
    merged: list[str] = []
    while worker or master:        # the master's first rewrite races the worker's start-up
        take_worker = worker and (not master or data.draw(st.booleans(), label="worker first"))
        merged.append((worker if take_worker else master).pop(0))
    return ["rename", "worker"] + merged + _tail(kind)


class SimSession:
    def __init__(self, index: int, kind: str, user: str, data: st.DataObject):
        self.kind, self.user = kind, user
        self.sid = (f"{index:08x}-1e2f-4a5b-8c9d-0e1f2a3b4c5d" if kind == "run_command"
                    else f"{user}@example.com-{index:017x}")
        self.steps = steps_for(kind, data)
        self.children: list[int] = []
        self.shell: int | None = None
        self.worker_dead = False
        self.ended_by_agent = False
        doc_args = {"session_type": "Port" if kind == "port" else "InteractiveCommands" if kind == "elevated" else "Standard_Stream",
                    "elevated": kind == "elevated", "run_as": "" if kind == "default_user" else "acme"}
        self.document = start_document(self.sid, owner_arn(f"{user}@example.com"), **doc_args)

    @property
    def done(self) -> bool:
        return not self.steps

    def advance(self, host: SimHost) -> None:
        getattr(self, "_" + self.steps.pop(0).replace("+", "_up").replace("-", "_down"))(host)

    # --- the state file ----------------------------------------------------------------------------

    def _rename(self, host):
        host.rename_in(self.sid, self.document)

    def _trunc1(self, host):
        host.truncate(self.sid)

    _trunc2 = _trunc1

    def _write1(self, host):
        host.write(self.sid, self.document)

    _write2 = _write1
    _rewrite2 = _write1

    def _trename(self, host):
        host.rename_in(self.sid, terminate_document(self.sid))

    def _tdelete(self, host):
        host.delete(self.sid)

    _delete = _tdelete

    def _rc_write(self, host):
        host.write(self.sid, {"DocumentInformation": {"DocumentID": self.sid}, "DocumentType": "SendCommand"})

    _rc_delete = _tdelete

    # --- processes -------------------------------------------------------------------------------

    def _worker(self, host):
        host.start_worker(self.sid)

    def _id_up(self, host):
        if not self.worker_dead:
            self.children.append(host.add_child(self.sid, 0, "root", leader=False))

    def _id_down(self, host):
        if self.children:
            host.remove_child(self.sid, self.children.pop())

    _script_up, _script_down = _id_up, _id_down

    def _shell_up(self, host):
        if not self.worker_dead:
            self.shell = host.add_child(self.sid, ACME_UID, "acme", leader=True)

    def _root_shell_up(self, host):
        if not self.worker_dead:
            self.shell = host.add_child(self.sid, 0, "root", leader=True)

    def _shell_down(self, host):
        if self.shell is not None:
            host.remove_child(self.sid, self.shell)
            self.shell = None

    def _sleep3(self, host):
        host.clock.advance(3)

    def _wait60(self, host):
        host.clock.advance(60)

    def _worker_down(self, host):
        host.end_worker(self.sid)
        self.worker_dead = True

    _worker_kill = _worker_down

    def _agent_end(self, host):
        """end_sessions_of: only a session whose start was recorded can be ended."""
        if self.sid in host.tracker.live:
            host.events += host.tracker.end(self.sid, "ended by runas-agent: the person is disabled", worker_grace=120)
            self.ended_by_agent = True


def _carry_out(host: SimHost, sessions: dict[str, SimSession], events: list[Event]) -> None:
    for event in events:
        if event.kind == "kill":
            sessions[event.session.session_id]._worker_down(host)


def _look(host: SimHost, sessions: dict[str, SimSession], full: bool) -> None:
    _carry_out(host, sessions, host.scan(full))


AFTER_STEP = ("nothing", "nothing", "look", "full look", "pause", "grace")


def run(data: st.DataObject) -> SimHost:
    """Draw sessions and an interleaving of all their steps (after each step: nothing, a look, a full
    look with the process table, a pause, or a pause past the shell grace), play it, then check the
    records."""
    host = SimHost(directory=directory())
    count = data.draw(st.integers(1, 4), label="sessions")
    sessions = {}
    for i in range(count):
        s = SimSession(i + 1, data.draw(st.sampled_from(KINDS), label="kind"),
                       data.draw(st.sampled_from(USERS), label="user"), data)
        sessions[s.sid] = s
    while True:
        active = [s for s in sessions.values() if not s.done]
        if not active:
            break
        data.draw(st.sampled_from(active), label="next").advance(host)
        after = data.draw(st.sampled_from(AFTER_STEP), label="after")
        if after.endswith("look"):
            _look(host, sessions, full=after == "full look")
        elif after == "pause":
            host.clock.advance(data.draw(st.floats(0.0, 2.0), label="pause"))
        elif after == "grace":
            host.clock.advance(11.0)
    for pause in (1.0, 20.0, 130.0, 400.0, 400.0):
        host.clock.advance(pause)
        _look(host, sessions, full=True)
    check(host, sessions)
    return host


def check(host: SimHost, sessions: dict[str, SimSession]) -> None:
    """One start and one end per session, in that order; never root for a Run As session; the account
    named is the shell's when the shell was seen, else says it was not; only overdue workers of
    sessions the agent ended are killed; nothing is left behind."""
    for sid, s in sessions.items():
        events = host.of(sid)
        if s.kind == "run_command":
            assert events == [], events
            continue
        kinds = [e.kind for e in events if e.kind != "kill"]
        assert kinds == ["start", "end"], (s.kind, [(e.kind, e.session.end_reason) for e in events])
        start = events[0].session
        _check_account(s, start)
        assert not [e for e in events if e.kind == "kill"] or s.ended_by_agent
    assert host.tracker.live == {} and host.tracker.pending == {}
    assert host.tracker.ended == {}, "tombstones are forgotten once file and worker are long gone"


def _check_account(s: SimSession, start) -> None:
    run_as = ("root", 0) if s.kind == "elevated" else ("acme", ACME_UID)
    if s.kind != "elevated":
        assert start.account != "root" and start.account_uid != 0, (s.kind, start)
    if start.account_source == "shell":
        assert start.shell_pid is not None and (start.account, start.account_uid) == run_as
    else:
        assert start.shell_pid is None and start.account_uid is None and start.account in ("", run_as[0])
    assert s.kind != "port" or (start.account == "" and start.shell_pid is None)
    if not start.unresolved_reason:
        assert start.identity is not None and start.identity.user_name == f"{s.user}@example.com"
