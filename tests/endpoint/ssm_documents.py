"""SSM documents on the local endpoint: moto 5.2.1 already keeps documents and answers GetDocument;
this adds the Session Manager preferences and session document helpers and an AccessDeniedException
(GetDocument, ListDocuments) moto cannot give (the real service sends it for any operation the caller's
policy does not allow; botocore's model does not list it per operation).

Importing this module registers the extended response class into tests.endpoint.extension.RESPONSES.
SSM calls do not pass through the endpoint's per-operation middleware (it knows Identity Store and
sso-admin targets only): `check_raw` checks a raw GetDocument or ListDocuments body against botocore's
model, for a test to hook into its boto3 session with `watch(session)`.
"""

from __future__ import annotations

import json
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import JsonRESTError
from moto.ssm.models import ssm_backends
from moto.ssm.responses import SimpleSystemManagerResponse

from tests.endpoint import extension, shapes

PREFERENCES = "SSM-SessionManagerRunShell"
#: (region, operation) pairs answered with AccessDeniedException
DENIED: set[tuple[str, str]] = set()


def _denied(region: str, operation: str, resource: str) -> JsonRESTError:
    return JsonRESTError(
        "AccessDeniedException",
        f"User: arn:aws:sts::{DEFAULT_ACCOUNT_ID}:assumed-role/runas-agent/i-0123456789abcdef0 is not authorized "
        f"to perform: ssm:{operation} on resource: arn:aws:ssm:{region}:{DEFAULT_ACCOUNT_ID}:{resource} because no "
        f"identity-based policy allows the ssm:{operation} action")


class ExtendedSsmResponse(SimpleSystemManagerResponse):
    def get_document(self) -> Any:
        if (self.region, "GetDocument") in DENIED:
            raise _denied(self.region, "GetDocument", f"document/{self._get_param('Name')}")
        return super().get_document()

    def list_documents(self) -> Any:
        if (self.region, "ListDocuments") in DENIED:
            raise _denied(self.region, "ListDocuments", "*")
        result = super().list_documents()
        # moto 5.2.1 answers PlatformTypes ["Not Implemented (moto)"], which botocore's model refuses; the
        # service derives them from the document's plugins. Session documents are listed with all three (as
        # the AWS-managed ones are); the doctor does not read the field.
        for document in result.result["DocumentIdentifiers"]:
            if document.get("DocumentType") == "Session":
                document["PlatformTypes"] = ["Windows", "Linux", "MacOS"]
        return result


extension.RESPONSES["ssm"] = ExtendedSsmResponse


def preferences_content(run_as_enabled: Any = True, default_user: str = "", **inputs: Any) -> dict[str, Any]:
    """A Session Manager preferences document as the console writes it."""
    body = {
        "s3BucketName": "", "s3KeyPrefix": "", "s3EncryptionEnabled": True, "cloudWatchLogGroupName": "",
        "cloudWatchEncryptionEnabled": True, "cloudWatchStreamingEnabled": False, "idleSessionTimeout": "20",
        "maxSessionDuration": "", "kmsKeyId": "", "runAsEnabled": run_as_enabled, "runAsDefaultUser": default_user,
        "shellProfile": {"windows": "", "linux": ""},
    }
    body.update(inputs)
    return {"schemaVersion": "1.0", "description": "Document to hold regional settings for Session Manager",
            "sessionType": "Standard_Stream", "inputs": body}


def put_preferences(ssm: Any, content: dict[str, Any] | str) -> None:
    """Create or replace the preferences document through the API (as the console does)."""
    text = content if isinstance(content, str) else json.dumps(content)
    try:
        ssm.update_document(Name=PREFERENCES, Content=text, DocumentVersion="$LATEST", DocumentFormat="JSON")
        version = ssm.describe_document(Name=PREFERENCES)["Document"]["LatestVersion"]
        ssm.update_document_default_version(Name=PREFERENCES, DocumentVersion=version)
    except ssm.exceptions.InvalidDocument:
        ssm.create_document(Name=PREFERENCES, Content=text, DocumentType="Session", DocumentFormat="JSON")


def put_session_document(ssm: Any, name: str, content: dict[str, Any] | str, document_format: str = "JSON") -> None:
    """A session document of the account (sessionType Port, InteractiveCommands, ...), as a team would add one."""
    text = content if isinstance(content, str) else json.dumps(content)
    ssm.create_document(Name=name, Content=text, DocumentType="Session", DocumentFormat=document_format)


def reset(region: str, account_id: str = DEFAULT_ACCOUNT_ID) -> None:
    DENIED.clear()
    ssm_backends[account_id][region].reset()


def check_raw(operation: str, status: int, raw: bytes) -> list[str]:
    """Problems of one raw SSM response body against botocore's model."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return [f"{operation}: the body is not JSON"]
    if status == 200:
        return shapes.check_output("ssm", operation, body)
    if isinstance(body, dict) and str(body.get("__type", "")).endswith("AccessDeniedException"):
        return []  # a common error the model does not list per operation
    return shapes.check_error("ssm", operation, status, body)


def watch(session: Any, problems: list[str]) -> None:
    """Check every GetDocument and ListDocuments response the clients of this boto3 session receive."""

    def after_call(http_response: Any = None, model: Any = None, **_: Any) -> None:
        if http_response is not None:
            problems.extend(check_raw(model.name, http_response.status_code, http_response.content))

    for operation in ("GetDocument", "ListDocuments"):
        session.events.register(f"after-call.ssm.{operation}", after_call)
