"""Session attribution, host-side parts that need no process: inotify, the audit file, the store,
the S3 tagger's retry decisions."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

from botocore.exceptions import ClientError

from runas_agent.sessions.inotify import IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO, Inotify
from runas_agent.sessions.model import Identity, Session
from runas_agent import events
from runas_agent.events import Priority, Record
from runas_agent.journal import Journal
from runas_agent.sessions.records import OpenSessions
from runas_agent.sessions.s3tags import S3Tagger, _Job


def test_inotify_reports_names_created_moved_and_deleted(tmp_path):
    watch = Inotify()
    try:
        watch.add(str(tmp_path), IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM)
        (tmp_path / "a").write_text("x")
        os.rename(tmp_path / "a", tmp_path / "b")
        (tmp_path / "b").unlink()
        assert watch.wait(1.0)
        events = [(e.name, e.mask & (IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM)) for e in watch.read()]
        assert events == [("a", IN_CREATE), ("a", IN_MOVED_FROM), ("b", IN_MOVED_TO), ("b", IN_DELETE)]
        assert watch.read() == [] and not watch.wait(0.01)
    finally:
        watch.close()


def record(message, message_id, fields):
    return Record(message, message_id, Priority.INFO, tuple(fields))


def test_without_journald_records_are_appended_to_the_audit_file(tmp_path):
    journal = Journal(str(tmp_path / "log" / "sessions.jsonl"), socket_path=str(tmp_path / "no-socket"))
    start, end = events.SESSION_START, events.SESSION_END
    assert journal.write(record("m1", start, [("RUNAS_SESSION_ID", "s1"), ("RUNAS_GROUP", "a"), ("RUNAS_GROUP", "b")])) == "file"
    assert journal.write(record("m2", end, [("RUNAS_SESSION_ID", "s2")])) == "file"
    lines = [json.loads(l) for l in (tmp_path / "log" / "sessions.jsonl").read_text().splitlines()]
    assert [(l["MESSAGE"], l["MESSAGE_ID"], l["RUNAS_SESSION_ID"]) for l in lines] == [("m1", start, "s1"), ("m2", end, "s2")]
    assert lines[0]["RUNAS_GROUP"] == ["a", "b"]


def test_a_record_that_cannot_be_written_anywhere_is_reported(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    journal = Journal(str(tmp_path / "file" / "sessions.jsonl"), socket_path=str(tmp_path / "no-socket"))
    assert journal.write(record("lost one", events.SESSION_START, [("RUNAS_SESSION_ID", "s9")])) == "lost"
    assert "s9" in caplog.text and "journal record lost" in caplog.text


def test_open_session_store_round_trip_and_damage(tmp_path):
    store = OpenSessions(str(tmp_path / "sessions.json"))
    assert store.load() == {}
    sessions = {"s1": Session("s1", identity=Identity("alice", "u1", groups=("g",)), worker_pid=5)}
    store.save(sessions)
    assert store.load() == sessions
    assert oct(os.stat(tmp_path / "sessions.json").st_mode & 0o777) == "0o600"
    (tmp_path / "sessions.json").write_text("{broken")
    assert store.load() == {}


class FakeS3:
    def __init__(self, errors):
        self.errors = list(errors)
        self.put = []

    def get_object_tagging(self, Bucket, Key):
        if self.errors:
            code = self.errors.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": code}}, "GetObjectTagging")
        return {"TagSet": []}

    def put_object_tagging(self, Bucket, Key, Tagging):
        self.put.append((Bucket, Key, Tagging["TagSet"]))


def tagger(client, now):
    settings = SimpleNamespace(bucket="b", prefix="/logs/", max_wait_seconds=10, region=None, endpoint_url=None)
    return S3Tagger(settings, client_factory=lambda: client, clock=lambda: now[0])


def test_tagger_waits_with_growing_pauses_then_tags():
    now, client = [0.0], FakeS3(["NoSuchKey", "NoSuchKey", "SlowDown"])
    t = tagger(client, now)
    job = _Job(0.0, "s1", "logs/s1.log", [{"Key": "runas:identity-user", "Value": "alice"}], deadline=10.0)
    dues = []
    while job is not None:
        job = t.try_once(job)
        if job:
            dues.append(job.due)
            now[0] = job.due
    assert dues == [2.0, 6.0, 10.0]
    assert t.results["s1"] == "tagged" and client.put == [("b", "logs/s1.log", [{"Key": "runas:identity-user", "Value": "alice"}])]


def test_tagger_gives_up_at_the_deadline_or_on_access_denied():
    now = [0.0]
    t = tagger(FakeS3(["NoSuchKey"] * 10), now)
    job = _Job(0.0, "s1", "k", [{"Key": "a", "Value": "b"}], deadline=3.0)
    while job is not None:
        job = t.try_once(job)
        if job:
            now[0] = job.due
    assert t.results["s1"].startswith("gave up: the object is not there yet") and now[0] == 3.0
    t = tagger(FakeS3(["AccessDenied"]), now)
    assert t.try_once(_Job(0.0, "s2", "k", [{"Key": "a", "Value": "b"}], deadline=99.0)) is None
    assert t.results["s2"].startswith("gave up: AccessDenied")


def test_process_table_reads_names_parents_and_session_leaders_from_stat_lines(tmp_path):
    from runas_agent.sessions.host import _process_table

    lines = {
        1: "1 (systemd) S 0 1 1 0 -1",
        40: "40 (ssm-session-wor) S 1 40 39 0 -1",         # its own process group, not a session leader
        41: "41 (sh) S 40 41 41 0 -1",                     # the pty shell: setsid
        42: "42 (a) (b) c) S 41 42 41 0 -1",               # a name with spaces and parentheses
        45: "45 (sh) S 40 40 39 0 -1",                     # sh -c "id <name>": the worker's session
        43: "43 (ssm-session-wor) Z 1 43 43 0 -1",
    }
    for pid, line in lines.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(line + " 0 0 0\n")
    (tmp_path / "44").mkdir()                          # exited between listing and reading
    (tmp_path / "self").mkdir()
    table = _process_table(str(tmp_path))
    assert sorted(table.candidates) == [40, 43]
    assert {ppid: sorted(pids) for ppid, pids in table.children.items()} == {0: [1], 1: [40, 43], 40: [41, 45], 41: [42]}
    assert table.leaders == {1, 41, 43}


def test_the_sessions_own_bucket_comes_first_then_the_configured_one():
    from runas_agent.sessions.s3tags import destination

    settings = SimpleNamespace(bucket="configured", prefix="cfg/", max_wait_seconds=10, region=None, endpoint_url=None)
    own = Session("s-1", s3_bucket="from-state-file", s3_prefix="ssm//x/")
    assert destination(own, settings) == ("from-state-file", "ssm/x/s-1.log")
    assert destination(Session("s-1"), settings) == ("configured", "cfg/s-1.log")
    assert destination(Session("s-1"), SimpleNamespace(bucket=None, prefix="")) == ("", "")


def test_a_session_with_no_bucket_anywhere_is_reported_not_retried(caplog):
    settings = SimpleNamespace(bucket=None, prefix="", max_wait_seconds=10, region=None, endpoint_url=None)
    client = FakeS3([])
    t = S3Tagger(settings, client_factory=lambda: client, clock=lambda: 0.0)
    t.submit(Session("s-9", identity=Identity("alice", "u1")))
    assert t.pending() == 0 and t.results["s-9"].startswith("gave up: the session's state file names no S3 bucket")
    assert "sessions.s3_tagging.bucket is not set" in caplog.text and client.put == []


def test_tagging_goes_to_the_bucket_of_the_job():
    now, client = [0.0], FakeS3([])
    t = tagger(client, now)
    t.try_once(_Job(0.0, "s1", "ssm/s1.log", [{"Key": "a", "Value": "b"}], deadline=5.0, bucket="own-bucket"))
    assert client.put == [("own-bucket", "ssm/s1.log", [{"Key": "a", "Value": "b"}])]
