"""Tagging session logs in S3 against a local S3 endpoint (moto server on 127.0.0.1)."""

from __future__ import annotations

import threading
import time

import boto3
import pytest

from runas_agent.sessions.model import MESSAGE_ID_END
from tests.hosts.ssm import SsmStage, owner_arn, session_id
from tests.sessions.test_sessions_host import ACME_UID, ALICE, BOB, directory, need_journald

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


def test_ended_sessions_logs_are_tagged_with_the_person(isolated_host, s3_endpoint):
    need_journald()
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="session-logs")
    stage = SsmStage(isolated_host, env=CREDS)
    try:
        stage.call("journald")
        stage.call("install", state_root=str(stage.deb_root))
        stage.call("useradd", name="acme", uid=ACME_UID)
        stage.write_snapshot(directory())
        cfg = stage.write_config({"s3_tagging": {"enabled": True, "bucket": "session-logs", "prefix": "ssm/",
                                                 "region": "us-east-1", "endpoint_url": s3_endpoint,
                                                 "max_wait_seconds": 6}})
        stage.call("watcher", config=str(cfg))
        stage.call("watcher_start")
        late, never = session_id(ALICE, 70), session_id(BOB, 71)
        # Someone else's tags on the object stay; ours are added beside them.
        for sid in (late, never):
            stage.call("start", sid=sid, owner=owner_arn(ALICE if sid == late else BOB), run_as="acme",
                       state_root=str(stage.deb_root))
        assert len(stage.wait_journal(2, RUNAS_ACCOUNT="acme")) == 2
        stage.call("end", sid=late)
        stage.call("end", sid=never)
        assert len(stage.wait_journal(2, MESSAGE_ID=MESSAGE_ID_END)) == 2

        # Session Manager uploads the log a little after the session ends: the tagger must wait for it.
        time.sleep(1.0)
        s3.put_object(Bucket="session-logs", Key=f"ssm/{late}.log", Body=b"transcript",
                      Tagging="retention=90d")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            results = stage.call("tagger")["results"]
            if len(results) == 2:
                break
            time.sleep(0.2)
        assert results.get(late) == "tagged", results
        assert results.get(never, "").startswith("gave up: the object is not there yet"), results
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket="session-logs", Key=f"ssm/{late}.log")["TagSet"]}
        assert tags["retention"] == "90d"
        assert tags["runas:identity-user"] == ALICE
        assert tags["runas:identity-id"] == "9067a1b2c3-aaaaaaaa-1111-2222-3333-444444444444"
        assert tags["runas:account"] == "acme" and tags["runas:account-uid"] == str(ACME_UID)
        assert tags["runas:organization"] == "acme" and tags["runas:display-name"] == "Alice Example"
        assert len(tags) <= 10 and all(len(v) <= 256 for v in tags.values())
        # The watcher kept working throughout.
        assert stage.call("sessions")["sessions"] == []
    finally:
        stage.close()
