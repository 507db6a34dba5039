"""The review of the Session Manager preferences (pure): what Run As leaves open, what to deny."""

from __future__ import annotations

import json

import pytest

from runas_agent.sessions.preferences import PORT_DOCUMENTS, PROBLEM, WARNING, review_preferences

PREFERENCES = {
    "schemaVersion": "1.0", "description": "Session Manager preferences", "sessionType": "Standard_Stream",
    "inputs": {"s3BucketName": "session-logs", "s3KeyPrefix": "ssm", "s3EncryptionEnabled": True,
               "cloudWatchLogGroupName": "", "runAsEnabled": True, "runAsDefaultUser": "",
               "idleSessionTimeout": "20", "shellProfile": {"windows": "", "linux": ""}},
}


def keys(review, level=None):
    return [f.key for f in review.findings if level is None or f.level == level]


def test_a_sound_preferences_document_has_no_problem_and_denies_port_forwarding():
    review = review_preferences(json.dumps(PREFERENCES))
    assert keys(review, PROBLEM) == [] and keys(review, WARNING) == []
    assert review.deny_documents == PORT_DOCUMENTS
    assert "s3://session-logs/ssm" in next(f.message for f in review.findings if f.key == "inputs.s3BucketName")
    statement = review.deny_policy()["Statement"][0]
    assert statement["Effect"] == "Deny" and statement["Action"] == "ssm:StartSession"
    assert statement["Resource"] == [f"arn:aws:ssm:*:*:document/{n}" for n in PORT_DOCUMENTS]


@pytest.mark.parametrize("value, problem", [(True, False), ("true", False), ("TRUE", False), (False, True),
                                            ("false", True), (None, True), ("yes", True)])
def test_run_as_must_be_enabled(value, problem):
    inputs = dict(PREFERENCES["inputs"], runAsEnabled=value)
    review = review_preferences({**PREFERENCES, "inputs": inputs})
    assert ("inputs.runAsEnabled" in keys(review, PROBLEM)) is problem
    if problem:
        assert "ssm-user" in review.findings[0].message


def test_the_default_user_is_named():
    review = review_preferences({**PREFERENCES, "inputs": dict(PREFERENCES["inputs"], runAsDefaultUser="guest")})
    assert "'guest'" in next(f.message for f in review.findings if f.key == "inputs.runAsDefaultUser")


def test_run_as_elevated_in_the_preferences_is_a_warning_yaml_too():
    content = ("schemaVersion: '1.0'\nsessionType: Standard_Stream\ninputs:\n  runAsEnabled: true\n"
               "properties:\n  linux:\n    runAsElevated: true\n")
    assert keys(review_preferences(content), WARNING) == ["properties.linux.runAsElevated"]


def test_other_session_documents_that_bypass_run_as_are_to_be_denied():
    documents = {
        "Team-RootShell": {"schemaVersion": "1.0", "sessionType": "InteractiveCommands",
                           "properties": {"linux": {"commands": "bash", "runAsElevated": True}}},
        "Team-Top": json.dumps({"sessionType": "InteractiveCommands",
                                "properties": {"linux": {"commands": "top", "runAsElevated": False}}}),
        "Team-Tunnel": {"sessionType": "Port", "properties": {"portNumber": "5432"}},
        "AWS-StartSSHSession": {"sessionType": "Port"},
        "bad name!": {"sessionType": "Port"},
        "Team-Broken": "[1, 2",
    }
    review = review_preferences(PREFERENCES, documents)
    assert review.deny_documents == PORT_DOCUMENTS + ("Team-RootShell", "Team-Tunnel")
    assert keys(review, PROBLEM) == ["Team-RootShell: properties.linux.runAsElevated"]
    assert {"Team-Tunnel: sessionType", "Team-Broken", "'bad name!'"} <= set(keys(review, WARNING))


@pytest.mark.parametrize("content", ["", "not: [valid", b"\xff", 42, "[]", json.dumps({**PREFERENCES, "sessionType": "Port"})])
def test_content_that_is_not_a_preferences_document_is_a_problem(content):
    review = review_preferences(content)
    assert set(keys(review, PROBLEM)) & {"content", "sessionType"}
    assert review.deny_documents == PORT_DOCUMENTS
