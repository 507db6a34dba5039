"""The deployment templates read as data: the copies that must agree do, the parameters accept exactly
what they should, and the security properties the trust model rests on are in place. No AWS call, no
process (lint, deployment and the document's script run in the other modules here)."""

from __future__ import annotations

import re

import botocore.session
import pytest

from runas_agent.core.expression import PATHS
from tests.deploy.templates import TEMPLATES, actions, ssm_document, template, template_text


def resource(name: str, logical_id: str) -> dict:
    return template(name)["Resources"][logical_id]


def statements(policy: dict) -> list[dict]:
    return policy["Statement"]


def test_the_command_documents_in_the_templates_are_the_files():
    assert resource("member.yaml", "SyncDocument")["Properties"]["Content"] == ssm_document("runas-agent-sync.yaml")
    assert resource("publisher.yaml", "PublishDocument")["Properties"]["Content"] == ssm_document("runas-agent-publish.yaml")


DELAY_OK = ["0", "1", "9", "30", "99", "100", "599", "899", "900"]
DELAY_BAD = ["", "901", "999", "1000", "-1", "030", "00", "1.5", "1e3", " 5", "5 ", "5\nreboot", "1; reboot", "$(id)",
             "`id`", "{{x}}"]


@pytest.mark.parametrize("value", DELAY_OK)
def test_max_delay_accepts_whole_seconds_up_to_900(value):
    pattern = ssm_document("runas-agent-sync.yaml")["parameters"]["MaxDelaySeconds"]["allowedPattern"]
    assert re.search(pattern, value)


@pytest.mark.parametrize("value", DELAY_BAD)
def test_max_delay_refuses_anything_else_and_nothing_reaches_the_shell(value):
    """SSM pastes the value into the script only after it matched allowedPattern."""
    pattern = ssm_document("runas-agent-sync.yaml")["parameters"]["MaxDelaySeconds"]["allowedPattern"]
    assert not re.search(pattern, value)


def test_a_trailing_newline_that_a_pattern_lets_through_only_ends_the_assignment():
    """`$` also matches before a final newline (Python's and Java's regexes): such a value passes, and
    is pasted into a line of its own, an assignment, so it only adds an empty line."""
    document = ssm_document("runas-agent-sync.yaml")
    pattern = document["parameters"]["MaxDelaySeconds"]["allowedPattern"]
    assert re.search(pattern, "5\n")
    (line,) = [l for l in document["mainSteps"][0]["inputs"]["runCommand"] if "{{ MaxDelaySeconds }}" in l]
    assert line.replace("{{ MaxDelaySeconds }}", "5\n").splitlines() == ["max_delay=5"]


@pytest.mark.parametrize("value,ok", [("1", True), ("120", True), ("900", True), ("0", False), ("901", False),
                                      ("12 ; id", False), ("", False)])
def test_wait_seconds_pattern(value, ok):
    pattern = ssm_document("runas-agent-sync.yaml")["parameters"]["WaitSeconds"]["allowedPattern"]
    assert bool(re.search(pattern, value)) is ok


def test_every_copy_of_the_delay_bound_is_the_same():
    pattern = ssm_document("runas-agent-sync.yaml")["parameters"]["MaxDelaySeconds"]["allowedPattern"]
    member = template("member.yaml")
    automation = member["Resources"]["FleetSyncAutomation"]["Properties"]["Content"]
    assert member["Parameters"]["MaxDelaySeconds"]["AllowedPattern"] == pattern
    assert automation["parameters"]["MaxDelaySeconds"]["allowedPattern"] == pattern
    for name in ("MaxConcurrency", "MaxErrors"):
        assert automation["parameters"][name]["allowedPattern"] == member["Parameters"][name]["AllowedPattern"]


def test_the_script_only_uses_validated_parameters():
    lines = ssm_document("runas-agent-sync.yaml")["mainSteps"][0]["inputs"]["runCommand"]
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", "\n".join(lines)))
    parameters = ssm_document("runas-agent-sync.yaml")["parameters"]
    assert used == set(parameters)
    assert all(p.get("allowedPattern") for p in parameters.values())
    # each is pasted once, into a plain assignment, and used quoted afterwards
    for name in used:
        assert [line for line in lines if "{{ " + name + " }}" in line] == [f"{line.split('=')[0]}={{{{ {name} }}}}"
                                                                         for line in lines if "{{ " + name + " }}" in line]


@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_run_as_parameter_takes_every_path_the_agent_evaluates(path):
    pattern = template("identity-center.yaml")["Parameters"]["RunAsExpression"]["AllowedPattern"]
    assert re.search(pattern, "${path:" + path + "}")


@pytest.mark.parametrize("value", ["userName", "${path:userName}x", "${path:userName}${path:title}", "${path:}",
                                   "${path:user Name}", "x${path:userName}"])
def test_the_run_as_parameter_refuses_what_is_not_one_path(value):
    pattern = template("identity-center.yaml")["Parameters"]["RunAsExpression"]["AllowedPattern"]
    assert not re.search(pattern, value)


def test_an_eventbridge_run_command_target_has_no_rate_control():
    """Why the fleet is synced through Automation: the Run Command target of a rule has only
    RunCommandTargets, while aws:runCommand takes MaxConcurrency and MaxErrors."""
    model = botocore.session.get_session().get_service_model("events")
    assert list(model.shape_for("RunCommandParameters").members) == ["RunCommandTargets"]
    send = botocore.session.get_session().get_service_model("ssm").operation_model("SendCommand").input_shape.members
    assert {"Targets", "MaxConcurrency", "MaxErrors"} <= set(send)


def test_the_fleet_sync_is_rate_controlled_and_targets_managed_instances_by_tag():
    member = template("member.yaml")["Resources"]
    automation = member["FleetSyncAutomation"]["Properties"]["Content"]
    (step,) = automation["mainSteps"]
    assert step["action"] == "aws:runCommand"
    inputs = step["inputs"]
    assert inputs["DocumentName"] == {"Ref": "SyncDocument"}
    assert inputs["Targets"] == [{"Key": "tag:runas-agent", "Values": [{"Ref": "ManagedTagValue"}]}]
    assert inputs["MaxConcurrency"] == "{{ MaxConcurrency }}" and inputs["MaxErrors"] == "{{ MaxErrors }}"
    assert inputs["Parameters"] == {"MaxDelaySeconds": ["{{ MaxDelaySeconds }}"]}
    (target,) = member["SnapshotWrittenRule"]["Properties"]["Targets"]
    assert ":automation-definition/${FleetSyncAutomation}:$DEFAULT" in target["Arn"]["Fn::Sub"]
    assert set(re.findall(r'"(\w+)": \[', target["Input"]["Fn::Sub"])) == set(automation["parameters"])


def test_directory_changes_are_matched_the_same_way_in_both_accounts():
    forwarded = resource("identity-center.yaml", "ForwardChangesRule")["Properties"]["EventPattern"]
    local = resource("publisher.yaml", "DirectoryChangedRule")["Properties"]["EventPattern"]
    assert forwarded == local
    sources = set(local["detail"]["eventSource"])
    assert sources == {"identitystore.amazonaws.com", "identitystore-scim.amazonaws.com", "sso-directory.amazonaws.com",
                       "sso.amazonaws.com"}
    # the publisher's own reads must never trigger it
    assert not [name for name in local["detail"]["eventName"] if name.startswith(("List", "Describe", "Get"))]
    assert "source" not in local  # SCIM's `source` value is not documented


def test_the_snapshot_event_is_matched_the_same_way_in_both_accounts():
    fanout = template("snapshot-fanout.yaml")["Resources"]["Fn::ForEach::Forward"][2]["Forward${AccountId}"]
    sent = fanout["Properties"]["EventPattern"]
    received = dict(resource("member.yaml", "SnapshotWrittenRule")["Properties"]["EventPattern"])
    assert received.pop("account") == [{"Ref": "PublisherAccountId"}]
    assert sent == received


def test_session_preferences_turn_run_as_on_and_log_where_tagging_looks():
    document = resource("member.yaml", "SessionPreferences")["Properties"]
    assert document["Name"] == "SSM-SessionManagerRunShell" and document["DocumentType"] == "Session"
    assert document["UpdateMethod"] == "NewVersion"
    inputs = document["Content"]["inputs"]
    assert inputs["runAsEnabled"] is True
    assert inputs["runAsDefaultUser"] == {"Ref": "RunAsDefaultUser"}
    assert inputs["s3BucketName"] == {"Ref": "SessionLogsBucket"}
    assert inputs["s3KeyPrefix"] == {"Fn::If": ["SessionLogs", {"Ref": "SessionLogsPrefix"}, ""]}
    (tagging,) = resource("member.yaml", "SessionLogsTaggingPolicy")["Properties"]["PolicyDocument"]["Statement"]
    assert tagging["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${SessionLogsBucket}/${SessionLogsPrefix}/*"}


@pytest.mark.parametrize("name", TEMPLATES)
def test_nothing_runs_elevated(name):
    assert "runAsElevated" not in template_text(name).replace("(runAsElevated)", "")


def test_the_permission_set_takes_the_run_as_user_from_the_tag_and_no_other_document():
    policy = resource("identity-center.yaml", "RunAsPermissionSet")["Properties"]["InlinePolicy"]
    by_sid = {s["Sid"]: s for s in statements(policy)}
    assert by_sid["NoSessionWithoutRunAsTag"]["Effect"] == "Deny"
    assert by_sid["NoSessionWithoutRunAsTag"]["Condition"] == {"Null": {"aws:PrincipalTag/SSMSessionRunAs": "true"}}
    shells = by_sid["StartShellWithTheDefaultDocument"]["Resource"]["Fn::If"]
    assert shells[0] == "PortForwarding"
    assert [r["Fn::Sub"].split("/")[-1] for r in shells[2]] == ["SSM-SessionManagerRunShell"]
    assert "AWS-StartSSHSession" not in str(policy)
    assert by_sid["NoOtherSessionDocuments"]["Effect"] == "Deny"
    for sid in ("StartShellOnManagedInstances", "StartShellWithTheDefaultDocument"):
        assert by_sid[sid]["Condition"]["BoolIfExists"] == {"ssm:SessionDocumentAccessCheck": "true"}
    assert by_sid["StartShellOnManagedInstances"]["Condition"]["StringEquals"] == {
        "ssm:resourceTag/runas-agent": {"Ref": "ManagedTagValue"}}
    abac = resource("identity-center.yaml", "RunAsAttribute")["Properties"]["AccessControlAttributes"]
    assert abac == [{"Key": "SSMSessionRunAs", "Value": {"Source": [{"Ref": "RunAsExpression"}]}}]


def test_the_snapshot_bucket_is_versioned_encrypted_private_and_announces_writes():
    bucket = resource("publisher.yaml", "SnapshotBucket")["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": ["BucketKey", "Arn"]}}
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert bucket["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}


def test_only_the_publisher_writes_and_the_organization_reads_over_tls():
    policy = resource("publisher.yaml", "SnapshotBucketPolicy")["Properties"]["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in statements(policy)}
    assert by_sid["TlsOnly"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert by_sid["OrganizationReadsTheSnapshot"]["Action"] == "s3:GetObject"
    assert by_sid["OrganizationReadsTheSnapshot"]["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}}}
    assert by_sid["OnlyThePublisherWrites"]["Effect"] == "Deny"
    assert by_sid["OnlyThePublisherWrites"]["Condition"] == {
        "ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["PublisherRole", "Arn"]}}}
    assert actions(statements(policy)) == {"s3:GetObject"}


def test_the_signing_key_signs_digests_for_the_publisher_only():
    key = resource("publisher.yaml", "SigningKey")["Properties"]
    assert (key["KeySpec"], key["KeyUsage"]) == ("RSA_3072", "SIGN_VERIFY")
    by_sid = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    assert by_sid["PublisherSigns"]["Condition"] == {"StringEquals": {
        "kms:SigningAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256", "kms:MessageType": "DIGEST"}}
    signers = [s for s in key["KeyPolicy"]["Statement"] if "kms:Sign" in str(s["Action"]) or s["Action"] == "kms:*"]
    assert signers == [by_sid["PublisherSigns"]]
    assert not [s for s in key["KeyPolicy"]["Statement"] if "*" in str(s["Principal"])]
    member = template_text("member.yaml")
    assert "kms:Verify" not in member and "kms:GetPublicKey" not in member


def test_the_bucket_key_decrypts_for_the_organization_through_s3_only():
    key = resource("publisher.yaml", "BucketKey")["Properties"]
    assert key["EnableKeyRotation"] is True
    by_sid = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}
    org = by_sid["OrganizationDecryptsThroughS3"]
    assert org["Action"] == "kms:Decrypt"
    assert org["Condition"]["StringEquals"]["aws:PrincipalOrgID"] == {"Ref": "OrganizationId"}
    assert org["Condition"]["StringEquals"]["kms:ViaService"] == {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"}
    assert "kms:EncryptionContext:aws:s3:arn" in org["Condition"]["StringLike"]
