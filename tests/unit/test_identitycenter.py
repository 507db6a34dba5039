"""run_as.expression: from-identity-center: the config accepts it, and the live SSMSessionRunAs value
is read from a DescribeInstanceAccessControlAttributeConfiguration response the same way everywhere."""

from __future__ import annotations

import pytest

from runas_agent import config
from runas_agent.errors import ConfigError, SourceError
from runas_agent.identitycenter import (FROM_IDENTITY_CENTER, AbacError, IdentityCenterError, Instance, discover,
                                       expression_from, instances_from, parse_abac, resolve_run_as)

ARN = "arn:aws:sso:::instance/ssoins-0123456789abcdef"
STORE = {"type": "identitystore", "region": "eu-west-1", "identity_store_id": "d-1234567890"}


def problems(data):
    with pytest.raises(ConfigError) as info:
        config.validate(data)
    return info.value.problems


def test_config_accepts_from_identity_center():
    cfg = config.validate({"source": STORE, "run_as": {"expression": FROM_IDENTITY_CENTER}})
    assert cfg.run_as.expression == FROM_IDENTITY_CENTER
    assert cfg.source.instance_arn is None


def test_other_literals_are_still_refused():
    assert any(p.startswith("run_as.expression:") for p in problems({"source": STORE, "run_as": {"expression": "from-identity"}}))


def test_file_source_with_live_expression_needs_the_home_region():
    found = problems({"source": {"type": "file", "path": "/srv/directory.json"}, "run_as": {"expression": FROM_IDENTITY_CENTER}})
    assert found == ["source.region: required with run_as.expression: from-identity-center (the Identity Center home region)"]
    config.validate({"source": {"type": "file", "path": "/srv/d.json", "region": "eu-west-1"},
                     "run_as": {"expression": FROM_IDENTITY_CENTER}})


@pytest.mark.parametrize("arn, ok", [
    (ARN, True),
    ("arn:aws-us-gov:sso:::instance/ssoins-0123456789abcdef", True),
    ("arn:aws:sso:::instance/ssoins-0123", False),
    ("ssoins-0123456789abcdef", False),
])
def test_instance_arn_is_checked(arn, ok):
    data = {"source": dict(STORE, instance_arn=arn), "run_as": {"expression": "${path:userName}"}}
    if ok:
        assert config.validate(data).source.instance_arn == arn
    else:
        assert problems(data) == [f"source.instance_arn: {arn!r} is not an IAM Identity Center instance ARN"]


def response(*attributes, status="ENABLED", reason=None):
    body = {"Status": status, "InstanceAccessControlAttributeConfiguration": {
        "AccessControlAttributes": [{"Key": k, "Value": {"Source": list(v)}} for k, v in attributes]}}
    if reason:
        body["StatusReason"] = reason
    return body


@pytest.mark.parametrize("body, expected", [
    (response(("SSMSessionRunAs", ["${path:userName}"])), "${path:userName}"),
    (response(("CostCenter", ["${path:enterprise.costCenter}"]), ("SSMSessionRunAs", ["${path:enterprise.organization}"])),
     "${path:enterprise.organization}"),
])
def test_the_live_expression_is_the_ssmsessionrunas_source(body, expected):
    assert expression_from(parse_abac(ARN, body)) == expected


@pytest.mark.parametrize("body, kind, words", [
    (response(("CostCenter", ["${path:enterprise.costCenter}"])), "no_key", "has no SSMSessionRunAs"),
    (response(("ssmsessionrunas", ["${path:userName}"])), "no_key", "there is ssmsessionrunas"),
    (response(("SSMSessionRunAs", [])), "bad_value", "0 source values"),
    (response(("SSMSessionRunAs", ["${path:userName}"]), status="CREATION_FAILED", reason="quota"), "not_enabled",
     "CREATION_FAILED: quota"),
    ({}, "no_key", "has no SSMSessionRunAs"),
])
def test_no_usable_live_expression_says_why(body, kind, words):
    with pytest.raises(AbacError) as info:
        expression_from(parse_abac(ARN, body))
    assert info.value.kind == kind
    assert words in str(info.value)
    assert isinstance(info.value, SourceError)  # a sync that cannot read it changes nothing


class FakeSsoAdmin:
    """Answers DescribeInstanceAccessControlAttributeConfiguration with a fixed body."""

    def __init__(self, body):
        self.body = body
        self.asked: list[str] = []

    def describe_instance_access_control_attribute_configuration(self, InstanceArn):
        self.asked.append(InstanceArn)
        return self.body


def live_config(**source):
    return config.validate({"source": dict(STORE, instance_arn=ARN, **source), "run_as": {"expression": FROM_IDENTITY_CENTER}})


def test_resolve_replaces_only_the_expression_and_leaves_the_config_alone():
    cfg = live_config()
    fake = FakeSsoAdmin(response(("SSMSessionRunAs", ["${path:enterprise.organization}"])))
    resolved = resolve_run_as(cfg, fake)
    assert fake.asked == [ARN]
    assert resolved.run_as.expression == "${path:enterprise.organization}"
    assert resolved.run_as.account_kind == cfg.run_as.account_kind
    assert cfg.run_as.expression == FROM_IDENTITY_CENTER


def test_a_written_expression_is_used_as_it_is_without_calls():
    cfg = config.validate({"source": STORE, "run_as": {"expression": "${path:userName}"}})
    fake = FakeSsoAdmin({})
    assert resolve_run_as(cfg, fake) is cfg
    assert fake.asked == []


def test_a_live_expression_the_agent_cannot_evaluate_is_refused():
    fake = FakeSsoAdmin(response(("SSMSessionRunAs", ["${path:groups}"])))
    with pytest.raises(AbacError) as info:
        resolve_run_as(live_config(), fake)
    assert info.value.kind == "bad_value"
    assert "${path:groups}" in str(info.value)


# --- discovery -------------------------------------------------------------------------------------

ONE = Instance("arn:aws:sso:::instance/ssoins-1111111111111111", "d-1111111111")
TWO = Instance("arn:aws:sso:::instance/ssoins-2222222222222222", "d-2222222222")


def test_instances_are_read_from_list_instances_records():
    records = [{"InstanceArn": ONE.arn, "IdentityStoreId": ONE.identity_store_id, "Status": "ACTIVE"},
               {"InstanceArn": TWO.arn}, {"IdentityStoreId": "d-3333333333"}, {"InstanceArn": 7, "IdentityStoreId": "d-4"}]
    assert instances_from(records) == (ONE,)


@pytest.mark.parametrize("instances, store, setting, found, kind, words", [
    ([ONE], None, "source.identity_store_id", ONE, None, None),
    ([ONE, TWO], "d-2222222222", "source.instance_arn", TWO, None, None),
    ([], None, "source.identity_store_id", None, "no_instance",
     "sso-admin ListInstances in eu-west-1 shows no IAM Identity Center instance: set source.identity_store_id, and check "
     "that source.region is the Identity Center home region"),
    ([ONE], "d-2222222222", "source.instance_arn", None, "no_instance",
     "shows no IAM Identity Center instance for Identity Store d-2222222222: set source.instance_arn"),
    ([TWO, ONE], None, "source.identity_store_id", None, "several_instances",
     "shows several Identity Stores (d-1111111111, d-2222222222): set source.identity_store_id to the one to use"),
    ([TWO, ONE], None, "source.instance_arn", None, "several_instances",
     f"shows several instances ({ONE.arn}, {TWO.arn}): set source.instance_arn to the one to use"),
])
def test_discover_picks_the_instance_the_configuration_means(instances, store, setting, found, kind, words):
    if kind is None:
        assert discover(instances, "eu-west-1", setting, store) == found
        return
    with pytest.raises(IdentityCenterError) as info:
        discover(instances, "eu-west-1", setting, store)
    assert info.value.kind == kind and words in str(info.value)
    assert isinstance(info.value, SourceError)
