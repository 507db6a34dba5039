"""The templates deployed into the local endpoint's moto through real boto3 CloudFormation calls. moto
5.2.1 creates the IAM roles and policies, KMS keys and aliases, the S3 bucket (with its default
encryption), the SSM documents, event buses and rules; it skips AWS::S3::BucketPolicy and the
AWS::SSO types (warning "No Moto CloudFormation support"), and cannot expand
AWS::LanguageExtensions (snapshot-fanout.yaml). What it created is read back through the APIs, and
the deployed rules' patterns are run against the events AWS sends (TestEventPattern)."""

from __future__ import annotations

import json

import pytest

from runas_agent.doctor.check import OK
from tests.deploy import aws
from tests.deploy.templates import ssm_document, template
from tests.integration.test_doctor_links import world  # noqa: F401  (the doctor's staged host)

pytest_plugins = ["tests.endpoint.fixtures"]
pytestmark = pytest.mark.filterwarnings(aws.SKIPPED_TYPES_WARNING)

SNAPSHOT_BUCKET = f"runas-agent-snapshots-{aws.PUBLISHER_ACCOUNT}-eu-west-1"
SNAPSHOT_KEY = "runas/directory.json"
KEY_ARN = f"arn:aws:kms:eu-west-1:{aws.PUBLISHER_ACCOUNT}:key/0b1c2d3e-1111-2222-3333-444455556666"
MEMBER = {"PublisherAccountId": aws.PUBLISHER_ACCOUNT, "SnapshotBucket": SNAPSHOT_BUCKET, "SnapshotRegion": "eu-west-1",
          "SnapshotKmsKeyArn": KEY_ARN, "RunAsDefaultUser": "runas-guest", "SessionLogsBucket": "session-logs",
          "SessionLogsPrefix": "ssm", "SessionLogsTagging": "true"}
PUBLISHER = {"IdentityStoreId": aws.STORE, "OrganizationId": aws.ORGANIZATION, "ReadLiveExpression": "true"}


def deploy(session, endpoint, name: str, template_name: str, parameters: dict) -> aws.Stack:
    return aws.deploy(session, endpoint.url, name, template_name, parameters)


def rule_pattern(events, name: str, bus: str = "default") -> str:
    return events.describe_rule(Name=name, EventBusName=bus)["EventPattern"]


# ---- publisher.yaml -------------------------------------------------------------------------------

def test_publisher_stack(session, identitystore_endpoint):
    endpoint = identitystore_endpoint
    stack = deploy(session, endpoint, "runas-publisher", "publisher.yaml", PUBLISHER)
    created = set(stack.physical)
    assert created >= {"PublisherRole", "PublisherPolicy", "PublisherInstanceProfile", "SigningKey", "BucketKey",
                       "SnapshotBucket", "PublishDocument", "RunPublisherRole", "DirectoryChangedRule", "PublishScheduleRule"}
    assert "SnapshotBucketPolicy" not in created  # moto skips bucket policies
    assert stack.outputs["SnapshotUrl"] == "s3://runas-agent-snapshots-123456789012-eu-west-1/runas/directory.json"

    kms = session.client("kms", endpoint_url=endpoint.url)
    role_arn = session.client("iam", endpoint_url=endpoint.url).get_role(RoleName=stack.physical["PublisherRole"])["Role"]["Arn"]
    signing = aws.policy_document(kms.get_key_policy(KeyId=stack.physical["SigningKey"], PolicyName="default")["Policy"])
    signers = [s for s in signing["Statement"] if "kms:Sign" in json.dumps(s["Action"])]
    assert [s["Principal"] for s in signers] == [{"AWS": role_arn}]
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert aliases["alias/runas-agent-snapshot-signing"] == stack.physical["SigningKey"]

    s3 = session.client("s3", endpoint_url=endpoint.url)
    (rule,) = s3.get_bucket_encryption(Bucket=stack.physical["SnapshotBucket"])["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"].endswith(stack.physical["BucketKey"])

    ssm = session.client("ssm", endpoint_url=endpoint.url)
    document = ssm.get_document(Name="runas-agent-Publish", DocumentFormat="JSON")
    assert document["DocumentType"] == "Command"
    assert json.loads(document["Content"]) == ssm_document("runas-agent-publish.yaml")

    events = session.client("events", endpoint_url=endpoint.url)
    for rule_name in (stack.physical["DirectoryChangedRule"], stack.physical["PublishScheduleRule"]):
        (target,) = events.list_targets_by_rule(Rule=rule_name)["Targets"]
        assert target["Arn"] == "arn:aws:ssm:eu-west-1:123456789012:document/runas-agent-Publish"
        assert target["RunCommandParameters"] == {"RunCommandTargets": [{"Key": "tag:runas-agent", "Values": ["publisher"]}]}
        assert target["RoleArn"].split("/")[-1] == stack.physical["RunPublisherRole"]
    assert events.describe_rule(Name=stack.physical["PublishScheduleRule"])["ScheduleExpression"] == "rate(15 minutes)"


WRITES = [("identitystore.amazonaws.com", "CreateUser"), ("identitystore.amazonaws.com", "UpdateUser"),
          ("identitystore.amazonaws.com", "DeleteUser"), ("identitystore.amazonaws.com", "CreateGroupMembership"),
          ("identitystore.amazonaws.com", "DeleteGroupMembership"), ("identitystore.amazonaws.com", "UpdateGroup"),
          ("identitystore-scim.amazonaws.com", "CreateUser"), ("identitystore-scim.amazonaws.com", "PatchUser"),
          ("identitystore-scim.amazonaws.com", "PutUser"), ("identitystore-scim.amazonaws.com", "DeleteUser"),
          ("identitystore-scim.amazonaws.com", "PatchGroup"), ("identitystore-scim.amazonaws.com", "DeleteGroup"),
          ("sso-directory.amazonaws.com", "AddMemberToGroup"), ("sso-directory.amazonaws.com", "DisableUser"),
          ("sso-directory.amazonaws.com", "UpdateUser"),
          ("sso.amazonaws.com", "UpdateInstanceAccessControlAttributeConfiguration")]
NOT_CHANGES = [("identitystore.amazonaws.com", "ListUsers", True), ("identitystore.amazonaws.com", "IsMemberInGroups", True),
               ("identitystore-scim.amazonaws.com", "ListUsers", True), ("identitystore-scim.amazonaws.com", "GetUser", True),
               ("sso.amazonaws.com", "CreatePermissionSet", False), ("sso.amazonaws.com", "CreateAccountAssignment", False),
               ("iam.amazonaws.com", "CreateUser", False), ("s3.amazonaws.com", "PutObject", False)]


def test_directory_changes_run_the_publisher_and_nothing_else_does(session, identitystore_endpoint):
    stack = deploy(session, identitystore_endpoint, "runas-publisher", "publisher.yaml", PUBLISHER)
    events = session.client("events", endpoint_url=identitystore_endpoint.url)
    pattern = rule_pattern(events, stack.physical["DirectoryChangedRule"])
    missed = [w for w in WRITES if not aws.matches(pattern, aws.cloudtrail_event(*w))]
    assert not missed
    wrong = [n for n in NOT_CHANGES if aws.matches(pattern, aws.cloudtrail_event(*n))]
    assert not wrong


def test_forwarded_changes_arrive_on_a_bus_of_their_own(session, identitystore_endpoint):
    stack = deploy(session, identitystore_endpoint, "runas-publisher", "publisher.yaml",
                   dict(PUBLISHER, IdentityCenterAccountId="210987654321", ReadLiveExpression="false"))
    events = session.client("events", endpoint_url=identitystore_endpoint.url)
    assert events.list_rules(EventBusName="runas-agent-directory-changes")["Rules"][0]["Name"] == stack.physical["DirectoryChangedRule"]
    iam = session.client("iam", endpoint_url=identitystore_endpoint.url)
    policy = aws.policy_document(iam.get_role_policy(RoleName=stack.physical["PublisherRole"],
                                                     PolicyName="runas-agent-publisher")["PolicyDocument"])
    (read,) = [s for s in policy["Statement"] if s["Sid"] == "ReadIdentityStore"]
    assert read["Resource"][0] == f"arn:aws:identitystore::210987654321:identitystore/{aws.STORE}"
    assert iam.list_role_policies(RoleName=stack.physical["PublisherRole"])["PolicyNames"] == ["runas-agent-publisher"]


# ---- member.yaml ----------------------------------------------------------------------------------

def test_member_stack(session, identitystore_endpoint):
    endpoint = identitystore_endpoint
    stack = deploy(session, endpoint, "runas-member", "member.yaml", MEMBER)
    assert set(stack.physical) >= {"InstancePolicy", "SessionLogsPolicy", "InstanceRole", "InstanceProfile",
                                   "SessionPreferences", "SyncDocument", "FleetSyncAutomation", "FleetSyncRole",
                                   "StartFleetSyncRole", "SnapshotWrittenRule", "SessionLogsTaggingPolicy"}
    ssm = session.client("ssm", endpoint_url=endpoint.url)
    sync = ssm.get_document(Name="runas-agent-Sync", DocumentFormat="JSON")
    assert (sync["DocumentType"], json.loads(sync["Content"])) == ("Command", ssm_document("runas-agent-sync.yaml"))
    preferences = json.loads(ssm.get_document(Name="SSM-SessionManagerRunShell", DocumentFormat="JSON")["Content"])
    assert preferences["sessionType"] == "Standard_Stream"
    assert {k: preferences["inputs"][k] for k in ("runAsEnabled", "runAsDefaultUser", "s3BucketName", "s3KeyPrefix")} == {
        "runAsEnabled": True, "runAsDefaultUser": "runas-guest", "s3BucketName": "session-logs", "s3KeyPrefix": "ssm"}
    automation = json.loads(ssm.get_document(Name="runas-agent-FleetSync", DocumentFormat="JSON")["Content"])
    (step,) = automation["mainSteps"]
    assert step["inputs"]["DocumentName"] == "runas-agent-Sync"
    assert step["inputs"]["Targets"] == [{"Key": "tag:runas-agent", "Values": ["managed"]}]

    events = session.client("events", endpoint_url=endpoint.url)
    assert events.describe_event_bus(Name="runas-agent-snapshots")["Arn"].endswith(":event-bus/runas-agent-snapshots")
    rule = stack.physical["SnapshotWrittenRule"]
    (target,) = events.list_targets_by_rule(Rule=rule, EventBusName="runas-agent-snapshots")["Targets"]
    assert target["Arn"] == "arn:aws:ssm:eu-west-1:123456789012:automation-definition/runas-agent-FleetSync:$DEFAULT"
    iam = session.client("iam", endpoint_url=endpoint.url)
    fleet_role = iam.get_role(RoleName=stack.physical["FleetSyncRole"])["Role"]["Arn"]
    assert json.loads(target["Input"]) == {"AutomationAssumeRole": [fleet_role], "MaxConcurrency": ["50%"],
                                           "MaxErrors": ["10%"], "MaxDelaySeconds": ["10"]}
    start = iam.get_role_policy(RoleName=stack.physical["StartFleetSyncRole"], PolicyName="start-runas-agent-fleet-sync")
    passes = [s for s in aws.policy_document(start["PolicyDocument"])["Statement"] if s["Action"] == "iam:PassRole"]
    assert [s["Resource"] for s in passes] == [fleet_role]


def test_only_the_publishers_snapshot_write_syncs_the_fleet(session, identitystore_endpoint):
    stack = deploy(session, identitystore_endpoint, "runas-member", "member.yaml", MEMBER)
    events = session.client("events", endpoint_url=identitystore_endpoint.url)
    pattern = rule_pattern(events, stack.physical["SnapshotWrittenRule"], "runas-agent-snapshots")
    assert aws.matches(pattern, aws.object_created(SNAPSHOT_BUCKET, SNAPSHOT_KEY))
    for other in (aws.object_created(SNAPSHOT_BUCKET, "runas/directory.json.tmp"),
                  aws.object_created(SNAPSHOT_BUCKET, "runas/other.json"),
                  aws.object_created("someone-elses-bucket", SNAPSHOT_KEY),
                  aws.object_created(SNAPSHOT_BUCKET, SNAPSHOT_KEY, account="999988887777")):
        assert not aws.matches(pattern, other)


def test_the_fanout_sends_what_the_member_rule_matches(session, identitystore_endpoint):
    """moto cannot expand snapshot-fanout.yaml's Fn::ForEach: its pattern, with this stack's values
    substituted the way CloudFormation would, is run against the same events."""
    events = session.client("events", endpoint_url=identitystore_endpoint.url)
    fanout = template("snapshot-fanout.yaml")["Resources"]["Fn::ForEach::Forward"][2]["Forward${AccountId}"]
    pattern = json.dumps(fanout["Properties"]["EventPattern"]).replace(
        '{"Ref": "SnapshotBucket"}', json.dumps(SNAPSHOT_BUCKET)).replace('{"Ref": "SnapshotKey"}', json.dumps(SNAPSHOT_KEY))
    assert "Ref" not in pattern
    assert aws.matches(pattern, aws.object_created(SNAPSHOT_BUCKET, SNAPSHOT_KEY))
    assert not aws.matches(pattern, aws.object_created(SNAPSHOT_BUCKET, "runas/other.json"))


def test_member_stack_for_existing_instance_roles_and_preferences(session, identitystore_endpoint):
    stack = deploy(session, identitystore_endpoint, "runas-member", "member.yaml",
                   dict(MEMBER, CreateInstanceRole="false", CreatePreferences="false", SessionLogsBucket="",
                        SessionLogsTagging="false"))
    assert not {"InstanceRole", "InstanceProfile", "SessionPreferences", "SessionLogsPolicy",
                "SessionLogsTaggingPolicy"} & set(stack.physical)
    ssm = session.client("ssm", endpoint_url=identitystore_endpoint.url)
    with pytest.raises(ssm.exceptions.InvalidDocument):
        ssm.get_document(Name="SSM-SessionManagerRunShell")


# ---- identity-center.yaml -------------------------------------------------------------------------

def test_identity_center_stack_forwards_changes_to_the_publisher_account(session, identitystore_endpoint):
    stack = deploy(session, identitystore_endpoint, "runas-identity-center", "identity-center.yaml",
                   {"InstanceArn": "arn:aws:sso:::instance/ssoins-1234567890abcdef", "PublisherAccountId": aws.PUBLISHER_ACCOUNT})
    assert {"RunAsAttribute", "RunAsPermissionSet"}.isdisjoint(stack.physical)  # moto has no AWS::SSO
    events = session.client("events", endpoint_url=identitystore_endpoint.url)
    (target,) = events.list_targets_by_rule(Rule=stack.physical["ForwardChangesRule"])["Targets"]
    assert target["Arn"] == f"arn:aws:events:eu-west-1:{aws.PUBLISHER_ACCOUNT}:event-bus/runas-agent-directory-changes"
    pattern = rule_pattern(events, stack.physical["ForwardChangesRule"])
    assert all(aws.matches(pattern, aws.cloudtrail_event(*w)) for w in WRITES)

    alone = deploy(session, identitystore_endpoint, "runas-identity-center-alone", "identity-center.yaml",
                   {"InstanceArn": "arn:aws:sso:::instance/ssoins-1234567890abcdef"})
    assert "ForwardChangesRule" not in alone.physical


# ---- what the agent makes of it -------------------------------------------------------------------

def test_doctor_accepts_the_deployed_session_preferences(world, session, identitystore_endpoint):
    """`runas-agent doctor` reads the SSM-SessionManagerRunShell that member.yaml deployed, as it reads
    the one the console saves (test_doctor_links' staged host, whose accounts include ops)."""
    deploy(session, identitystore_endpoint, "runas-member", "member.yaml", dict(MEMBER, RunAsDefaultUser="ops"))
    check = world.run()["session-preferences"]
    assert check.status == OK, check.summary
    assert check.summary.endswith("Run As on; the default user ops exists on this host")
