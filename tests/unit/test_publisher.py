"""The publisher's decisions: when it writes (first, changed, refresh, not compared), what it refuses,
and what the service records after a failure. S3 is a real botocore client whose answers are stubbed
(botocore's Stubber checks every request against the service model); the directory is a file."""

from __future__ import annotations

import datetime
import json

import boto3
import pytest
from botocore.stub import ANY, Stubber

from runas_agent import config
from runas_agent.errors import SourceError, UntrustedError
from runas_agent.journal import Journal
from runas_agent.publisher import (DIGEST_KEY, GENERATED_AT_KEY, PublishDaemon, PublishError, Publisher,
                                   content_digest, needed_paths)
from runas_agent.sources import make_source
from tests.endpoint.directories import make_directory

URL = "s3://snapshots-bucket/runas/directory.json"
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDUNIT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(make_directory(4, users_per_group=2)))
    cfg = config.validate({"source": {"type": "file", "path": str(path)},
                           "run_as": {"expression": "${path:enterprise.organization}"},
                           "publisher": {"url": URL, "fields": ["emails[primary eq true].value"]},
                           "state_dir": str(tmp_path / "state")})
    s3 = boto3.client("s3", region_name="eu-west-1")
    stubber = Stubber(s3)
    stubber.activate()
    publisher = Publisher(cfg, source=make_source(cfg.source), s3=s3, clock=NOW.timestamp)
    yield publisher, stubber, path
    stubber.deactivate()


def head(stubber, digest=None, generated_at="2026-03-01T11:00:00Z"):
    metadata = {} if digest is None else {DIGEST_KEY: digest, GENERATED_AT_KEY: generated_at}
    stubber.add_response("head_object", {"Metadata": metadata, "ContentLength": 10},
                         {"Bucket": "snapshots-bucket", "Key": "runas/directory.json"})


def put(stubber):
    stubber.add_response("put_object", {"ETag": '"abc"'}, {"Bucket": "snapshots-bucket", "Key": "runas/directory.json",
                                                           "Body": ANY, "ContentType": "application/json",
                                                           "Metadata": ANY})


def digest_of(path, paths):
    from runas_agent.core.projection import project

    return content_digest(project(json.loads(path.read_text()), paths))


def test_the_paths_carried_are_the_expressions_and_the_fields(setup):
    publisher, _, _ = setup
    assert needed_paths(publisher.cfg) == ("emails[primary eq true].value", "enterprise.organization")


def test_writes_only_when_the_digest_differs_or_the_snapshot_is_due(setup):
    publisher, stubber, path = setup
    current = digest_of(path, needed_paths(publisher.cfg))
    head(stubber, current)
    assert publisher.publish().result == "unchanged"
    head(stubber, "sha256:" + "0" * 64)
    put(stubber)
    assert publisher.publish().reason == "changed"
    head(stubber, current, generated_at="2026-03-01T06:00:00Z")  # 6 hours: publisher.refresh_seconds
    put(stubber)
    assert publisher.publish().reason == "refresh"
    head(stubber, current, generated_at="not a time")
    put(stubber)
    assert publisher.publish().reason == "changed"
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize("status, code, reason", [(404, "404", "first"), (403, "403", "not compared")])
def test_an_object_that_cannot_be_compared_is_written(setup, status, code, reason):
    """S3 answers 403 for a missing object to a role without s3:ListBucket: that cannot stop publishing."""
    publisher, stubber, _ = setup
    stubber.add_client_error("head_object", service_error_code=code, http_status_code=status)
    put(stubber)
    published = publisher.publish()
    assert (published.result, published.reason) == ("published", reason)
    stubber.assert_no_pending_responses()


def test_other_failures_write_nothing_and_name_the_call(setup):
    publisher, stubber, _ = setup
    stubber.add_client_error("head_object", service_error_code="500", http_status_code=500)
    with pytest.raises(PublishError, match="nothing was written.*HeadObject"):
        publisher.publish()
    head(stubber, None)
    stubber.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(PublishError, match="nothing was written.*PutObject.*AccessDenied"):
        publisher.publish()
    stubber.assert_no_pending_responses()


def test_a_read_without_the_extension_the_expression_reads_is_not_published(setup):
    publisher, stubber, path = setup
    document = make_directory(4, users_per_group=2, without_extensions_every=1)
    path.write_text(json.dumps(document))
    with pytest.raises(UntrustedError, match="Nothing was published"):
        publisher.publish()
    stubber.assert_no_pending_responses()  # not even a HeadObject


def test_the_service_records_a_failure_and_backs_off(setup):
    publisher, _, _ = setup
    records, now = [], [1000.0]

    def failing(cfg, source):
        raise SourceError("Identity Store d-1234567890: ListUsers page 1: access denied")

    def wait(seconds):
        now[0] += seconds
        service.request_stop()

    service = PublishDaemon("/etc/runas-agent/config.yaml", publisher.cfg, publisher_factory=failing,
                            notify=lambda *a: None, clock=lambda: now[0], wait=wait,
                            journal=Journal(sendv=lambda *f: records.append(dict(x.split("=", 1) for x in f)), echo=False))
    service.run()
    (failure,) = [r for r in records if "PUBLISH_RESULT" in r]
    assert failure["MESSAGE_ID"] == "48c5f39b919c416d817352b80ed574b2" and failure["PRIORITY"] == "3"
    assert failure["PUBLISH_RESULT"] == "failed" and "ListUsers" in failure["PUBLISH_ERROR"]
    assert failure["PUBLISH_ATTEMPT"] == "1" and failure["MESSAGE"].startswith("publish failed, nothing was written")
    # daemon.backoff_initial_seconds (30), with "equal jitter": 15 to 30 s
    assert 15 <= float(failure["PUBLISH_NEXT_SECONDS"]) <= 30


def test_the_publisher_section_names_each_problem():
    from runas_agent.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        config.validate({"source": {"type": "s3", "url": URL, "bucket_owner": "123456789012",
                                    "signing_public_key": "x"},
                         "run_as": {"expression": "${path:userName}"},
                         "publisher": {"url": "https://example.com/x", "fields": ["emails", 7], "refresh_seconds": 30,
                                       "interval_seconds": 5, "colour": "blue"}})
    problems = caught.value.problems
    assert "publisher.colour: unknown key" in problems
    assert any(p.startswith("publisher.url: 'https://example.com/x' is not an s3://bucket/key URL") for p in problems)
    assert any(p.startswith("publisher.fields[0]: 'emails' is not an attribute path") for p in problems)
    assert "publisher.fields[1]: must be a string" in problems
    assert "publisher.refresh_seconds: must be at least 60" in problems
    assert "publisher.interval_seconds: must be at least 10" in problems

    with pytest.raises(ConfigError) as caught:
        config.validate({"source": {"type": "s3", "url": URL, "bucket_owner": "123456789012",
                                    "signing_public_key": _pem()},
                         "run_as": {"expression": "${path:userName}"},
                         "publisher": {"url": URL, "refresh_seconds": 120, "interval_seconds": 600}})
    assert caught.value.problems == [
        "publisher.url: is source.url: a publisher reads the Identity Store and writes the snapshot its fleet "
        "reads, never the object it reads itself",
        "publisher.refresh_seconds: must not be less than publisher.interval_seconds"]


def _pem():
    from tests import signing

    return signing.public_pem()


def test_a_stop_during_a_publish_abandons_it_before_anything_is_written(setup):
    """SIGTERM while the directory is read: the publish ends at its next safe point (after the read,
    before the write), recorded as abandoned; HeadObject and PutObject are never called."""
    publisher, stubber, _ = setup
    records = []
    service = None

    class Stopping:
        def __init__(self, cfg, source):
            self.inner = Publisher(cfg, source=source, s3=publisher.s3, clock=publisher.clock)

        def publish(self, progress):
            service.request_stop()  # the signal arrives during the read
            return self.inner.publish(progress)

    service = PublishDaemon("/etc/runas-agent/config.yaml", publisher.cfg, publisher_factory=Stopping,
                            notify=lambda *a: None, clock=lambda: 1000.0, wait=lambda s: None,
                            journal=Journal(sendv=lambda *f: records.append(dict(x.split("=", 1) for x in f)), echo=False))
    service.run()
    (abandoned,) = [r for r in records if "PUBLISH_RESULT" in r]
    assert abandoned["PUBLISH_RESULT"] == "abandoned" and abandoned["MESSAGE_ID"] == "48c5f39b919c416d817352b80ed574b2"
    assert abandoned["MESSAGE"] == "publish abandoned at a safe point, nothing was written: the service is stopping"
    stubber.assert_no_pending_responses()  # no S3 call was answered: none was made (Stubber would refuse it)


def test_an_empty_directory_is_not_published(setup):
    from runas_agent.errors import RefusedError

    publisher, stubber, path = setup
    path.write_text(json.dumps({"IdentityStoreId": "d-1234567890", "Users": [], "Groups": [], "GroupMemberships": []}))
    with pytest.raises(RefusedError, match="no users at all: nothing was published"):
        publisher.publish()
    stubber.assert_no_pending_responses()
