"""Fleet snapshots: a publisher writes the directory document to S3, instances read it with
conditional GETs. Real boto3 against a local moto S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import socket

import boto3
import pytest
from moto.server import ThreadedMotoServer

from runas_agent.errors import SourceError
from runas_agent.exitcodes import Exit
from runas_agent.sources.s3 import S3Source, publish

BUCKET = "fleet-snapshots"
URL = f"s3://{BUCKET}/runas/directory.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def document(*names):
    return {"IdentityStoreId": "d-1234567890", "Groups": [], "GroupMemberships": [],
            "Users": [{"UserId": f"id-{n}", "UserName": n, "UserStatus": "ENABLED",
                       "Extensions": {"aws:identitystore:enterprise": {"organization": "iret"}}} for n in names]}


def test_reads_are_conditional_and_see_a_new_snapshot(s3):
    first_etag = publish(s3, URL, json.dumps(document("alice", "bob")).encode())
    source = S3Source(s3, URL)
    first = source.fetch()
    assert [u.user_name for u in first.directory.users] == ["alice", "bob"]
    assert first.version == first_etag and first.stats["not_modified"] is False

    again = source.fetch()
    assert again.stats["not_modified"] is True and "bytes" not in again.stats
    assert again.directory is first.directory
    assert source.fetch(known_version=first_etag) is None

    publish(s3, URL, json.dumps(document("alice", "bob", "carol")).encode())
    changed = source.fetch()
    assert changed.stats["not_modified"] is False and changed.version != first_etag
    assert [u.user_name for u in changed.directory.users] == ["alice", "bob", "carol"]


def test_a_missing_or_damaged_snapshot_is_an_error_never_an_empty_directory(s3):
    source = S3Source(s3, URL)
    with pytest.raises(SourceError, match=r"s3://fleet-snapshots/runas/directory.json: GetObject: NoSuchKey"):
        source.fetch()
    publish(s3, URL, b'{"Users": [')
    with pytest.raises(SourceError, match="runas/directory.json"):
        source.fetch()


@pytest.mark.host
def test_publisher_and_instance_end_to_end(s3, s3_endpoint, isolated_host):
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": s3_endpoint}
    directory = isolated_host.write_directory(document("alice", "bob"))
    publisher = isolated_host.write_config({"source": {"type": "file", "path": str(directory)},
                                            "run_as": {"expression": "${path:enterprise.organization}"}}, "publisher.yaml")
    published = isolated_host.agent("--config", str(publisher), "export", "--output", URL, env=env)
    assert published.returncode == Exit.OK, published.stderr
    assert "2 users" in published.stderr and "ETag" in published.stderr

    instance = isolated_host.write_config({"source": {"type": "s3", "url": URL, "region": "us-east-1"},
                                           "run_as": {"expression": "${path:enterprise.organization}"}}, "instance.yaml")
    assert isolated_host.agent("check-config", str(instance)).returncode == Exit.OK
    once = isolated_host.agent("--config", str(instance), "--once", env=env)
    assert once.returncode == Exit.OK, once.stdout + once.stderr
    assert isolated_host.id("iret").returncode == 0


def test_config_requires_an_s3_url():
    from runas_agent import config
    from runas_agent.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config.validate({"source": {"type": "s3", "url": "https://bucket/key"}, "run_as": {"expression": "${path:userName}"}})
    assert any(p.startswith("source.url: required for type s3") for p in info.value.problems)
    with pytest.raises(ConfigError) as info:
        config.validate({"source": {"type": "file", "path": "/x.json", "url": URL}, "run_as": {"expression": "${path:userName}"}})
    assert "source.url: only for type s3" in info.value.problems
