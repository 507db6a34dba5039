"""One vocabulary: journal records (events.py), the one journal writer (journal.py, with journald and
its socket replaced here; tests/hosts/doctor_journal.py and the service tests read a real journald
back), sync statuses and counts (status.py)."""

import inspect
import json
import logging
from dataclasses import fields

import pytest

from runas_agent import events
from runas_agent.core import plan as account_plan
from runas_agent.core import sudoers
from runas_agent.core.action import Action, Outcome
from runas_agent.core.desired import Skip
from runas_agent.core.plan import CreateAccount, DisableAccount, Plan, UpdateAccount
from runas_agent.events import MessageId, Priority, Record
from runas_agent.exitcodes import Exit
from runas_agent.journal import Journal
from runas_agent.status import SyncCounts, SyncStatus, status_of

# --- records -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0E6032291CF94883BE9C2A9B28AA4889", "0e6032291cf9", "0e603229-1cf9-4883-be9c-2a9b28aa4889", ""])
def test_a_message_id_is_32_lower_case_hex_digits(value):
    with pytest.raises(ValueError):
        MessageId(value)


def test_every_message_id_is_distinct():
    ids = [v for v in vars(events).values() if isinstance(v, MessageId)]
    assert len(ids) == 9 and len({i.hex for i in ids}) == len(ids)


def test_a_record_drops_empty_fields_and_writes_values_as_text():
    record = Record.of(events.SYNC, Priority.WARNING, "sync partial", SYNC_CREATED=3, SYNC_ERROR=None)
    assert record.fields == (("SYNC_CREATED", "3"),)
    assert record.journal_fields() == ["MESSAGE=sync partial", f"MESSAGE_ID={events.SYNC.hex}", "PRIORITY=4",
                                       "SYSLOG_IDENTIFIER=runas-agent", "SYNC_CREATED=3"]


@pytest.mark.parametrize("name", ["sync_created", "SYNC-CREATED", "_SOURCE_REALTIME_TIMESTAMP", "MESSAGE", "PRIORITY", ""])
def test_field_names_are_upper_snake_and_not_the_records_own(name):
    with pytest.raises(ValueError):
        Record("m", events.SYNC, Priority.INFO, ((name, "x"),))


def test_a_repeated_field_is_a_list_in_json_as_journalctl_shows_it():
    record = Record("m", events.SESSION_START, Priority.NOTICE, (("RUNAS_GROUP", "ops"), ("RUNAS_GROUP", "dev")))
    data = record.as_json(1700000000.5)
    assert data["RUNAS_GROUP"] == ["ops", "dev"] and data["PRIORITY"] == "5" and data["__REALTIME"] == 1700000000.5


# --- the writer ----------------------------------------------------------------------------------------

RECORD = Record.of(events.RELOAD, Priority.ERR, "invalid configuration", RELOAD_RESULT="invalid")


def test_to_journald_when_it_listens():
    sent = []
    journal = Journal("/nonexistent/never-written", sendv=lambda *a: sent.append(a), listening=lambda: True)
    assert journal.write(RECORD) == "journal"
    assert sent == [tuple(RECORD.journal_fields())]


@pytest.mark.parametrize("listening,refuse", [(False, False), (True, True)])
def test_to_the_fallback_file_when_journald_does_not_listen_or_refuses(tmp_path, listening, refuse):
    def sendv(*args):
        if refuse:
            raise OSError(11, "Resource temporarily unavailable")
        pytest.fail("sent to a journald that does not listen")

    path = tmp_path / "log" / "audit.jsonl"
    journal = Journal(str(path), sendv=sendv, listening=lambda: listening)
    assert journal.write(RECORD) == "file" and journal.write(RECORD) == "file"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["RELOAD_RESULT"] == "invalid" and lines[0]["MESSAGE_ID"] == events.RELOAD.hex
    assert path.stat().st_mode & 0o777 == 0o640


def test_echo_is_where_a_record_goes_without_journald_or_file(caplog):
    caplog.set_level(logging.INFO, "runas_agent.journal")
    echoed = Journal(echo=True, sendv=lambda *a: None, listening=lambda: False)
    assert echoed.write(RECORD) == "stderr"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.ERROR, "invalid configuration")]


def test_a_record_that_can_go_nowhere_is_logged_with_its_content(caplog, tmp_path):
    (tmp_path / "dir").mkdir()
    for journal in (Journal(sendv=lambda *a: None, listening=lambda: False),
                    Journal(str(tmp_path / "dir"), sendv=lambda *a: None, listening=lambda: False)):  # a directory
        caplog.clear()
        assert journal.write(RECORD) == "lost"
        (logged,) = caplog.records
        assert logged.levelno == logging.ERROR and "RELOAD_RESULT" in logged.getMessage()


# --- statuses and counts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("status,value,exit_status,priority,message_id", [
    (SyncStatus.OK, "ok", Exit.OK, Priority.INFO, events.SYNC),
    (SyncStatus.PARTIAL, "partial", Exit.PARTIAL, Priority.WARNING, events.SYNC),
    (SyncStatus.REFUSED, "refused", Exit.REFUSED, Priority.WARNING, events.SYNC),
    (SyncStatus.FAILED, "failed", Exit.ERROR, Priority.ERR, events.SYNC_FAILED),
    (SyncStatus.BUSY, "busy", Exit.BUSY, Priority.WARNING, events.SYNC_FAILED),
    (SyncStatus.ABANDONED, "abandoned", Exit.ERROR, Priority.NOTICE, events.SYNC_FAILED),
])
def test_a_status_has_one_exit_priority_and_record_kind(status, value, exit_status, priority, message_id):
    assert (status.value, str(status), status.exit, status.priority, status.message_id) == \
        (value, value, exit_status, priority, message_id)
    assert SyncStatus(value) is status


CREATE = CreateAccount("ann", 5000, 5000, "/home/ann", "/bin/bash", "c", "person", ("ann@x",))
DISABLE = DisableAccount("bob", 5001, "runas-off-5001", "gone")
WRITE = sudoers.WriteSudoers("ann", "f", "x", why="new")
SKIP = Skip("cid@x", "cid", "a system account named 'cid' exists")


@pytest.mark.parametrize("plan,outcome,status", [
    (Plan(), Outcome(), SyncStatus.OK),
    (Plan(actions=(CREATE,)), Outcome(done=[CREATE]), SyncStatus.OK),
    (Plan(actions=(CREATE,)), Outcome(failed=[(CREATE, "useradd: exit status 9")]), SyncStatus.PARTIAL),
    (Plan(skips=(SKIP,)), Outcome(), SyncStatus.PARTIAL),
    (Plan(refusals=("the directory has no users",), skips=(SKIP,)), Outcome(), SyncStatus.REFUSED),
])
def test_status_of_a_plan_and_its_outcome(plan, outcome, status):
    assert status_of(plan, outcome) is status


def test_counts_count_each_action_by_its_kind():
    remove = sudoers.RemoveSsmUserBlanket("ssm-agent-users", "b", ())
    outcome = Outcome(done=[CREATE, DISABLE, WRITE, remove, UpdateAccount("ann", {})], failed=[(CREATE, "x")])
    counts = SyncCounts.of(Plan(skips=(SKIP,)), outcome)
    assert counts == SyncCounts(created=1, disabled=1, updated=1, sudoers_written=1, sudoers_removed=1, skipped=1,
                                failed=1, actions=5)
    assert counts.summary() == ("1 created, 0 re-enabled, 1 disabled, 1 updated, 1 sudoers written, 1 removed, "
                                "1 skipped, 1 failed")
    assert SyncCounts(updated=8).summary() == "0 created, 0 re-enabled, 0 disabled, 8 updated, 0 skipped, 0 failed"
    assert SyncCounts(created=2).summary() == "2 created, 0 re-enabled, 0 disabled, 0 skipped, 0 failed"
    assert counts.journal_fields() == {"SYNC_CREATED": "1", "SYNC_DISABLED": "1", "SYNC_ENABLED": "0", "SYNC_UPDATED": "1",
                                       "SYNC_SKIPPED": "1", "SYNC_FAILED": "1", "SYNC_ACTIONS": "5"}
    assert set(counts.to_dict()) == {"created", "enabled", "disabled", "updated", "groups_set", "sudoers_written",
                                     "sudoers_removed", "skipped", "failed", "actions"}
    assert SyncCounts.of(Plan(skips=(SKIP,)), None) == SyncCounts(skipped=1)


def test_every_action_counts_as_a_count_there_is():
    names = {f.name for f in fields(SyncCounts)}
    actions = [c for module in (account_plan, sudoers) for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, Action)]
    assert len(actions) >= 9
    assert all(a.counted_as in names or a.counted_as == "" for a in actions)


def test_a_plan_summarised_by_kind_of_action():
    assert Plan().summary() == "no changes"
    assert Plan(actions=(CREATE, WRITE, CREATE), skips=(SKIP,)).summary() == "2 create, 1 sudoers, 1 skipped"
