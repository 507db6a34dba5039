"""Deploying the templates into the local endpoint's moto (real boto3 CloudFormation calls, moto's
CloudFormation engine resolving parameters, conditions and intrinsic functions), and the events the
rules must (not) match, in the shapes AWS documents."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3

from tests.deploy.templates import template_text

ACCOUNT = "123456789012"            # moto's account: the one every stack is deployed into
PUBLISHER_ACCOUNT = "111122223333"  # the snapshot publisher, as a member account's stack names it
ORGANIZATION = "o-a1b2c3d4e5"
STORE = "d-1234567890"
MOTO_SERVICES = ("cloudformation", "events", "ssm", "kms", "s3", "iam")
#: moto warns of each resource type it skips (the tests check what it created)
SKIPPED_TYPES_WARNING = r"ignore:Tried to parse AWS\W+(S3\W+BucketPolicy|SSO\W+)"


class Stack:
    def __init__(self, cfn: Any, name: str):
        description = cfn.describe_stacks(StackName=name)["Stacks"][0]
        self.name = name
        self.status = description["StackStatus"]
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}
        summaries = cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
        #: logical id -> physical id, for what moto created
        self.physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in summaries if r.get("PhysicalResourceId")}


def deploy(session: boto3.session.Session, url: str, name: str, template: str, parameters: dict[str, str]) -> Stack:
    """Create the stack and wait for nothing: moto creates it within the call. CREATE_COMPLETE or
    AssertionError."""
    cfn = session.client("cloudformation", endpoint_url=url)
    cfn.create_stack(StackName=name, TemplateBody=template_text(template), Capabilities=["CAPABILITY_IAM"],
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    stack = Stack(cfn, name)
    assert stack.status == "CREATE_COMPLETE", (name, stack.status)
    return stack


def policy_document(raw: Any) -> dict:
    """A policy document as returned by moto's IAM or KMS after a CloudFormation deployment: a dict,
    JSON text, or (moto 5.2.1 stores some inline role policies so) the Python repr of a dict."""
    if isinstance(raw, dict):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        import ast

        return ast.literal_eval(raw)


def reset_moto() -> None:
    """Forget what the deployments created (stack, rule, document, key, bucket, role names repeat)."""
    from moto.backends import get_backend

    for service in MOTO_SERVICES:
        for regions in get_backend(service).values():  # type: ignore[attr-defined]
            for backend in regions.values():
                backend.reset()


def cloudtrail_event(event_source: str, event_name: str, read_only: bool = False, region: str = "eu-west-1") -> dict:
    """An EventBridge event delivered by CloudTrail. `source` is aws.<service>, as the EventBridge
    reference gives it for identitystore and sso-oauth (SCIM's is not documented; the rules do not
    match on it)."""
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "AWS API Call via CloudTrail",
        "source": "aws." + event_source.split(".")[0], "account": ACCOUNT, "time": "2026-01-01T00:00:00Z",
        "region": region, "resources": [],
        "detail": {"eventVersion": "1.10", "eventSource": event_source, "eventName": event_name,
                   "awsRegion": region, "readOnly": read_only, "eventType": "AwsApiCall",
                   "recipientAccountId": ACCOUNT},
    }


def object_created(bucket: str, key: str, account: str = PUBLISHER_ACCOUNT, region: str = "eu-west-1") -> dict:
    """S3's "Object Created" event (EventBridge notifications on)."""
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
        "account": account, "time": "2026-01-01T00:00:00Z", "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket},
                   "object": {"key": key, "size": 2048, "etag": "d41d8cd98f00b204e9800998ecf8427e",
                              "version-id": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", "sequencer": "0062E99A88DC407460"},
                   "request-id": "N4N7GDK58NMKJ12R", "requester": account, "reason": "PutObject"},
    }


def matches(pattern: str, event: dict) -> bool:
    """Whether an event pattern matches an event, by moto's EventBridge pattern engine (the one its
    buses route with; its TestEventPattern API answers nothing in 5.2.1)."""
    from moto.events.models import EventPattern

    return EventPattern.load(pattern).matches_event(json.loads(json.dumps(event)))
