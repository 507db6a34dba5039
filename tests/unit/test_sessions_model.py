"""Session attribution, pure part: state files, owner ARNs, identity resolution, records, S3 tags."""

from __future__ import annotations

import json

import pytest

from runas_agent.directory import parse_document
from runas_agent.sessions.model import (MESSAGE_ID_END, MESSAGE_ID_START, Session, StateFileError, StateInfo,
                                        attribute, merge_tags, parse_owner, parse_state, record, resolve, s3_tags,
                                        tag_value, valid_session_id)

SSO = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_VendorAccess_0123456789abcdef/"

DOC = {
    "IdentityStoreId": "d-1234567890",
    "Users": [
        {"UserId": "u-alice", "UserName": "Alice@Example.com", "DisplayName": "Alice Example", "UserStatus": "ENABLED",
         "Emails": [{"Value": "alice@example.com", "Primary": True}],
         "Extensions": {"aws:identitystore:enterprise": {"Organization": "acme"}}},
        {"UserId": "u-bob", "UserName": "bob", "UserStatus": "DISABLED"},
    ],
    "Groups": [{"GroupId": "g1", "DisplayName": "ops"}, {"GroupId": "g2"}],
    "GroupMemberships": [{"GroupId": "g1", "MemberId": {"UserId": "u-alice"}},
                         {"GroupId": "g2", "MemberId": {"UserId": "u-alice"}}],
}


@pytest.mark.parametrize("arn, user, problem", [
    (SSO + "alice@example.com", "alice@example.com", ""),
    ("arn:aws-us-gov:sts::123456789012:assumed-role/AWSReservedSSO_Admin_fedcba9876543210/bob", "bob", ""),
    ("arn:aws:sts::123456789012:assumed-role/DeployRole/ci-run", "", "not an IAM Identity Center"),
    ("arn:aws:iam::123456789012:user/deploy", "", "IAM user"),
    ("", "", "no session owner"),
    ("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_X_0123456789abcdef/a b", "", "not an assumed-role"),
    ("arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_X_0123456789abcdef/a\nb", "", "not an assumed-role"),
])
def test_owner_arns(arn, user, problem):
    owner = parse_owner(arn)
    assert owner.user_name == user
    assert (problem in owner.problem) if problem else owner.problem == ""


def test_permission_set_and_account_from_the_sso_role():
    owner = parse_owner(SSO + "alice")
    assert (owner.permission_set, owner.aws_account) == ("VendorAccess", "123456789012")


@pytest.mark.parametrize("data, message", [
    (b"", "empty"), (b"{", "not JSON"), (b"[]", "not a JSON object"), (b'{"DocumentInformation": 3}', "no DocumentInformation"),
    (b"\xff\xfe", "not JSON"), (b"[" * 100000, "not JSON"), (b" " * (1 << 20 + 1), "larger"),
])
def test_bad_state_files(data, message):
    with pytest.raises(StateFileError, match=message):
        parse_state(data)


def test_state_file_values_are_made_safe():
    info = parse_state(json.dumps({"DocumentInformation": {
        "SessionOwner": SSO + "alice", "RunAsUser": "acme\x1b]0;pwned\x07" + "x" * 1000, "DocumentName": ["x"]}}).encode())
    assert info.session_owner == SSO + "alice"
    assert "\x1b" not in info.run_as_user and "\x07" not in info.run_as_user and len(info.run_as_user) == 256
    assert info.document_name == ""


def test_resolution_case_insensitive_with_groups_and_organization():
    directory = parse_document(DOC)
    identity, reason = resolve(parse_owner(SSO + "alice@example.com"), directory)
    assert reason == "" and identity.user_id == "u-alice" and identity.organization == "acme"
    assert identity.groups == ("g2", "ops") and identity.email == "alice@example.com"
    disabled, _ = resolve(parse_owner(SSO + "bob"), directory)
    assert disabled.enabled is False
    none, reason = resolve(parse_owner(SSO + "mallory"), directory)
    assert none is None and "'mallory' is not in the directory snapshot" in reason
    none, reason = resolve(parse_owner(SSO + "alice"), None)
    assert none is None and "no directory snapshot" in reason


def test_records_have_stable_fields_and_ids():
    session = attribute(Session("alice-0a1b2c3d4e5f67890", started_at=1_800_000_000.0, account="acme",
                                account_uid=1_500_000_001, worker_pid=10, shell_pid=11),
                        StateInfo(session_owner=SSO + "Alice@Example.com", run_as_user="acme"), parse_document(DOC))
    message, message_id, fields = record(session, "start")
    assert message_id == MESSAGE_ID_START and "Alice Example <Alice@Example.com>" in message
    as_dict = dict(fields)
    assert as_dict["RUNAS_IDENTITY_USER"] == "Alice@Example.com" and as_dict["RUNAS_IDENTITY_ID"] == "u-alice"
    assert as_dict["RUNAS_ACCOUNT_UID"] == "1500000001" and as_dict["RUNAS_SHELL_PID"] == "11"
    assert [v for k, v in fields if k == "RUNAS_GROUP"] == ["g2", "ops"]
    assert "RUNAS_DURATION_SEC" not in as_dict and "RUNAS_UNRESOLVED_REASON" not in as_dict
    assert all(k.isupper() and k.startswith("RUNAS_") for k, _ in fields)
    _, end_id, end = record(session, "end", now=1_800_000_090.4)
    assert end_id == MESSAGE_ID_END and dict(end)["RUNAS_DURATION_SEC"] == "90"


def test_session_round_trips_through_the_store_format():
    session = attribute(Session("s-0a1b2c3d4e5f67890", worker_pid=3, worker_started=1.5),
                        StateInfo(session_owner=SSO + "Alice@Example.com"), parse_document(DOC))
    again = Session.from_dict(json.loads(json.dumps(session.to_dict())))
    assert again == session and again.identity.groups == ("g2", "ops")


@pytest.mark.parametrize("name, ok", [("alice@example.com-0a1b2c3d4e5f67890", True), (".tmp", False),
                                      ("a/b", False), ("", False), ("a b", False), ("s-0a1b2c3d4e5f67890\n", False)])
def test_session_ids(name, ok):
    assert valid_session_id(name) is ok


def test_s3_tags_are_legal_and_bounded():
    assert tag_value("IRET, Inc. <x>\n") == "IRET_ Inc. _x_"
    assert len(tag_value("é" * 400)) == 256
    session = attribute(Session("s", account="acme", account_uid=7),
                        StateInfo(session_owner=SSO + "Alice@Example.com"), parse_document(DOC))
    tags = s3_tags(session)
    assert tags[0] == {"Key": "runas:identity-user", "Value": "Alice@Example.com"}
    assert len(tags) <= 10
    existing = [{"Key": f"k{i}", "Value": "v"} for i in range(7)] + [{"Key": "runas:account", "Value": "old"}]
    merged = merge_tags(existing, tags)
    assert len(merged) == 10 and [t for t in merged if t["Key"] == "k0"]
    assert {"Key": "runas:account", "Value": "acme"} in merged and {"Key": "runas:account", "Value": "old"} not in merged
    assert [t["Key"] for t in merged[7:]] == [t["Key"] for t in tags[:3]]


@pytest.mark.parametrize("document_type, is_session", [("StartSession", True), ("", True), ("SendCommand", False),
                                                        ("Association", False), ("TerminateSession", False)])
def test_only_start_session_documents_are_sessions(document_type, is_session):
    doc = {"DocumentInformation": {"SessionOwner": ""}}
    if document_type:
        doc["DocumentType"] = document_type
    assert parse_state(json.dumps(doc).encode()).is_session is is_session


def test_a_user_name_cut_at_64_characters_resolves_only_when_unambiguous():
    long_a, long_b = "a" * 64 + "x@example.com", "a" * 64 + "y@example.com"
    doc = {"Users": [{"UserId": "u1", "UserName": long_a, "UserStatus": "ENABLED"},
                     {"UserId": "u2", "UserName": "b" * 70, "UserStatus": "ENABLED"}]}
    directory = parse_document(doc)
    identity, _ = resolve(parse_owner(SSO + long_a[:64]), directory)
    assert identity.user_id == "u1"
    directory = parse_document({"Users": doc["Users"] + [{"UserId": "u3", "UserName": long_b, "UserStatus": "ENABLED"}]})
    identity, reason = resolve(parse_owner(SSO + long_a[:64]), directory)
    assert identity is None and "not in the directory snapshot" in reason
    identity, _ = resolve(parse_owner(SSO + "b" * 63), parse_document(doc))
    assert identity is None


def test_the_plugin_configuration_names_the_account_the_bucket_and_the_worker():
    configuration = {"PluginName": "Standard_Stream", "RunAsEnabled": True, "RunAsUser": "acme",
                     "OutputS3BucketName": "session-logs", "OutputS3KeyPrefix": "ssm/", "Properties": None}
    doc = {"DocumentInformation": {"DocumentID": "alice-0a1b2c3d4e5f67890", "RunAsUser": "", "SessionOwner": SSO + "alice",
                                   "ProcInfo": {"Pid": 4242, "StartTime": "2024-06-01T10:00:00Z"}},
           "DocumentType": "StartSession",
           "InstancePluginsInformation": [{"Configuration": configuration, "Name": "Standard_Stream", "Id": "Standard_Stream"}]}
    info = parse_state(json.dumps(doc).encode())
    assert (info.run_as_user, info.configured_user, info.account) == ("", "acme", "acme")
    assert (info.session_type, info.run_as_enabled, info.elevated) == ("Standard_Stream", True, False)
    assert (info.s3_bucket, info.s3_prefix, info.worker_pid) == ("session-logs", "ssm/", 4242)


@pytest.mark.parametrize("changes, account", [
    ({}, "acme"),
    ({"RunAsEnabled": False}, "ssm-user"),                               # Run As off: ssm-user
    ({"PluginName": "Port"}, ""),                                        # port forwarding: no shell at all
    ({"PluginName": "InteractiveCommands", "Properties": {"linux": {"runAsElevated": True}}}, "root"),
    ({"Properties": {"linux": {"runAsElevated": True}}}, "acme"),        # Standard_Stream: properties ignored
    ({"PluginName": "InteractiveCommands", "Properties": {"linux": {"runAsElevated": "true"}}}, "acme"),
    ({"RunAsUser": ""}, "vendor"),                                       # falls back to DocumentInformation
])
def test_the_account_a_session_runs_as(changes, account):
    configuration = {"PluginName": "Standard_Stream", "RunAsEnabled": True, "RunAsUser": "acme", **changes}
    doc = {"DocumentInformation": {"RunAsUser": "vendor"}, "DocumentType": "StartSession",
           "InstancePluginsInformation": [{"Name": configuration["PluginName"], "Configuration": configuration}]}
    assert parse_state(json.dumps(doc).encode()).account == account


def test_a_terminate_document_under_the_sessions_name_is_recognised():
    info = parse_state(json.dumps({"DocumentInformation": {"DocumentID": "s"}, "DocumentType": "TerminateSession"}).encode())
    assert info.is_terminate and not info.is_session


@pytest.mark.parametrize("bucket, kept", [("session-logs", True), ("Bad_Bucket", False), ("a" * 64, False),
                                          ("x\n", False), (7, False)])
def test_hostile_bucket_names_are_dropped(bucket, kept):
    doc = {"DocumentInformation": {}, "InstancePluginsInformation": [{"Configuration": {"OutputS3BucketName": bucket}}]}
    assert parse_state(json.dumps(doc).encode()).s3_bucket == (bucket if kept else "")


@pytest.mark.parametrize("prefix, key", [
    ("", "s-1.log"), ("ssm", "ssm/s-1.log"), ("ssm/", "ssm/s-1.log"), ("a//b/./", "a/b/s-1.log"),
    ("/logs/", "/logs/s-1.log"), ("a/../b", "b/s-1.log"), ("..", "../s-1.log"), ("/..", "/s-1.log"),
])
def test_log_object_keys_join_like_the_agent(prefix, key):
    from runas_agent.sessions.model import log_object_key

    assert log_object_key(prefix, "s-1") == key
