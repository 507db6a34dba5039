"""Who can make an instance believe a directory: a local S3 (the endpoint's moto, ExpectedBucketOwner
enforced as S3 does) serving forged, tampered, re-signed, replayed, stale, future, wrong-owner,
wrong-key, other-store, oversized and truncated snapshots to the real runas-agent in an isolated host.
Each attack would add mallory to the Ops group (an account and a sudo drop-in); each ends with the
host exactly as it was and a message naming the cause."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from runas_agent.core.sudoers import file_name
from runas_agent.directory import canonical
from runas_agent.exitcodes import Exit
from tests import signing

pytest_plugins = ["tests.endpoint.fixtures"]
pytestmark = pytest.mark.host

REGION = "eu-west-1"
OWNER = "123456789012"  # the local endpoint's account: the bucket's owner
BUCKET = f"runas-agent-snapshots-{OWNER}-{REGION}"
URL = f"s3://{BUCKET}/runas/directory.json"
STORE = "d-1234567890"
BUCKET_KEY = f"arn:aws:kms:{REGION}:{OWNER}:key/0b1c2d3e-1111-2222-3333-444455556666"
OTHER_KEY = f"arn:aws:kms:{REGION}:{OWNER}:key/9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff"
OPS_RULE = {"identity_store_group": "Ops", "commands": ["/usr/bin/journalctl"], "nopasswd": True}


def uid(name: str) -> str:
    return f"9067{hashlib.sha256(name.encode()).hexdigest()[:6]}-{hashlib.md5(name.encode()).hexdigest()[:8]}-4000-8000-0000-{len(name):012d}"


def directory(names=("alice", "bob", "dave"), ops=("alice", "bob"), store=STORE) -> dict[str, Any]:
    users = [{"IdentityStoreId": store, "UserId": uid(n), "UserName": n, "UserStatus": "ENABLED"} for n in names]
    group = "9067aaaa01-aaaaaaaa-0000-4000-8000-000000000001"
    return {"FormatVersion": 1, "IdentityStoreId": store, "Users": users,
            "Groups": [{"IdentityStoreId": store, "GroupId": group, "DisplayName": "Ops"}],
            "GroupMemberships": [{"IdentityStoreId": store, "GroupId": group, "MemberId": {"UserId": uid(n)}} for n in ops]}


#: what every attack tries: mallory, in Ops
EVIL = directory(("alice", "bob", "dave", "mallory"), ("alice", "bob", "mallory"))


def host_state(host) -> dict[str, str]:
    """Everything a sync may change: the account databases, the drop-ins, the ledger and the snapshot."""
    out = {}
    for name in ("passwd", "group", "shadow", "gshadow"):
        out[name] = hashlib.sha256((host.etc / name).read_bytes()).hexdigest()
    for path in sorted((host.etc / "sudoers.d").iterdir()):
        out[f"sudoers.d/{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    for name in ("ledger.json", "directory.json"):
        path = host.state_dir / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"
    return out


@dataclass
class Fleet:
    host: Any
    endpoint: Any
    s3: Any
    source: dict = field(default_factory=dict)

    def put(self, data: bytes, **extra: Any) -> None:
        self.s3.put_object(Bucket=BUCKET, Key="runas/directory.json", Body=data, **extra)

    def configure(self, **source: Any) -> str:
        section = {**self.source, **source}
        return str(self.host.write_config({"source": {k: v for k, v in section.items() if v is not None},
                                           "run_as": {"expression": "${path:userName}"},
                                           "sudo": {"rules": [OPS_RULE]}}))

    def sync(self, *args: str, **source: Any):
        return self.host.agent("--config", self.configure(**source), "--once", *args)


@pytest.fixture
def fleet(identitystore_endpoint, isolated_host, monkeypatch):
    if not shutil.which("visudo"):
        pytest.skip("needs visudo (apt-get install sudo)")
    s3 = boto3.client("s3", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    identitystore_endpoint.signing_key("alias/runas-agent-snapshot-signing", private=signing.private_key())
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    yield Fleet(isolated_host, identitystore_endpoint, s3, {
        "type": "s3", "url": URL, "bucket_region": REGION, "endpoint_url": identitystore_endpoint.url,
        "bucket_owner": OWNER, "signing_public_key": signing.public_pem()})
    for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def applied(fleet: Fleet, **source: Any) -> dict[str, str]:
    """The genuine directory published and applied: alice and bob (Ops, with drop-ins) and dave."""
    fleet.put(signing.signed_bytes(directory(), ago=600), **source.pop("put", {}))
    result = fleet.sync(**source)
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert fleet.host.id("alice").returncode == 0 and (fleet.host.etc / "sudoers.d").exists()
    return host_state(fleet.host)


def tampered() -> bytes:
    genuine = signing.signed(directory())
    forged = copy.deepcopy(EVIL)
    forged.update(GeneratedAt=genuine["GeneratedAt"], Signature=genuine["Signature"])
    return canonical(forged)


def replaced_store() -> bytes:
    other = copy.deepcopy(EVIL)
    other["IdentityStoreId"] = "d-0000000000"
    for record in other["Users"] + other["Groups"] + other["GroupMemberships"]:
        record["IdentityStoreId"] = "d-0000000000"
    return signing.signed_bytes(other)


ATTACKS = {
    # name: (the object, its PutObject options, the instance's source settings, exit status, message)
    "unsigned": (lambda: canonical(dict(EVIL, GeneratedAt=signing.format_now())), {}, {}, Exit.ERROR,
                 "the document is not signed, and source.signing_public_key requires a signature"),
    "tampered after signing": (tampered, {}, {}, Exit.ERROR, "the signature does not verify with source.signing_public_key"),
    "signed with another key": (lambda: signing.signed_bytes(EVIL, "attacker"), {}, {}, Exit.ERROR,
                                f"signed with another key (it names the key {signing.key_arn('attacker')})"),
    "stale": (lambda: signing.signed_bytes(EVIL, ago=86400 + 60), {}, {}, Exit.ERROR,
              "ago, more than source.max_age (86400s): the publisher has not published since"),
    "stale for a shorter max_age": (lambda: signing.signed_bytes(EVIL, ago=3700), {}, {"max_age": 3600}, Exit.ERROR,
                                    "1.0h ago, more than source.max_age (3600s)"),
    "from the future": (lambda: signing.signed_bytes(EVIL, ago=-7200), {}, {}, Exit.ERROR,
                        "h in the future: the publisher's clock or this host's is wrong"),
    "replayed": (lambda: signing.signed_bytes(EVIL, ago=7200), {}, {}, Exit.REFUSED,
                 "before the last one applied"),
    "bucket of another owner": (lambda: signing.signed_bytes(EVIL), {}, {"bucket_owner": "111122223333"}, Exit.ERROR,
                                "AccessDenied: Access Denied (the instance role needs s3:GetObject on "
                                f"{URL}; S3 also refuses when the bucket is not source.bucket_owner's, 111122223333)"),
    "encrypted with another key": (lambda: signing.signed_bytes(EVIL), {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": OTHER_KEY},
                                   {"sse_kms_key_id": BUCKET_KEY}, Exit.ERROR,
                                   f"encrypted with the KMS key {OTHER_KEY}, not source.sse_kms_key_id {BUCKET_KEY}"),
    "of another store than the pinned one": (replaced_store, {}, {"identity_store_id": STORE}, Exit.ERROR,
                                             f"the directory of Identity Store d-0000000000, not of source.identity_store_id {STORE}"),
    "of another store than the last applied": (replaced_store, {}, {}, Exit.REFUSED,
                                               f"the directory is of Identity Store d-0000000000, the last one applied was of {STORE}"),
    "too large": (lambda: signing.signed_bytes(dict(EVIL, Users=EVIL["Users"] + [
                      {"IdentityStoreId": STORE, "UserId": uid(f"pad{i}"), "UserName": f"pad{i}", "UserStatus": "DISABLED"}
                      for i in range(200)])), {}, {"max_document_bytes": 8192}, Exit.ERROR,
                  "more than source.max_document_bytes (8192); not read"),
    "truncated": (lambda: signing.signed_bytes(EVIL)[:1500], {}, {}, Exit.ERROR, "not a JSON directory document"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_object_that_does_not_prove_itself_changes_nothing(fleet, attack):
    make, put_options, source, status, message = ATTACKS[attack]
    baseline = {"sse_kms_key_id": source["sse_kms_key_id"], "put": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": BUCKET_KEY}} \
        if "sse_kms_key_id" in source else {k: v for k, v in source.items() if k != "bucket_owner"}
    before = applied(fleet, **baseline)
    fleet.put(make(), **put_options)
    result = fleet.sync(**source)
    assert result.returncode == status, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert host_state(fleet.host) == before
    assert fleet.host.id("mallory").returncode != 0
    if status == Exit.REFUSED:
        assert "Refused: nothing was changed." in result.stdout
    else:
        assert "cannot read the directory, nothing was changed" in result.stderr


def test_a_change_of_store_is_applied_with_force(fleet):
    applied(fleet)
    fleet.put(replaced_store())
    plan = fleet.host.agent("--config", fleet.configure(), "plan")
    assert plan.returncode == Exit.REFUSED and "a change of store changes every person's UserId" in plan.stdout
    forced = fleet.sync("--force")
    assert forced.returncode == Exit.OK, forced.stdout + forced.stderr
    assert "--force overrides: the directory is of Identity Store d-0000000000" in forced.stdout
    assert fleet.host.id("mallory").returncode == 0


def test_the_publisher_signs_with_kms_and_the_fleet_follows(fleet):
    """`runas-agent export --output s3://... --signing-key` (KMS Sign and GetPublicKey through the
    endpoint's stand-in), then an instance that pins the key's public half syncs from it."""
    publisher = fleet.host.write_directory(EVIL, "published.json")
    config = fleet.host.write_config({"source": {"type": "file", "path": str(publisher)},
                                      "run_as": {"expression": "${path:userName}"}}, "publisher.yaml")
    env = {"AWS_ENDPOINT_URL_S3": fleet.endpoint.url, "AWS_ENDPOINT_URL_KMS": fleet.endpoint.url}
    export = fleet.host.agent("--config", str(config), "export", "--output", URL,
                              "--signing-key", "alias/runas-agent-snapshot-signing", env=env)
    assert export.returncode == Exit.OK, export.stderr
    fingerprint = signing.public_key().fingerprint
    assert f"4 users, 1 groups, signed by alias/runas-agent-snapshot-signing (public key {fingerprint})" in export.stderr
    assert {"kms:GetPublicKey": 1, "kms:Sign": 1}.items() <= fleet.endpoint.calls().items()
    result = fleet.sync()
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert fleet.host.id("mallory").returncode == 0
    assert (fleet.host.etc / "sudoers.d" / file_name("mallory")).exists()

    unsigned = fleet.host.agent("--config", str(config), "export", "--output", URL, env=env)
    assert unsigned.returncode == Exit.OK and ", unsigned, ETag" in unsigned.stderr
    before = host_state(fleet.host)
    refused = fleet.sync()
    assert refused.returncode == Exit.ERROR and "the document is not signed" in refused.stderr
    assert host_state(fleet.host) == before
