"""The IAM policies grant exactly the calls runas-agent makes. The agent's own code runs against the
local endpoint with a recorder on its boto3 session (every call, with its parameters); the policies
are read back from what the templates deployed into moto (CloudFormation's parameters, conditions and
intrinsic functions resolved) and from docs/deploy-aws.md. A call the agent starts making, or a
grant nobody uses, fails here."""

from __future__ import annotations

import fnmatch
import time
from types import SimpleNamespace

import boto3
import pytest

from runas_agent import config
from runas_agent.identitycenter import fetch_abac
from runas_agent.sessions.model import Session
from runas_agent.sessions.s3tags import S3Tagger
from runas_agent.sources.identitystore import IdentityStoreSource
from runas_agent.sources.s3 import S3Source, publish
from runas_agent.sources.signature import sign_with_kms, snapshot
from tests import signing
from tests.deploy import aws
from tests.deploy.templates import CallRecorder, actions, doc_policies, iam_action
from tests.endpoint import ssoadmin_abac
from tests.endpoint.directories import make_directory

pytest_plugins = ["tests.endpoint.fixtures"]
pytestmark = pytest.mark.filterwarnings(aws.SKIPPED_TYPES_WARNING)

REGION = "eu-west-1"
SESSION_LOGS = "session-logs"
#: What `runas-agent publish` is specified to call beyond today's `export --output s3://
#: --signing-key` path (recorded below: kms:GetPublicKey, kms:Sign, s3:PutObject): HeadObject to
#: compare the published digest before writing. With SSE-KMS S3 calls kms:GenerateDataKey (PutObject)
#: and kms:Decrypt on the caller's behalf.
PUBLISH_MODE = {"s3:GetObject", "kms:GenerateDataKey", "kms:Decrypt"}
#: S3 calls kms:Decrypt on the reader's behalf for an SSE-KMS object: the only grant on an instance
#: that is not one of runas-agent's own calls.
S3_DECRYPT = {"kms:Decrypt"}


def recorded_session() -> tuple[boto3.session.Session, CallRecorder]:
    session = boto3.session.Session(region_name=REGION)
    return session, CallRecorder(session)


def managed_policy(iam, arn: str) -> dict:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return aws.policy_document(iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"])


def s3_resource(call: tuple[str, str, dict]) -> str:
    params = call[2]
    return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"


def granted(statements: list[dict], action: str, resource: str) -> list[dict]:
    return [s for s in statements if s["Effect"] == "Allow" and action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
            and any(fnmatch.fnmatchcase(resource, r) for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]))]


@pytest.fixture
def fleet(session, identitystore_endpoint):
    """publisher.yaml and member.yaml deployed into one account (moto has one), the member reading
    the publisher's bucket and key; a directory on the Identity Store endpoint."""
    url = identitystore_endpoint.url
    publisher = aws.deploy(session, url, "runas-publisher", "publisher.yaml",
                           {"IdentityStoreId": aws.STORE, "OrganizationId": aws.ORGANIZATION, "ReadLiveExpression": "true"})
    member = aws.deploy(session, url, "runas-member", "member.yaml", {
        "PublisherAccountId": aws.PUBLISHER_ACCOUNT, "SnapshotBucket": publisher.outputs["SnapshotBucket"],
        "SnapshotRegion": REGION, "SnapshotKmsKeyArn": publisher.outputs["BucketKeyArn"], "RunAsDefaultUser": "runas-guest",
        "SessionLogsBucket": SESSION_LOGS, "SessionLogsPrefix": "ssm", "SessionLogsTagging": "true"})
    identitystore_endpoint.seed(make_directory(30, users_per_group=10))
    ssoadmin_abac.set_attributes(REGION, {"SSMSessionRunAs": "${path:userName}"})
    return SimpleNamespace(url=url, publisher=publisher, member=member, iam=session.client("iam", endpoint_url=url),
                           s3=session.client("s3", endpoint_url=url), snapshot_url=publisher.outputs["SnapshotUrl"])


def source_config(**source) -> SimpleNamespace:
    return config.validate({"source": dict(source, region=REGION), "run_as": {"expression": "${path:userName}"}})


def test_an_instance_may_make_exactly_the_calls_runas_agent_makes(fleet):
    publish(fleet.s3, fleet.snapshot_url, signing.signed_bytes(make_directory(3)))
    session, calls = recorded_session()
    cfg = source_config(type="s3", url=fleet.snapshot_url, endpoint_url=fleet.url, bucket_owner=fleet.publisher.outputs["SnapshotBucketOwner"],
                        signing_public_key=signing.public_pem())
    source = S3Source.from_settings(cfg.source, session=session)
    assert source.fetch().stats["not_modified"] is False
    assert source.fetch().stats["not_modified"] is True  # the conditional read: 304

    fleet.s3.create_bucket(Bucket=SESSION_LOGS, CreateBucketConfiguration={"LocationConstraint": REGION})
    session_id = "alice@example.com-0a1b2c3d4e5f67890"
    fleet.s3.put_object(Bucket=SESSION_LOGS, Key=f"ssm/{session_id}.log", Body=b"transcript")
    settings = SimpleNamespace(bucket=SESSION_LOGS, prefix="ssm", region=REGION, endpoint_url=fleet.url, max_wait_seconds=30)
    tagger = S3Tagger(settings, client_factory=lambda: session.client("s3", endpoint_url=fleet.url), first_pause=0.1)
    tagger.submit(Session(session_id=session_id, identity_user="alice@example.com", account="alice"))
    deadline = time.monotonic() + 20
    while session_id not in tagger.results and time.monotonic() < deadline:
        time.sleep(0.05)
    tagger.stop()
    assert tagger.results[session_id] == "tagged"

    statements = []
    for logical_id in ("InstancePolicy", "SessionLogsTaggingPolicy"):
        statements += managed_policy(fleet.iam, fleet.member.physical[logical_id])["Statement"]
    assert actions(statements) == calls.actions() | S3_DECRYPT
    for call in calls.calls:
        assert granted(statements, iam_action(call[0], call[1]), s3_resource(call)), call
    (decrypt,) = [s for s in statements if s["Action"] == "kms:Decrypt"]
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}}
    assert decrypt["Resource"] == fleet.publisher.outputs["BucketKeyArn"]
    # the snapshot and nothing else of the bucket
    (read,) = [s for s in statements if s["Action"] == "s3:GetObject"]
    assert read["Resource"] == f"arn:aws:s3:::{fleet.publisher.outputs['SnapshotBucket']}/runas/directory.json"


def test_the_publisher_may_make_exactly_the_calls_runas_agent_makes(fleet, identitystore_endpoint):
    session, calls = recorded_session()
    read = source_config(type="identitystore", identity_store_id=aws.STORE, endpoint_url=fleet.url)
    fetched = IdentityStoreSource.from_settings(read.source, session=session).fetch()
    assert len(fetched.directory.users) == 30
    # moto's KMS does not sign digests as KMS does: the endpoint's stand-in key signs (tests/endpoint/kms.py)
    key = identitystore_endpoint.signing_key("alias/runas-agent-publisher-test")
    kms = session.client("kms", endpoint_url=fleet.url)
    data, public_key = snapshot(fetched.directory, signing.now(), lambda document: sign_with_kms(document, kms, key))
    assert public_key.bits == 3072
    publish(session.client("s3", endpoint_url=fleet.url), fleet.snapshot_url, data)

    live_session, live_calls = recorded_session()
    discover = source_config(type="identitystore", endpoint_url=fleet.url)
    assert fetch_abac(discover.source, live_session.client("sso-admin", endpoint_url=fleet.url)).attributes == {
        "SSMSessionRunAs": ("${path:userName}",)}

    role = fleet.publisher.physical["PublisherRole"]
    names = fleet.iam.list_role_policies(RoleName=role)["PolicyNames"]
    assert sorted(names) == ["runas-agent-publisher", "runas-agent-publisher-run-as-expression"]
    policy = aws.policy_document(fleet.iam.get_role_policy(RoleName=role, PolicyName="runas-agent-publisher")["PolicyDocument"])
    live = aws.policy_document(fleet.iam.get_role_policy(
        RoleName=role, PolicyName="runas-agent-publisher-run-as-expression")["PolicyDocument"])
    assert actions(policy["Statement"]) == calls.actions() | PUBLISH_MODE
    assert actions(live["Statement"]) == live_calls.actions() == {
        "sso:ListInstances", "sso:DescribeInstanceAccessControlAttributeConfiguration"}
    (put,) = [c for c in calls.calls if c[1] == "PutObject"]
    assert granted(policy["Statement"], "s3:PutObject", s3_resource(put))
    (sign,) = [s for s in policy["Statement"] if "kms:Sign" in s["Action"]]
    assert sign["Resource"] == fleet.publisher.outputs["SigningKeyArn"]


def test_the_documented_policies_are_the_calls_too(fleet):
    """docs/deploy-aws.md's policy JSON: the single-account instance (it reads the Identity Store
    itself, and the live expression), the fleet instance, the publisher."""
    documented = doc_policies()
    session, calls = recorded_session()
    cfg = source_config(type="identitystore", identity_store_id=aws.STORE, endpoint_url=fleet.url)
    IdentityStoreSource.from_settings(cfg.source, session=session).fetch()
    fetch_abac(cfg.source, session.client("sso-admin", endpoint_url=fleet.url))
    assert actions(documented["instance-single-account"]["Statement"]) == calls.actions()

    member = fleet.member.physical
    role = fleet.publisher.physical["PublisherRole"]
    deployed = {
        "instance": managed_policy(fleet.iam, member["InstancePolicy"]),
        "instance-session-log-tagging": managed_policy(fleet.iam, member["SessionLogsTaggingPolicy"]),
        "ssm-agent-session-logs": managed_policy(fleet.iam, member["SessionLogsPolicy"]),
        "publisher": aws.policy_document(fleet.iam.get_role_policy(
            RoleName=role, PolicyName="runas-agent-publisher")["PolicyDocument"]),
        "publisher-run-as-expression": aws.policy_document(fleet.iam.get_role_policy(
            RoleName=role, PolicyName="runas-agent-publisher-run-as-expression")["PolicyDocument"]),
    }
    assert set(documented) == set(deployed) | {"instance-single-account"}
    for name, policy in deployed.items():
        assert actions(documented[name]["Statement"]) == actions(policy["Statement"]), name
        assert [s["Sid"] for s in documented[name]["Statement"]] == [s["Sid"] for s in policy["Statement"]], name
