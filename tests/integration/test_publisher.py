"""`runas-agent publish`: real boto3 against the local endpoint's Identity Store, S3 (moto) and KMS
signing stand-in. What each publish calls (an unchanged directory: no PutObject), what the snapshot
carries, and that an instance configured with `source.type: s3` and the signing key's public half
believes it."""

from __future__ import annotations

import base64
import json
import time

import boto3
import pytest

from runas_agent import cli, config
from runas_agent.directory import ENTERPRISE_EXTENSION
from runas_agent.errors import SourceError, UntrustedError
from runas_agent.exitcodes import Exit
from runas_agent.publisher import DIGEST_KEY, GENERATED_AT_KEY, PublishDaemon, Publisher, PublishError, content_digest
from runas_agent.journal import Journal
from runas_agent.sources import make_source
from runas_agent.sources.identitystore import IdentityStoreSource
from runas_agent.sources.signature import PublicKey, sign_with_kms
from tests.deploy.templates import CallRecorder
from tests.endpoint.directories import make_directory, user_id

pytest_plugins = ["tests.endpoint.fixtures"]

REGION = "eu-west-1"
OWNER = "123456789012"  # the local endpoint's account
BUCKET = "runas-agent-snapshots-test"
URL = f"s3://{BUCKET}/runas/directory.json"
STORE = "d-1234567890"


@pytest.fixture
def fleet(identitystore_endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", identitystore_endpoint.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", identitystore_endpoint.url)
    s3 = boto3.client("s3", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    identitystore_endpoint.seed(make_directory(30, users_per_group=10))
    key = identitystore_endpoint.signing_key("alias/runas-agent-snapshot-signing")
    kms = boto3.client("kms", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    public = PublicKey.load(base64.b64encode(kms.get_public_key(KeyId=key)["PublicKey"]).decode())
    yield _Fleet(identitystore_endpoint, s3, key, public, tmp_path)
    for version in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=version["Key"])
    s3.delete_bucket(Bucket=BUCKET)


class _Fleet:
    def __init__(self, endpoint, s3, key, public, tmp_path):
        self.endpoint, self.s3, self.key, self.public, self.tmp_path = endpoint, s3, key, public, tmp_path

    def config(self, expression="${path:userName}", **publisher):
        return config.validate({
            "source": {"type": "identitystore", "region": REGION, "identity_store_id": STORE,
                       "endpoint_url": self.endpoint.url},
            "run_as": {"expression": expression},
            "publisher": {"url": URL, "signing_key": "alias/runas-agent-snapshot-signing", **publisher},
            "state_dir": str(self.tmp_path / "state")})

    def publisher(self, cfg, clock=time.time):
        """A Publisher on a recorded boto3 session: (publisher, recorder)."""
        session = boto3.session.Session(region_name=REGION)
        calls = CallRecorder(session)
        source = IdentityStoreSource.from_settings(cfg.source, session=session)
        kms = session.client("kms")
        signer = (lambda document: sign_with_kms(document, kms, cfg.publisher.signing_key)) if cfg.publisher.signing_key else None
        return Publisher(cfg, source=source, s3=session.client("s3"), signer=signer, clock=clock), calls

    def document(self):
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key="runas/directory.json")["Body"].read())

    def instance(self):
        """An instance's source, as docs/deploy-aws.md configures one."""
        cfg = config.validate({"source": {"type": "s3", "url": URL, "bucket_region": REGION, "bucket_owner": OWNER,
                                          "endpoint_url": self.endpoint.url, "signing_public_key": self.public.pem(),
                                          "identity_store_id": STORE},
                               "run_as": {"expression": "${path:userName}"}})
        return make_source(cfg.source)


def operations(calls):
    return [f"{service}:{operation}" for service, operation, _ in calls.calls]


def test_publishes_once_then_costs_no_put_while_the_directory_is_unchanged(fleet):
    publisher, calls = fleet.publisher(fleet.config())
    first = publisher.publish()
    assert (first.result, first.reason, first.users, first.groups) == ("published", "first", 30, 3)
    s3_and_kms = [op for op in operations(calls) if not op.startswith("identitystore:")]
    assert s3_and_kms == ["s3:HeadObject", "kms:GetPublicKey", "kms:Sign", "s3:PutObject"]
    # one full listing: ListUsers, ListGroups, ListGroupMemberships per group (one page each here)
    assert first.identitystore_calls == 1 + 1 + 3
    head = fleet.s3.head_object(Bucket=BUCKET, Key="runas/directory.json")
    assert head["Metadata"] == {DIGEST_KEY: first.digest, GENERATED_AT_KEY: first.generated_at}
    assert content_digest(fleet.document()) == first.digest

    calls.calls.clear()
    second = publisher.publish()
    assert (second.result, second.digest, second.generated_at) == ("unchanged", first.digest, first.generated_at)
    assert [op for op in operations(calls) if not op.startswith("identitystore:")] == ["s3:HeadObject"]
    assert fleet.s3.head_object(Bucket=BUCKET, Key="runas/directory.json")["ETag"] == first.etag


def test_a_change_is_published_and_an_instance_believes_it(fleet):
    publisher, calls = fleet.publisher(fleet.config())
    publisher.publish()
    instance = fleet.instance()
    before = instance.fetch()
    assert len(before.directory.users) == 30 and before.directory.generated_at is not None

    changed = make_directory(31, users_per_group=10)
    fleet.endpoint.seed(changed)
    calls.calls.clear()
    published = publisher.publish()
    assert (published.result, published.reason, published.users) == ("published", "changed", 31)
    assert operations(calls).count("s3:PutObject") == 1
    after = instance.fetch()
    assert after.version != before.version and after.stats["not_modified"] is False
    assert after.directory.user_by_name("user00030").user_id == user_id(30)
    assert instance.fetch().stats["not_modified"] is True  # the fleet's next read is a 304


def test_the_snapshot_carries_only_the_needed_fields_unless_told(fleet):
    publisher, _ = fleet.publisher(fleet.config())
    publisher.publish()
    document = fleet.document()
    assert set(document) == {"FormatVersion", "IdentityStoreId", "GeneratedAt", "Signature", "Users", "Groups",
                             "GroupMemberships"}
    assert {key for user in document["Users"] for key in user} == {
        "IdentityStoreId", "UserId", "UserName", "UserStatus", "DisplayName"}
    fleet.public.verify(document, "the published snapshot")

    organization = fleet.config("${path:enterprise.organization}", fields=["emails[primary eq true].value"])
    publisher, _ = fleet.publisher(organization)
    published = publisher.publish()
    assert published.reason == "changed"  # other fields, another digest
    users = fleet.document()["Users"]
    assert {key for user in users for key in user} == {
        "IdentityStoreId", "UserId", "UserName", "UserStatus", "DisplayName", "Extensions", "Emails"}
    assert users[0]["Extensions"] == {ENTERPRISE_EXTENSION: {"organization": "Org0"}}
    assert users[0]["Emails"] == [{"Primary": True, "Value": "user00000@example.com"}]
    assert not any("Name" in user or "Addresses" in user for user in users)


def test_an_unchanged_snapshot_is_written_again_once_it_is_due(fleet):
    now = [time.time()]
    publisher, calls = fleet.publisher(fleet.config(refresh_seconds=3600), clock=lambda: now[0])
    first = publisher.publish()
    now[0] += 3599
    assert publisher.publish().result == "unchanged"
    now[0] += 1
    calls.calls.clear()
    refreshed = publisher.publish()
    assert (refreshed.result, refreshed.reason, refreshed.digest) == ("published", "refresh", first.digest)
    assert refreshed.generated_at > first.generated_at
    assert operations(calls).count("s3:PutObject") == 1


def test_an_object_written_by_someone_else_is_replaced(fleet):
    """No digest in the metadata (written by hand, or by an older export): not compared, written."""
    fleet.s3.put_object(Bucket=BUCKET, Key="runas/directory.json", Body=b"{}")
    publisher, _ = fleet.publisher(fleet.config())
    assert publisher.publish().reason == "changed"
    assert len(fleet.document()["Users"]) == 30


def test_nothing_is_written_when_the_read_fails(fleet):
    fleet.endpoint.inject("ListGroups", "access_denied", times=100)
    publisher, calls = fleet.publisher(fleet.config())
    with pytest.raises(SourceError, match="ListGroups"):
        publisher.publish()
    assert not [op for op in operations(calls) if op.startswith("s3:")]
    with pytest.raises(fleet.s3.exceptions.ClientError):
        fleet.s3.head_object(Bucket=BUCKET, Key="runas/directory.json")


def test_a_read_that_dropped_user_status_is_not_published(fleet):
    """Every instance would refuse it: the publisher does not write it over the last good snapshot."""
    publisher, calls = fleet.publisher(fleet.config())
    good = publisher.publish()
    fleet.endpoint.seed(make_directory(31, users_per_group=10))
    fleet.endpoint.inject("ListUsers", "drop_field", member="UserStatus")
    calls.calls.clear()
    with pytest.raises(UntrustedError, match="none of the 31 users carries UserStatus.*Nothing was published"):
        publisher.publish()
    assert "s3:PutObject" not in operations(calls)
    assert fleet.s3.head_object(Bucket=BUCKET, Key="runas/directory.json")["ETag"] == good.etag


def test_a_write_that_fails_names_the_call(fleet, monkeypatch):
    publisher, _ = fleet.publisher(fleet.config())
    fleet.s3.delete_bucket(Bucket=BUCKET)
    with pytest.raises(PublishError, match="nothing was written.*NoSuchBucket"):
        publisher.publish()
    fleet.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})


def write_config(fleet, **publisher) -> str:
    cfg = {"source": {"type": "identitystore", "region": REGION, "identity_store_id": STORE,
                      "endpoint_url": fleet.endpoint.url},
           "run_as": {"expression": "${path:userName}"},
           "publisher": {"url": URL, "signing_key": "alias/runas-agent-snapshot-signing", **publisher},
           "state_dir": str(fleet.tmp_path / "state")}
    path = fleet.tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_publish_once_on_the_command_line(fleet, capsys):
    path = write_config(fleet)
    assert cli.main(["--config", path, "publish", "--once"]) == Exit.OK
    out = capsys.readouterr().out
    assert f"{URL} published (first): 30 users, 3 groups, signed (public key {fleet.public.fingerprint})" in out
    assert cli.main(["--config", path, "publish", "--once", "--json"]) == Exit.OK
    result = json.loads(capsys.readouterr().out)
    assert result["result"] == "unchanged" and result["users"] == 30


def test_publish_without_a_url_is_an_invalid_configuration(fleet, capsys):
    path = fleet.tmp_path / "config.yaml"
    path.write_text(json.dumps({"source": {"region": REGION}, "run_as": {"expression": "${path:userName}"}}))
    assert cli.main(["--config", str(path), "publish", "--once"]) == Exit.CONFIG
    assert "publisher.url: required for runas-agent publish" in capsys.readouterr().err


def test_the_service_publishes_and_records_each_publish(fleet):
    """PublishDaemon on a fake clock: the first publish, READY, one PUBLISH record each; the second
    round unchanged; stop."""
    cfg = fleet.config()
    records, notes = [], []
    now = [1000.0]

    def wait(seconds):
        now[0] += seconds
        if len([r for r in records if r.get("PUBLISH_RESULT")]) >= 2:
            service.request_stop()

    service = PublishDaemon("/etc/runas-agent/config.yaml", cfg, notify=lambda *a: notes.append(a),
                            journal=Journal(sendv=lambda *fields: records.append(dict(f.split("=", 1) for f in fields)),
                                            echo=False),
                            clock=lambda: now[0], wait=wait)
    assert service.run() == Exit.OK
    publishes = [r for r in records if r.get("PUBLISH_RESULT")]
    assert [r["PUBLISH_RESULT"] for r in publishes] == ["published", "unchanged"]
    assert publishes[0]["PUBLISH_REASON"] == "first" and publishes[0]["PUBLISH_USERS"] == "30"
    assert publishes[0]["PUBLISH_NEXT_SECONDS"] == "300"
    assert publishes[1]["PUBLISH_DIGEST"] == publishes[0]["PUBLISH_DIGEST"]
    ready = [n for n in notes if "READY=1" in n]
    assert ready and ready[0][1].startswith("STATUS=last publish: s3://")
    assert (fleet.tmp_path / "state" / "publish.lock").exists()
