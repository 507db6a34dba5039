"""What the Session Manager preferences leave open to a disabled person (pure): reads the content of
the preferences document (`SSM-SessionManagerRunShell`, from ssm:GetDocument) and of any other
session documents, and says what Run As does not cover and which documents a permission set must deny.
Takes values, returns values; fetching the documents is the caller's.

Facts it rests on (amazon-ssm-agent): a Standard_Stream session's shell runs as the Run As user only
when the preferences' runAsEnabled is true, else as ssm-user (shell_unix.go StartCommandExecutor); a
commands session (InteractiveCommands, NonInteractiveCommands) whose document sets
properties.linux.runAsElevated runs as root with no user check at all (same function); the
Standard_Stream plugin gives the shell no document properties (standardstream.go), so runAsElevated in
the preferences document itself has no effect; port-forwarding and SSH sessions (session type Port)
start no shell and involve no Run As user, so disabling an account stops none of them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

PROBLEM, WARNING, NOTE = "problem", "warning", "note"

#: AWS-managed session documents of session type Port: port forwarding and SSH over Session Manager.
PORT_DOCUMENTS = ("AWS-StartPortForwardingSession", "AWS-StartPortForwardingSessionToRemoteHost", "AWS-StartSSHSession")
PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
COMMAND_SESSIONS = ("InteractiveCommands", "NonInteractiveCommands")
#: ssm:StartSession DocumentName
_DOCUMENT_NAME = re.compile(r"^[a-zA-Z0-9_\-.:/]{3,128}\Z")


@dataclass(frozen=True)
class Finding:
    level: str          # problem | warning | note
    key: str            # where: "inputs.runAsEnabled", "<document>: properties.linux.runAsElevated", ...
    message: str
    fix: str = ""


@dataclass(frozen=True)
class Review:
    findings: tuple[Finding, ...] = ()
    #: session documents a permission set must deny (ssm:StartSession) for Run As to bound what a
    #: person can do on the instances: port forwarding, SSH, commands documents that run as root
    deny_documents: tuple[str, ...] = field(default=PORT_DOCUMENTS)

    def deny_policy(self, region: str = "*", account: str = "*") -> dict:
        """An IAM policy statement to put in every permission set that reaches the instances (inline
        policy): Deny ssm:StartSession on these documents. AWS-owned documents have no account in
        their ARN (arn:aws:ssm:<region>::document/AWS-...); `*` matches that too."""
        return {"Version": "2012-10-17", "Statement": [{
            "Sid": "DenySessionsThatBypassRunAs", "Effect": "Deny", "Action": "ssm:StartSession",
            "Resource": [f"arn:aws:ssm:{region}:{account}:document/{name}" for name in self.deny_documents]}]}


def _load(content: Any) -> Mapping | None:
    """A document's content as GetDocument returns it (JSON or YAML text), or already parsed."""
    if isinstance(content, Mapping):
        return content
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    if not isinstance(content, str):
        return None
    try:
        document = json.loads(content)
    except ValueError:
        try:
            document = yaml.safe_load(content)
        except yaml.YAMLError:
            return None
    return document if isinstance(document, Mapping) else None


def _true(value: Any) -> bool:
    """The agent's parameters.ConvertToBool: a boolean, or the strings true/false."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _elevated(document: Mapping) -> Any:
    properties = document.get("properties")
    linux = properties.get("linux") if isinstance(properties, Mapping) else None
    return linux.get("runAsElevated") if isinstance(linux, Mapping) else None


def _inputs(document: Mapping) -> Mapping:
    inputs = document.get("inputs")
    return inputs if isinstance(inputs, Mapping) else {}


def _run_as_findings(inputs: Mapping) -> list[Finding]:
    if not _true(inputs.get("runAsEnabled")):
        return [Finding(PROBLEM, "inputs.runAsEnabled",
                        "Run As is off: every shell session runs as ssm-user (whom the SSM agent gives sudo "
                        "NOPASSWD:ALL), never as the accounts runas-agent manages",
                        "set inputs.runAsEnabled to true in " + PREFERENCES_DOCUMENT)]
    default = inputs.get("runAsDefaultUser")
    if isinstance(default, str) and default.strip():
        return [Finding(NOTE, "inputs.runAsDefaultUser",
                        f"a person whose role has no SSMSessionRunAs session tag gets a shell as {default.strip()!r}")]
    return [Finding(NOTE, "inputs.runAsDefaultUser",
                    "no default user: a person whose role has no SSMSessionRunAs session tag gets no shell session")]


def _preferences_findings(document: Mapping) -> list[Finding]:
    findings = []
    session_type = document.get("sessionType")
    if session_type != "Standard_Stream":
        findings.append(Finding(PROBLEM, "sessionType",
                                f"sessionType is {session_type!r}, not Standard_Stream: not a Session Manager "
                                "preferences document"))
    findings += _run_as_findings(_inputs(document))
    if _true(_elevated(document)):
        findings.append(Finding(WARNING, "properties.linux.runAsElevated",
                                "runAsElevated is set in the preferences document; shell sessions ignore it, but a "
                                "commands document with it runs as root with no Run As check",
                                "remove it, and deny every session document that sets it"))
    bucket = _inputs(document).get("s3BucketName")
    if isinstance(bucket, str) and bucket:
        prefix = _inputs(document).get("s3KeyPrefix") or ""
        findings.append(Finding(NOTE, "inputs.s3BucketName",
                                f"session logs go to s3://{bucket}/{prefix}; with sessions.s3_tagging.enabled "
                                "runas-agent tags each with the person behind it (s3:GetObjectTagging, "
                                "s3:PutObjectTagging on that bucket)"))
    return findings


def _document_findings(name: str, content: Any) -> tuple[list[Finding], bool]:
    """Findings about one other session document, and whether permission sets must deny it."""
    if not isinstance(name, str) or not _DOCUMENT_NAME.match(name):
        return [Finding(WARNING, repr(name)[:140], "not a session document name; skipped")], False
    document = _load(content)
    if document is None:
        return [Finding(WARNING, name, "its content is neither a JSON nor a YAML object; skipped")], False
    session_type = document.get("sessionType")
    if session_type == "Port":
        return [Finding(WARNING, f"{name}: sessionType",
                        "port forwarding: involves no Run As user, so disabling an account does not stop it",
                        "deny it in permission sets")], True
    if session_type in COMMAND_SESSIONS and _true(_elevated(document)):
        return [Finding(PROBLEM, f"{name}: properties.linux.runAsElevated",
                        "runs its commands as root with no Run As check",
                        "deny it in permission sets, or remove runAsElevated")], True
    return [], False


def review_preferences(content: Any, session_documents: Mapping[str, Any] | None = None) -> Review:
    """Review the Session Manager preferences (`content`: the SSM-SessionManagerRunShell document's
    Content, JSON or YAML text or parsed) and, optionally, other session documents of the account
    (name -> content). The AWS-managed port-forwarding and SSH documents are always to be denied."""
    deny = list(PORT_DOCUMENTS)
    document = _load(content)
    if document is None:
        findings = [Finding(PROBLEM, "content", "the preferences document is neither a JSON nor a YAML object")]
    else:
        findings = _preferences_findings(document)
    findings.append(Finding(NOTE, "port forwarding",
                            "port-forwarding and SSH sessions never check the Run As user: only IAM stops them",
                            "deny " + ", ".join(PORT_DOCUMENTS) + " in permission sets"))
    for name, doc in sorted((session_documents or {}).items(), key=lambda item: str(item[0])):
        more, must_deny = _document_findings(name, doc)
        findings += more
        if must_deny and name not in deny:
            deny.append(name)
    return Review(tuple(findings), tuple(deny))
