"""The AWS deployment files under deploy/ as data for tests: CloudFormation templates (with their
intrinsic functions as {"Ref": ...} / {"Fn::Sub": ...} nodes, parsed by cfn-lint's own loader), SSM
documents, and the IAM policy blocks of docs/deploy-aws.md. Also the one mapping from an API call to
the IAM action that authorizes it, and a recorder of the calls a boto3 session makes."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CLOUDFORMATION = REPO / "deploy" / "cloudformation"
SSM = REPO / "deploy" / "ssm"
DEPLOY_DOC = REPO / "docs" / "deploy-aws.md"
TEMPLATES = sorted(p.name for p in CLOUDFORMATION.glob("*.yaml"))
#: templates CloudFormation expands with the AWS::LanguageExtensions transform (moto cannot)
TRANSFORMED = ("snapshot-fanout.yaml",)

#: botocore service name -> IAM service prefix
_PREFIX = {"s3": "s3", "identitystore": "identitystore", "sso-admin": "sso", "kms": "kms", "ssm": "ssm"}
#: operations that an action of another name authorizes
_ACTION_OF = {("s3", "HeadObject"): "s3:GetObject"}


def template(name: str) -> dict[str, Any]:
    """A template as plain data (a fresh copy each time)."""
    return json.loads(_template_json(name))


@functools.lru_cache(maxsize=None)
def _template_json(name: str) -> str:
    from cfnlint.decode import cfn_yaml

    return json.dumps(cfn_yaml.load(str(CLOUDFORMATION / name)))


def template_text(name: str) -> str:
    return (CLOUDFORMATION / name).read_text()


def ssm_document(name: str) -> dict[str, Any]:
    return yaml.safe_load((SSM / name).read_text())


def iam_action(service: str, operation: str) -> str:
    """The IAM action that authorizes one API call (botocore service and operation names)."""
    return _ACTION_OF.get((service, operation), f"{_PREFIX[service]}:{operation}")


def actions(statements: list[dict[str, Any]], effect: str = "Allow") -> set[str]:
    found: set[str] = set()
    for statement in statements:
        if statement.get("Effect") != effect:
            continue
        action = statement.get("Action", [])
        found |= {action} if isinstance(action, str) else set(action)
    return found


def doc_policies() -> dict[str, dict[str, Any]]:
    """The IAM policy JSON blocks of docs/deploy-aws.md, by the name in the `<!-- policy: NAME -->`
    comment that precedes each."""
    text = DEPLOY_DOC.read_text()
    found = {}
    for match in re.finditer(r"<!-- policy: ([\w-]+) -->\s*```json\n(.*?)```", text, re.S):
        found[match.group(1)] = json.loads(match.group(2))
    return found


class CallRecorder:
    """Every API call the clients of one boto3 session make, as (service, operation, parameters),
    whatever their outcome. Register before creating clients: they copy the session's handlers."""

    def __init__(self, session: Any):
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        session.events.register("before-parameter-build", self._record)

    def _record(self, params: Any = None, model: Any = None, **_: Any) -> None:
        self.calls.append((model.service_model.service_name, model.name, dict(params or {})))

    def actions(self) -> set[str]:
        return {iam_action(service, operation) for service, operation, _ in self.calls}
