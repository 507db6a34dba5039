"""The local endpoint as the trust tests need it, shown through real boto3: KMS signing keys that sign
as KMS does (moto's do not), S3 refusing a request whose ExpectedBucketOwner is not the bucket's,
Identity Store faults that drop a field, and one reading of records for a directory file and the
endpoint, so a document means the same directory either way."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, utils

from runas_agent import config
from runas_agent.errors import SourceError
from runas_agent.sources.file import FileSource
from runas_agent.sources.identitystore import IdentityStoreSource
from tests.endpoint.directories import make_directory

pytest_plugins = ["tests.endpoint.fixtures"]

REGION = "eu-west-1"
SAMPLE = Path(__file__).resolve().parents[2] / "agent/runas_agent/samples/directory.json"
DIGEST = hashlib.sha256(b"the canonical bytes of a directory document").digest()


def verifies(public_der: bytes, signature: bytes) -> bool:
    key = serialization.load_der_public_key(public_der)
    try:
        key.verify(signature, DIGEST, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def test_moto_signs_a_digest_as_a_message_so_signing_keys_are_the_stand_ins(identitystore_endpoint):
    kms = boto3.client("kms", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    sign = dict(Message=DIGEST, MessageType="DIGEST", SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")

    moto_key = kms.create_key(KeySpec="RSA_3072", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    signature = kms.sign(KeyId=moto_key, **sign)["Signature"]
    assert not verifies(kms.get_public_key(KeyId=moto_key)["PublicKey"], signature)

    key = identitystore_endpoint.signing_key("alias/runas-agent-snapshot-signing")
    answer = kms.sign(KeyId="alias/runas-agent-snapshot-signing", **sign)
    assert answer["KeyId"] == key and answer["SigningAlgorithm"] == "RSASSA_PKCS1_V1_5_SHA_256"
    public = kms.get_public_key(KeyId=key)
    assert (public["KeySpec"], public["KeyUsage"]) == ("RSA_3072", "SIGN_VERIFY")
    assert verifies(public["PublicKey"], answer["Signature"])
    assert verifies(public["PublicKey"], kms.sign(KeyId=f"arn:aws:kms:{REGION}:123456789012:alias/runas-agent-snapshot-signing",
                                                   **sign)["Signature"])
    with pytest.raises(ClientError, match="InvalidKeyUsageException"):
        kms.sign(KeyId=key, Message=DIGEST, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    # the model check is on: a digest of the wrong length gets KMS's answer, which Sign's model
    # does not list, and the endpoint reports it
    with pytest.raises(ClientError, match="Digest is invalid length"):
        kms.sign(KeyId=key, Message=DIGEST[:20], MessageType="DIGEST", SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")
    assert any("ValidationException is not an error of Sign" in p for p in identitystore_endpoint.problems)
    identitystore_endpoint.problems.clear()


def test_s3_refuses_a_bucket_of_another_owner(identitystore_endpoint):
    s3 = boto3.client("s3", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    s3.create_bucket(Bucket="owned-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    try:
        s3.put_object(Bucket="owned-bucket", Key="k", Body=b"x")
        assert s3.get_object(Bucket="owned-bucket", Key="k", ExpectedBucketOwner="123456789012")["Body"].read() == b"x"
        with pytest.raises(ClientError) as info:
            s3.get_object(Bucket="owned-bucket", Key="k", ExpectedBucketOwner="111122223333")
        assert info.value.response["Error"]["Code"] == "AccessDenied"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.put_object(Bucket="owned-bucket", Key="k", Body=b"y", ExpectedBucketOwner="111122223333")
        assert s3.get_object(Bucket="owned-bucket", Key="k")["Body"].read() == b"x"
    finally:
        s3.delete_object(Bucket="owned-bucket", Key="k")
        s3.delete_bucket(Bucket="owned-bucket")


@pytest.mark.parametrize("member", ["Extensions", "UserStatus"])
def test_a_fault_drops_a_field_as_an_old_sdk_or_a_proxy_would(identitystore_endpoint, member):
    identitystore_endpoint.seed(make_directory(3, users_per_group=0))
    client = boto3.client("identitystore", endpoint_url=identitystore_endpoint.url, region_name=REGION)
    listing = dict(IdentityStoreId="d-1234567890", Extensions=["aws:identitystore:enterprise"])
    assert all(member in u for u in client.list_users(**listing)["Users"])
    identitystore_endpoint.inject("ListUsers", "drop_field", member=member, times=1)
    assert not any(member in u for u in client.list_users(**listing)["Users"])
    assert all(member in u for u in client.list_users(**listing)["Users"])


def _sample() -> dict:
    return json.loads(SAMPLE.read_text())


def _mutated(change) -> dict:
    document = _sample()
    change(document)
    return document


CORPUS = {
    "the bundled sample": _sample,
    "a generated directory": lambda: make_directory(40, users_per_group=7, disabled_every=4, without_extensions_every=5),
    "attribute names in other cases": lambda: _mutated(lambda d: d["Users"][0]["Extensions"].update(
        {"aws:identitystore:enterprise": {"Organization": "IRET", "DEPARTMENT": "x"}})),
    "another extension beside": lambda: _mutated(lambda d: d["Users"][1]["Extensions"].update({"aws:identitystore:other": {"a": 1}})),
    "an extension key in another case": lambda: _mutated(lambda d: d["Users"][7].update(
        Extensions={"aws:identitystore:Enterprise": {"organization": "globex"}})),
    "no UserStatus": lambda: _mutated(lambda d: d["Users"][2].pop("UserStatus")),
    "an unknown UserStatus": lambda: _mutated(lambda d: d["Users"][2].update(UserStatus="SUSPENDED")),
    "a UserName that is a number": lambda: _mutated(lambda d: d["Users"][3].update(UserName=7)),
    "no UserId": lambda: _mutated(lambda d: d["Users"][3].pop("UserId")),
    "a null record": lambda: _mutated(lambda d: d["Users"].append(None)),
    "a UserId twice": lambda: _mutated(lambda d: d["Users"].append(copy.deepcopy(d["Users"][0]))),
    "a group without GroupId": lambda: _mutated(lambda d: d["Groups"][0].pop("GroupId")),
    "a record of another store": lambda: _mutated(lambda d: d["Users"][0].update(IdentityStoreId="d-0000000000")),
}


def _projection(directory) -> dict:
    return {
        "store": directory.identity_store_id,
        "users": sorted((u.user_id, u.user_name, u.enabled, u.display_name, u.primary_email, sorted(u.enterprise().items()))
                        for u in directory.users),
        "groups": sorted((g.group_id, g.display_name) for g in directory.groups),
        "members": {g: sorted(m) for g, m in directory.members.items()},
    }


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_a_document_means_the_same_directory_from_a_file_and_through_the_endpoint(identitystore_endpoint, tmp_path, case):
    """One parser for both: either the file source reports the document (refused, or a record that
    holds its person) and the endpoint refuses to serve it, since the Identity Store never returns
    it; or both give the same directory, the endpoint's answers checked against botocore's model."""
    document = CORPUS[case]()
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(document))
    settings = config.validate({"source": {"type": "file", "path": str(path)}, "run_as": {"expression": "${path:userName}"}}).source
    try:
        from_file = FileSource.from_settings(settings).fetch().directory
    except SourceError as exc:
        from_file, refused = None, str(exc)
    if from_file is None or from_file.problems:
        with pytest.raises(ValueError) as info:
            identitystore_endpoint.seed(document)
        if from_file is not None:
            assert all(p.reason in str(info.value) for p in from_file.problems)
        else:
            assert refused.split(": ", 1)[1] in str(info.value)
        return
    store = identitystore_endpoint.seed(document)
    client = boto3.client("identitystore", endpoint_url=identitystore_endpoint.url, region_name=REGION,
                          config=Config(retries={"max_attempts": 1}))
    through = IdentityStoreSource(client, store).fetch().directory
    assert _projection(through) == _projection(from_file)
