"""The session tracker (pure): one start and one end record per session through the SSM agent's real
state-file lifecycle, the account the shell really runs as, honest records when the shell or the
state was never seen, tombstones, overdue workers."""

from __future__ import annotations

import pytest

from runas_agent.sessions.model import record
from runas_agent.sessions.tracker import ENDED_UNREAD, Child, pick_shell
from tests.unit.sessions_sim import (ACME_UID, SimHost, directory, owner_arn, start_document,
                                     terminate_document)

SID = "alice@example.com-0a1b2c3d4e5f67890"
ALICE = "alice@example.com"


def begin(host: SimHost, sid: str = SID, **doc) -> dict:
    """processor.go submit + processCommand, master.go initialize: pending written, renamed into
    current/, the worker started, the state rewritten in place with its pid."""
    document = start_document(sid, owner_arn(doc.pop("user", ALICE)), **doc)
    host.rename_in(sid, document)
    pid = host.start_worker(sid)
    host.truncate(sid)
    host.write(sid, {**document, "DocumentInformation": {**document["DocumentInformation"],
                                                         "ProcInfo": {"Pid": pid, "StartTime": "2024-06-01T10:00:00Z"}}})
    return document


def id_children(host: SimHost, sid: str = SID) -> list[int]:
    """shell_unix.go: `sh -c "id acme"`, `sh -c "id -u acme"`, ... as root, in the worker's session."""
    return [host.add_child(sid, 0, "root", leader=False) for _ in range(2)]


def shell(host: SimHost, sid: str = SID, uid: int = ACME_UID, account: str = "acme") -> int:
    return host.add_child(sid, uid, account, leader=True)


def finish(host: SimHost, document: dict, sid: str = SID) -> None:
    """master.go: the state saved once more (truncate, write), then processor.go removes it."""
    host.truncate(sid)
    host.write(sid, document)
    host.delete(sid)


def one_each(host: SimHost, sid: str = SID):
    starts, ends = host.of(sid, "start"), host.of(sid, "end")
    assert (len(starts), len(ends)) == (1, 1), [(e.kind, e.session.end_reason) for e in host.of(sid)]
    return starts[0].session, ends[0].session


def test_a_normal_session_with_both_in_place_rewrites_gives_one_start_and_one_end():
    host = SimHost(directory=directory())
    document = begin(host)
    host.scan()
    assert host.of(SID) == [] and host.tracker.wants_processes()
    children = id_children(host)
    host.scan()
    assert host.of(SID) == [], "a root id look-up is never the shell"
    for pid in children:
        host.remove_child(SID, pid)
    shell_pid = shell(host)
    host.scan()
    start = host.of(SID, "start")[0].session
    assert (start.account, start.account_uid, start.account_source, start.shell_pid) == ("acme", ACME_UID, "shell", shell_pid)
    assert start.identity.user_name == ALICE and start.worker_pid == host.workers[SID].pid
    host.remove_child(SID, shell_pid)
    host.truncate(SID)
    host.scan()
    host.write(SID, document)
    host.scan(full=True)
    host.delete(SID)
    host.scan(full=True)             # the worker sleeps 3 s after the state file is gone
    host.clock.advance(3)
    host.end_worker(SID)
    host.scan(full=True)
    _, end = one_each(host)
    assert end.end_reason == "state file removed" and end.identity.user_name == ALICE


def test_terminate_session_renamed_over_the_live_file_then_deleted_and_written_again():
    host = SimHost(directory=directory())
    document = begin(host)
    shell(host)
    host.scan()
    host.rename_in(SID, terminate_document(SID))      # processCancelCommand: pending -> current
    host.scan()
    host.delete(SID)                                  # ... RemoveDocumentState
    host.scan()
    host.write(SID, document)                         # master.go: the session's state saved again
    host.scan(full=True)
    host.delete(SID)
    host.scan(full=True)
    host.end_worker(SID)
    host.clock.advance(400)
    for _ in range(3):
        host.scan(full=True)
    one_each(host)
    assert host.tracker.ended == {}, "forgotten once file and worker are long gone"


def test_all_of_it_between_two_looks_is_one_start_and_one_end_saying_so():
    host = SimHost()
    document = begin(host)
    shell(host)
    host.rename_in(SID, terminate_document(SID))
    host.delete(SID)
    host.write(SID, document)
    host.delete(SID)
    host.scan(full=True)
    host.scan(full=True)              # the worker still runs (its 3 s sleep): not a session of its own
    start, _ = one_each(host)
    assert start.unresolved_reason == ENDED_UNREAD and start.account == ""
    message, _, fields = record(start, "start")
    assert dict(fields)["RUNAS_UNRESOLVED_REASON"] == ENDED_UNREAD


def test_first_read_while_it_holds_the_terminate_document_is_read_again():
    host = SimHost(directory=directory())
    document = begin(host)
    host.rename_in(SID, terminate_document(SID))
    host.scan()
    assert host.of(SID) == [] and SID in host.tracker.pending
    host.delete(SID)
    host.write(SID, document)
    host.scan()
    host.delete(SID)
    host.scan()
    start, end = one_each(host)
    assert start.identity.user_name == ALICE and start.unresolved_reason == ""
    assert start.account == "acme" and start.account_source == "state-file" and start.shell_pid is None


def test_a_half_written_file_is_read_again():
    host = SimHost(directory=directory())
    begin(host)
    host.truncate(SID)
    host.scan()
    assert host.tracker.pending[SID].info is None
    host.write(SID, start_document(SID, owner_arn(ALICE)))
    shell(host)
    host.scan()
    assert host.of(SID, "start")[0].session.identity.user_name == ALICE


def test_only_root_children_until_the_grace_ends_is_recorded_from_the_state_file_never_as_root():
    host = SimHost(directory=directory())
    begin(host, run_as="", default_user="acme")       # the preferences' runAsDefaultUser applies
    id_children(host)
    host.scan()
    host.clock.advance(10)
    host.scan()
    start = host.of(SID, "start")[0].session
    assert (start.account, start.account_source, start.account_uid, start.shell_pid) == ("acme", "state-file", None, None)
    assert start.requested_account == ""
    message, _, fields = record(start, "start")
    assert "its shell was not seen" in message and dict(fields)["RUNAS_ACCOUNT_SOURCE"] == "state-file"
    # The shell turns up later: the end record has its real account.
    shell(host)
    host.scan(full=True)
    host.delete(SID)
    host.scan()
    _, end = one_each(host)
    assert (end.account, end.account_uid, end.account_source) == ("acme", ACME_UID, "shell")


def test_run_as_user_empty_uses_the_plugin_configuration():
    host = SimHost()
    begin(host, run_as="", default_user="vendor")
    shell(host, uid=1_500_000_009, account="vendor")
    host.scan()
    start = host.of(SID, "start")[0].session
    assert (start.account, start.requested_account) == ("vendor", "")


def test_elevated_commands_session_runs_as_root_and_says_so():
    host = SimHost()
    begin(host, session_type="InteractiveCommands", elevated=True)
    host.add_child(SID, 0, "root", leader=True)
    host.scan()
    start = host.of(SID, "start")[0].session
    assert (start.account, start.account_uid, start.account_source) == ("root", 0, "shell")


def test_port_forwarding_starts_without_a_shell_and_names_no_account():
    host = SimHost(directory=directory())
    begin(host, session_type="Port")
    host.scan()
    start = host.of(SID, "start")[0].session
    assert start.account == "" and start.session_type == "Port" and start.worker_pid is not None
    message, _, fields = record(start, "start")
    assert "port forwarding (no Run As account)" in message and "RUNAS_ACCOUNT" not in dict(fields)


def test_sessions_the_agent_ends_itself_give_one_end_and_an_overdue_worker_is_killed_once():
    host = SimHost(directory=directory())
    document = begin(host)
    shell(host)
    host.scan()
    events = host.tracker.end(SID, "ended by runas-agent: the person is disabled", worker_grace=120)
    host.events += events
    assert [e.kind for e in events] == ["end"]
    finish(host, document)           # the worker uploads, completes; the state is saved and deleted
    host.scan(full=True)
    host.clock.advance(119)
    assert host.scan(full=True) == []
    host.clock.advance(2)
    assert host.tracker.wants_processes()
    kills = host.scan()
    assert [(e.kind, e.session.worker_pid) for e in kills] == [("kill", host.workers[SID].pid)]
    assert host.scan(full=True) == []
    host.end_worker(SID)
    host.scan(full=True)
    _, end = one_each(host)
    assert end.end_reason == "ended by runas-agent: the person is disabled"


def test_a_worker_that_exits_in_time_is_not_killed():
    host = SimHost()
    begin(host)
    shell(host)
    host.scan()
    host.events += host.tracker.end(SID, "ended", worker_grace=120)
    host.end_worker(SID)
    host.scan(full=True)
    host.clock.advance(200)
    assert [e.kind for e in host.scan(full=True)] == []
    assert host.tracker.next_deadline() is None


def test_a_crashed_worker_ends_the_session_and_its_lingering_file_is_no_new_session():
    host = SimHost()
    document = begin(host)
    shell(host)
    host.scan()
    host.end_worker(SID)
    host.scan(full=True)
    assert host.of(SID, "end")[0].session.end_reason == "worker exited"
    host.clock.advance(60)            # master.go: its wait for the worker times out, then it saves
    finish(host, document)
    host.scan(full=True)
    one_each(host)


def test_run_command_state_files_are_ignored_and_unreadable_ones_need_the_session_form():
    host = SimHost()
    command = "2b7a3c4d-1e2f-4a5b-8c9d-0e1f2a3b4c5d"
    host.write(command, {"DocumentInformation": {"DocumentID": command}, "DocumentType": "SendCommand"})
    unreadable = "3c8b4d5e-2f3a-4b6c-9d0e-1f2a3b4c5d6e"
    host.write(unreadable, b"[1, 2]")
    host.scan()
    host.clock.advance(11)
    host.scan()
    host.delete(command)
    host.delete(unreadable)
    host.scan(full=True)
    assert host.events == []


def test_a_worker_without_a_state_file_is_a_session_only_once_it_is_older_than_the_grace():
    host = SimHost()
    host.start_worker(SID)
    shell(host)
    assert host.scan(full=True) == []     # its state file may be about to be listed
    host.clock.advance(10)
    start = host.scan(full=True)[0].session
    assert start.detected_by == "process" and start.account == "acme"
    host.end_worker(SID)
    host.scan(full=True)
    one_each(host)


def test_restored_sessions_end_when_their_file_went_while_the_agent_was_down():
    host = SimHost()
    begin(host)
    shell(host)
    host.scan()
    live, ended = dict(host.tracker.live), host.tracker.ended_sessions()
    host.delete(SID)
    again = SimHost(host.clock, live=live, ended=ended)
    again.workers = host.workers
    again.scan(full=True)
    assert [e.session.end_reason for e in again.of(SID)] == ["ended while runas-agent was not running (end time approximate)"]


def test_restored_tombstones_keep_a_late_state_file_from_becoming_a_session():
    host = SimHost()
    document = begin(host)
    shell(host)
    host.scan()
    host.delete(SID)
    host.scan()
    again = SimHost(host.clock, live=dict(host.tracker.live), ended=host.tracker.ended_sessions())
    again.write(SID, document)
    again.scan(full=True)
    again.delete(SID)
    again.clock.advance(20)
    again.scan(full=True)
    assert again.events == []


@pytest.mark.parametrize("children, elevated, expected", [
    ([Child(5, 0, "root", False), Child(6, 1500, "acme", True)], False, 6),
    ([Child(5, 0, "root", False)], False, None),            # only the id look-ups so far
    ([Child(5, 0, "root", True)], False, None),             # a root leader is never a Run As shell
    ([Child(5, 0, "root", True)], True, 5),                 # ... unless the state file asks for root
    ([Child(7, 1500, "acme", False), Child(8, 1501, "b", True)], False, 8),   # the pty shell first
    ([Child(7, 1500, "acme", False)], False, 7),
    ([Child(9, None, "", True)], False, None),
])
def test_picking_the_shell(children, elevated, expected):
    shell_child = pick_shell(children, elevated)
    assert (shell_child.pid if shell_child else None) == expected
