"""run_as.expression: from-identity-center: the sync reads SSMSessionRunAs from sso-admin (the local
endpoint, extended with ABAC) at every run, and changes nothing when it cannot."""

from __future__ import annotations

import json
import os

import pytest

from runas_agent import config
from runas_agent.identitycenter import AbacError
from runas_agent.sync import sync
from tests.endpoint import ssoadmin_abac

pytest_plugins = ["tests.endpoint.fixtures"]
STORE = "d-1234567890"


def user(user_id, name, org):
    return {"IdentityStoreId": STORE, "UserId": user_id, "UserName": name, "UserStatus": "ENABLED",
            "Extensions": {"aws:identitystore:enterprise": {"organization": org}}}


DIRECTORY = {"IdentityStoreId": STORE, "Users": [user("id-alice", "alice", "Acme"), user("id-bob", "bob", "Globex")],
             "Groups": [], "GroupMemberships": []}


@pytest.fixture
def setup(identitystore_endpoint, tmp_path):
    """A file source, a private etc (read only by the planner) and the endpoint's one instance."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "os-release").write_text("ID=debian\n")
    (tmp_path / "sudoers.d").mkdir()
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(DIRECTORY))
    identitystore_endpoint.seed(DIRECTORY)
    cfg = config.validate({
        "source": {"type": "file", "path": str(path), "region": identitystore_endpoint.region,
                   "endpoint_url": identitystore_endpoint.url, "identity_store_id": STORE},
        "run_as": {"expression": "from-identity-center"},
        "sudo": {"sudoers_dir": str(tmp_path / "sudoers.d")},
        "state_dir": str(tmp_path / "state"),
    })
    return identitystore_endpoint, cfg, str(etc)


def created(result):
    return sorted(a.name for a in result.plan.actions if a.verb == "create")


def test_the_plan_follows_the_live_expression(setup):
    endpoint, cfg, etc = setup
    ssoadmin_abac.set_attributes(endpoint.region, {"SSMSessionRunAs": "${path:enterprise.organization}"})
    assert created(sync(cfg, apply=False, etc=etc)) == ["Acme", "Globex"]
    ssoadmin_abac.set_attributes(endpoint.region, {"SSMSessionRunAs": "${path:userName}"})
    result = sync(cfg, apply=False, etc=etc)
    assert created(result) == ["alice", "bob"]
    assert {a.kind for a in result.plan.actions if a.verb == "create"} == {"person"}  # auto follows the live value
    calls = endpoint.calls()
    assert calls["sso-admin:DescribeInstanceAccessControlAttributeConfiguration"] == 2
    assert calls["sso-admin:ListInstances"] == 2  # no instance_arn in the config: found each time


@pytest.mark.parametrize("breakage, kind", [
    ("no_abac", "not_enabled"),
    ("no_key", "no_key"),
    ("denied", "access_denied"),
])
def test_without_a_live_expression_the_sync_changes_nothing(setup, breakage, kind):
    endpoint, cfg, etc = setup
    if breakage == "no_key":
        ssoadmin_abac.set_attributes(endpoint.region, {"CostCenter": "${path:enterprise.costCenter}"})
    elif breakage == "denied":
        ssoadmin_abac.set_attributes(endpoint.region, {"SSMSessionRunAs": "${path:userName}"})
        endpoint.inject("sso-admin:DescribeInstanceAccessControlAttributeConfiguration", "access_denied")
    with pytest.raises(AbacError) as info:
        sync(cfg, apply=True, etc=etc)
    assert info.value.kind == kind
    if kind == "access_denied":
        assert "sso:DescribeInstanceAccessControlAttributeConfiguration" in str(info.value)
    assert not os.path.exists(os.path.join(cfg.state_dir, "ledger.json"))
