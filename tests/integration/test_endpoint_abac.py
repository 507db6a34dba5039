"""The local endpoint's sso-admin ABAC and SSM preference documents, through the real boto3 clients;
every sso-admin response is checked against botocore's model by the endpoint (the fixture fails the
test otherwise), every GetDocument response by the session hook."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config

from tests.endpoint import ssm_documents, ssoadmin_abac

pytest_plugins = ["tests.endpoint.fixtures"]
RUN_AS = {"Key": "SSMSessionRunAs", "Value": {"Source": ["${path:userName}"]}}
ORG = {"Key": "SSMSessionRunAs", "Value": {"Source": ["${path:enterprise.organization}"]}}


def client(endpoint, service):
    return boto3.client(service, endpoint_url=endpoint.url, region_name=endpoint.region,
                        config=Config(retries={"total_max_attempts": 1}))


def test_abac_configuration_lifecycle(identitystore_endpoint):
    endpoint = identitystore_endpoint
    endpoint.seed({"IdentityStoreId": "d-1234567890", "Users": []})
    sso = client(endpoint, "sso-admin")
    (arn,) = [i["InstanceArn"] for i in sso.list_instances()["Instances"]]
    describe = sso.describe_instance_access_control_attribute_configuration
    with pytest.raises(sso.exceptions.ResourceNotFoundException):
        describe(InstanceArn=arn)
    sso.create_instance_access_control_attribute_configuration(
        InstanceArn=arn, InstanceAccessControlAttributeConfiguration={"AccessControlAttributes": [RUN_AS]})
    assert describe(InstanceArn=arn)["InstanceAccessControlAttributeConfiguration"]["AccessControlAttributes"] == [RUN_AS]
    assert describe(InstanceArn=arn)["Status"] == "ENABLED"
    with pytest.raises(sso.exceptions.ConflictException):
        sso.create_instance_access_control_attribute_configuration(
            InstanceArn=arn, InstanceAccessControlAttributeConfiguration={"AccessControlAttributes": [RUN_AS]})
    sso.update_instance_access_control_attribute_configuration(
        InstanceArn=arn, InstanceAccessControlAttributeConfiguration={"AccessControlAttributes": [ORG]})
    assert describe(InstanceArn=arn)["InstanceAccessControlAttributeConfiguration"]["AccessControlAttributes"] == [ORG]
    sso.delete_instance_access_control_attribute_configuration(InstanceArn=arn)
    with pytest.raises(sso.exceptions.ResourceNotFoundException):
        describe(InstanceArn=arn)
    with pytest.raises(sso.exceptions.ResourceNotFoundException):
        describe(InstanceArn="arn:aws:sso:::instance/ssoins-0000000000000000")
    assert ssoadmin_abac.set_attributes(endpoint.region, {"SSMSessionRunAs": "${path:title}"}) == arn
    assert describe(InstanceArn=arn)["InstanceAccessControlAttributeConfiguration"]["AccessControlAttributes"][0]["Value"] == {
        "Source": ["${path:title}"]}
    endpoint.reset()
    assert ssoadmin_abac.instance_arns(endpoint.region) != [arn]
    assert endpoint.calls() == {}


def test_preferences_document_round_trip_and_denial(identitystore_endpoint):
    endpoint = identitystore_endpoint
    ssm_documents.reset(endpoint.region)
    problems: list[str] = []
    session = boto3.session.Session(region_name=endpoint.region)
    ssm_documents.watch(session, problems)
    ssm = session.client("ssm", endpoint_url=endpoint.url, config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ssm.exceptions.InvalidDocument):
        ssm.get_document(Name=ssm_documents.PREFERENCES)
    ssm_documents.put_preferences(ssm, ssm_documents.preferences_content(True, "ops"))
    ssm_documents.put_preferences(ssm, ssm_documents.preferences_content(False, "ops2"))
    document = ssm.get_document(Name=ssm_documents.PREFERENCES, DocumentFormat="JSON")
    assert document["DocumentType"] == "Session"
    inputs = json.loads(document["Content"])["inputs"]
    assert (inputs["runAsEnabled"], inputs["runAsDefaultUser"]) == (False, "ops2")
    ssm_documents.DENIED.add((endpoint.region, "GetDocument"))
    with pytest.raises(ssm.exceptions.ClientError) as info:
        ssm.get_document(Name=ssm_documents.PREFERENCES)
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "ssm:GetDocument" in info.value.response["Error"]["Message"]
    ssm_documents.reset(endpoint.region)
    assert not problems, problems
