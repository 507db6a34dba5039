"""Fleet snapshots: a publisher writes the signed directory document to S3, instances read it with
conditional GETs and believe it only when it proves itself. Real boto3 against the local endpoint's
S3 (moto, with ExpectedBucketOwner enforced as S3 does) and its KMS signing stand-in."""

from __future__ import annotations

import datetime
import json

import boto3
import pytest

from runas_agent import config
from runas_agent.errors import AgentError, SourceError, UntrustedError
from runas_agent.sources.s3 import S3Source, publish
from runas_agent.sources.signature import KmsSigner, sign_with_kms
from tests import signing

pytest_plugins = ["tests.endpoint.fixtures"]

REGION = "eu-west-1"
BUCKET = "fleet-snapshots"
URL = f"s3://{BUCKET}/runas/directory.json"
OWNER = "123456789012"  # the local endpoint's account


def document(*names, store="d-1234567890"):
    return {"IdentityStoreId": store, "Groups": [], "GroupMemberships": [],
            "Users": [{"UserId": f"id-{n}", "UserName": n, "UserStatus": "ENABLED",
                       "Extensions": {"aws:identitystore:enterprise": {"organization": "iret"}}} for n in names]}


@pytest.fixture
def s3(identitystore_endpoint):
    client = boto3.client("s3", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


def settings(endpoint, **source):
    section = {"type": "s3", "url": URL, "region": REGION, "endpoint_url": endpoint.url, "bucket_owner": OWNER,
               "signing_public_key": signing.public_pem(), **source}
    return config.validate({"source": section, "run_as": {"expression": "${path:userName}"}}).source


class Clock:
    def __init__(self):
        self.now = signing.now().timestamp()

    def __call__(self):
        return self.now


def test_reads_are_conditional_and_see_a_new_snapshot(s3, identitystore_endpoint):
    first_etag = publish(s3, URL, signing.signed_bytes(document("alice", "bob")))
    source = S3Source.from_settings(settings(identitystore_endpoint))
    first = source.fetch()
    assert [u.user_name for u in first.directory.users] == ["alice", "bob"]
    assert first.version == first_etag and first.stats["not_modified"] is False

    again = source.fetch()
    assert again.stats["not_modified"] is True and "bytes" not in again.stats
    assert again.directory is first.directory
    assert source.fetch(known_version=first_etag) is None

    publish(s3, URL, signing.signed_bytes(document("alice", "bob", "carol")))
    changed = source.fetch()
    assert changed.stats["not_modified"] is False and changed.version != first_etag
    assert [u.user_name for u in changed.directory.users] == ["alice", "bob", "carol"]


def test_a_missing_or_damaged_snapshot_is_an_error_never_an_empty_directory(s3, identitystore_endpoint):
    source = S3Source.from_settings(settings(identitystore_endpoint))
    with pytest.raises(SourceError, match=r"s3://fleet-snapshots/runas/directory.json: GetObject: NoSuchKey"):
        source.fetch()
    publish(s3, URL, b'{"Users": [')
    with pytest.raises(SourceError, match="runas/directory.json: not a JSON directory document"):
        source.fetch()


def test_an_unchanged_snapshot_still_grows_old(s3, identitystore_endpoint):
    """A 304 counts against source.max_age: a publisher that stopped is noticed although the object
    did not change."""
    publish(s3, URL, signing.signed_bytes(document("alice"), ago=60))
    clock = Clock()
    source = S3Source(S3Source.from_settings(settings(identitystore_endpoint, max_age=3600)).client,
                      settings(identitystore_endpoint, max_age=3600), clock=clock)
    etag = source.fetch().version
    clock.now += 3000
    assert source.fetch().stats["not_modified"] is True
    assert source.fetch(known_version=etag) is None
    clock.now += 600  # 3,660 s after GeneratedAt
    with pytest.raises(UntrustedError, match=r"generated at .*, 1\.0h ago, more than source.max_age \(3600s\)"):
        source.fetch()
    with pytest.raises(UntrustedError, match="more than source.max_age"):
        source.fetch(known_version=etag)


def test_every_read_names_the_bucket_owner(s3, identitystore_endpoint):
    publish(s3, URL, signing.signed_bytes(document("alice")))
    sent = []
    source = S3Source.from_settings(settings(identitystore_endpoint))
    source.client.meta.events.register("before-send.s3.GetObject",
                                       lambda request, **_: sent.append(request.headers.get("x-amz-expected-bucket-owner")))
    source.fetch()
    source.fetch()
    assert sent == [OWNER.encode(), OWNER.encode()]
    other = S3Source.from_settings(settings(identitystore_endpoint, bucket_owner="111122223333"))
    with pytest.raises(SourceError, match=r"GetObject: AccessDenied: Access Denied \(the instance role needs s3:GetObject "
                                          r"on s3://fleet-snapshots/runas/directory.json; S3 also refuses when the bucket "
                                          r"is not source.bucket_owner's, 111122223333\)"):
        other.fetch()


def test_the_publisher_signs_with_kms_and_the_instance_verifies_offline(s3, identitystore_endpoint):
    """sign_with_kms against the KMS stand-in (the key's private half known only to it), the
    instance with the public key GetPublicKey gave: no KMS call per read."""
    arn = identitystore_endpoint.signing_key("alias/runas-agent-snapshot-signing")
    kms = boto3.client("kms", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    body = dict(document("alice"), GeneratedAt=signing.format_now())
    signed, public_key = sign_with_kms(body, kms, "alias/runas-agent-snapshot-signing")
    assert signed["Signature"]["KeyId"] == arn and signed["Signature"]["Algorithm"] == "RSASSA_PKCS1_V1_5_SHA_256"
    assert public_key.bits == 3072
    publish(s3, URL, json.dumps(signed).encode())
    identitystore_endpoint.reset_calls()
    source = S3Source.from_settings(settings(identitystore_endpoint, signing_public_key=public_key.pem()))
    assert [u.user_name for u in source.fetch().directory.users] == ["alice"]
    assert not any(call.startswith("kms:") for call in identitystore_endpoint.calls())
    # the pinned test key is not the KMS key
    with pytest.raises(UntrustedError, match="does not verify with source.signing_public_key"):
        S3Source.from_settings(settings(identitystore_endpoint)).fetch()


def test_a_key_that_cannot_sign_is_refused_before_anything_is_signed(identitystore_endpoint):
    kms = boto3.client("kms", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    symmetric = kms.create_key()["KeyMetadata"]["Arn"]  # moto's own key: ENCRYPT_DECRYPT
    with pytest.raises(AgentError, match=f"--signing-key {symmetric}: not a key that signs with RSASSA_PKCS1_V1_5_SHA_256"):
        KmsSigner(kms, symmetric).public_key()


def test_sse_kms_key_is_checked_when_configured(s3, identitystore_endpoint):
    bucket_key = f"arn:aws:kms:{REGION}:{OWNER}:key/0b1c2d3e-1111-2222-3333-444455556666"
    other_key = f"arn:aws:kms:{REGION}:{OWNER}:key/99999999-1111-2222-3333-444455556666"
    data = signing.signed_bytes(document("alice"))
    s3.put_object(Bucket=BUCKET, Key="runas/directory.json", Body=data, ServerSideEncryption="aws:kms", SSEKMSKeyId=bucket_key)
    assert S3Source.from_settings(settings(identitystore_endpoint, sse_kms_key_id=bucket_key)).fetch().directory.users
    s3.put_object(Bucket=BUCKET, Key="runas/directory.json", Body=data, ServerSideEncryption="aws:kms", SSEKMSKeyId=other_key)
    with pytest.raises(UntrustedError, match=f"encrypted with the KMS key {other_key}, not source.sse_kms_key_id {bucket_key}"):
        S3Source.from_settings(settings(identitystore_endpoint, sse_kms_key_id=bucket_key)).fetch()
    publish(s3, URL, data)  # no SSE header
    with pytest.raises(UntrustedError, match="encrypted with no server-side encryption"):
        S3Source.from_settings(settings(identitystore_endpoint, sse_kms_key_id=bucket_key)).fetch()


def test_a_large_object_is_refused_unread(s3, identitystore_endpoint):
    data = signing.signed_bytes(document(*[f"user{i}" for i in range(50)]))
    publish(s3, URL, data)
    source = S3Source.from_settings(settings(identitystore_endpoint, max_document_bytes=len(data) - 1))
    with pytest.raises(UntrustedError, match=f"{len(data)} bytes, more than source.max_document_bytes \\({len(data) - 1}\\); not read"):
        source.fetch()
    assert S3Source.from_settings(settings(identitystore_endpoint, max_document_bytes=len(data))).fetch()
