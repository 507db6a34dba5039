"""Session logs in S3 against a local S3 endpoint (moto server on 127.0.0.1): uploaded by the stand-in
SSM agent's worker the way the real one uploads them, tagged by the watcher."""

from __future__ import annotations

import time

import boto3
import pytest

from runas_agent.sessions.model import MESSAGE_ID_END
from tests.hosts.ssm import SsmStage, owner_arn, session_id
from tests.sessions.test_sessions_host import ACME_UID, ALICE, BOB, directory, need_journald, one, wait_for

pytestmark = pytest.mark.host

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint(monkeypatch):
    from moto.server import ThreadedMotoServer

    for key, value in CREDS.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint):
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="session-logs")
    return client


@pytest.fixture
def stage(isolated_host, s3_endpoint, s3):
    need_journald()
    # The workers upload with the instance's credentials, to the local endpoint.
    stage = SsmStage(isolated_host, env={**CREDS, "AWS_ENDPOINT_URL_S3": s3_endpoint})
    try:
        stage.call("journald")
        stage.call("install", state_root=str(stage.deb_root))
        stage.call("useradd", name="acme", uid=ACME_UID)
        stage.write_snapshot(directory())
        yield stage
    finally:
        stage.close()


def tagging(endpoint: str, **more) -> dict:
    return {"s3_tagging": {"enabled": True, "region": "us-east-1", "endpoint_url": endpoint, "max_wait_seconds": 30,
                           **more}}


def tag_result(stage, sid, timeout=40.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = stage.call("tagger")["results"].get(sid)
        if result:
            return result
        time.sleep(0.2)
    return ""


def tags_of(s3, key) -> dict:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket="session-logs", Key=key)["TagSet"]}


def test_the_sessions_own_bucket_from_its_state_file_with_none_configured(stage, s3, s3_endpoint):
    """The preferences' s3BucketName/s3KeyPrefix reach the state file (OutputS3BucketName,
    OutputS3KeyPrefix); the worker uploads <prefix>/<id>.log when the session ends; the watcher tags it
    there, with no bucket in its own configuration."""
    cfg = stage.write_config(tagging(s3_endpoint))
    stage.call("watcher", config=str(cfg))
    stage.call("watcher_start")
    sid = session_id(ALICE, 70)
    stage.call("start", sid=sid, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root),
               bucket="session-logs", prefix="fleet/ssm/")
    stage.call("type", sid=sid, text="echo hello from the shell\n")
    time.sleep(0.3)
    stage.call("end", sid=sid)
    one(stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_END), RUNAS_IDENTITY_USER=ALICE)
    assert tag_result(stage, sid) == "tagged"
    key = f"fleet/ssm/{sid}.log"
    assert b"hello from the shell" in s3.get_object(Bucket="session-logs", Key=key)["Body"].read()
    tags = tags_of(s3, key)
    assert tags["runas:identity-user"] == ALICE and tags["runas:account"] == "acme"
    assert tags["runas:account-uid"] == str(ACME_UID) and tags["runas:organization"] == "acme"


def test_ending_a_session_never_loses_its_log(stage, s3, s3_endpoint):
    """A disabled person's session is ended while its log upload takes longer than the shell's grace
    (6 s here, against the 2 s grace): the worker is asked to stop, not killed, so the log still
    arrives, and is tagged."""
    cfg = stage.write_config({**tagging(s3_endpoint), "end_sessions_of_disabled_people": True})
    stage.call("watcher", config=str(cfg), worker_grace=60.0)
    sid, colleague = session_id(BOB, 71), session_id(ALICE, 72)
    shell = stage.call("start", sid=sid, owner=owner_arn(BOB), run_as="acme", state_root=str(stage.deb_root),
                       bucket="session-logs", prefix="ssm", upload_delay=6.0, stubborn=True)
    stage.call("start", sid=colleague, owner=owner_arn(ALICE), run_as="acme", state_root=str(stage.deb_root),
               bucket="session-logs", prefix="ssm")
    stage.call("type", sid=sid, text="echo bob was here\n")
    stage.call("poll")
    out = stage.call("end_sessions_of", names=[BOB], grace=2.0)
    assert out["ended"] == [sid]
    alive = stage.call("pids_alive", pids=[shell["shell_pid"], *shell["job_pids"]])["alive"]
    assert not any(alive.values()), alive
    one(stage.wait_journal(1, RUNAS_SESSION_ID=sid, MESSAGE_ID=MESSAGE_ID_END),
        RUNAS_END_REASON="ended by runas-agent: the person is disabled")
    stage.call("watcher_start")
    assert tag_result(stage, sid, timeout=60) == "tagged"
    key = f"ssm/{sid}.log"
    assert b"bob was here" in s3.get_object(Bucket="session-logs", Key=key)["Body"].read()
    assert tags_of(s3, key)["runas:identity-user"] == BOB
    assert wait_for(lambda: stage.call("alive", sids=[sid, colleague])["alive"] == {sid: False, colleague: True}, 20)
    assert stage.journal(RUNAS_SESSION_ID=colleague, MESSAGE_ID=MESSAGE_ID_END) == []


def test_the_configured_bucket_serves_sessions_whose_state_file_names_none(stage, s3, s3_endpoint):
    cfg = stage.write_config(tagging(s3_endpoint, bucket="session-logs", prefix="ssm/", max_wait_seconds=6))
    stage.call("watcher", config=str(cfg))
    stage.call("watcher_start")
    late, never = session_id(ALICE, 73), session_id(BOB, 74)
    for sid, who in ((late, ALICE), (never, BOB)):
        stage.call("start", sid=sid, owner=owner_arn(who), run_as="acme", state_root=str(stage.deb_root))
    for sid in (late, never):
        stage.call("end", sid=sid)
    assert len(stage.wait_journal(2, MESSAGE_ID=MESSAGE_ID_END)) == 2
    # An object that appears a little after the session ends is waited for; someone else's tags stay.
    time.sleep(1.0)
    s3.put_object(Bucket="session-logs", Key=f"ssm/{late}.log", Body=b"transcript", Tagging="retention=90d")
    assert tag_result(stage, late) == "tagged"
    assert tag_result(stage, never).startswith("gave up: the object is not there yet")
    tags = tags_of(s3, f"ssm/{late}.log")
    assert tags["retention"] == "90d" and tags["runas:identity-user"] == ALICE
    assert tags["runas:identity-id"] == "9067a1b2c3-aaaaaaaa-1111-2222-3333-444444444444"
    assert tags["runas:display-name"] == "Alice Example" and len(tags) <= 10
    assert stage.call("sessions")["sessions"] == []


def test_a_worker_still_uploading_after_its_grace_is_killed_and_nothing_more_is_recorded(stage, s3, s3_endpoint):
    stage.call("zombie_timeout", seconds=1.0)
    cfg = stage.write_config(tagging(s3_endpoint))
    stage.call("watcher", config=str(cfg), worker_grace=2.0)
    stage.call("watcher_start")
    sid = session_id(BOB, 75)
    stage.call("start", sid=sid, owner=owner_arn(BOB), run_as="acme", state_root=str(stage.deb_root),
               bucket="session-logs", prefix="ssm", upload_delay=60.0)
    assert stage.wait_journal(1, RUNAS_SESSION_ID=sid)
    started = time.monotonic()
    assert stage.call("end_sessions_of", names=[BOB], grace=1.0)["ended"] == [sid]
    assert wait_for(lambda: stage.call("alive", sids=[sid])["alive"] == {sid: False}, 15)
    assert 2.0 <= time.monotonic() - started < 12.0
    assert stage.call("wait_done", sid=sid)["done"]     # the agent's own wait for the dead worker, then cleanup
    time.sleep(1.0)
    assert [r["MESSAGE_ID"] for r in stage.journal(RUNAS_SESSION_ID=sid)].count(MESSAGE_ID_END) == 1
    assert len(stage.journal(RUNAS_SESSION_ID=sid)) == 2
    assert s3.list_objects_v2(Bucket="session-logs", Prefix=f"ssm/{sid}").get("KeyCount", 0) == 0
