"""IdentityStoreSource through the real boto3 client and the real JSON 1.1 wire protocol, against the
local Identity Store endpoint (tests/endpoint): paging, faults, discovery, and the endpoint's own
fidelity to botocore's service model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from runas_agent import config
from runas_agent.directory import ENTERPRISE_EXTENSION
from runas_agent.errors import SourceError
from runas_agent.settings import SourceSettings
from runas_agent.sources import make_source
from runas_agent.sources.identitystore import IdentityStoreSource
from tests.endpoint import shapes
from tests.endpoint.directories import group_id, make_directory, user_id
pytest_plugins = ["tests.endpoint.fixtures"]

STORE = "d-1234567890"
#: the region of the module-run endpoint; the fixture's endpoint says its own (endpoint.region)
REGION = "eu-central-1"
REPO = Path(__file__).resolve().parents[2]


class Sleeps:
    """An injected sleep that records and does not wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def cfg(endpoint: Any, **overrides: Any) -> SourceSettings:
    values = dict(
        type="identitystore", region=endpoint.region, identity_store_id=STORE, endpoint_url=endpoint.url,
        max_attempts=3, connect_timeout=2, read_timeout=2, read_deadline=60,
    )
    values.update(overrides)
    return config.validate({"source": values, "run_as": {"expression": "${path:userName}"}}).source


def make(endpoint: Any, sleep: Any = None, **overrides: Any) -> IdentityStoreSource:
    return IdentityStoreSource.from_settings(cfg(endpoint, **overrides), **({"sleep": sleep} if sleep else {}))


def without_assigned(record: Any) -> dict:
    """A user record less the members the service assigns (UserArn and Revision, in newer models)."""
    return {k: v for k, v in record.items() if k not in ("UserArn", "Revision")}


def raw_client(endpoint: Any, service: str = "identitystore") -> Any:
    """A plain boto3 client for the endpoint, with botocore's retries off so every fault surfaces."""
    return boto3.client(service, endpoint_url=endpoint.url, region_name=endpoint.region, config=Config(retries={"total_max_attempts": 1}))


def minimum_calls(users: int, groups: int, members_per_group: list[int]) -> dict[str, int]:
    return {
        "ListUsers": max(1, math.ceil(users / 100)),
        "ListGroups": max(1, math.ceil(groups / 100)),
        **({"ListGroupMemberships": sum(max(1, math.ceil(m / 100)) for m in members_per_group)} if groups else {}),
    }


# -- complete reads ---------------------------------------------------------------------------------------


def test_a_250_user_directory_is_read_in_three_pages_and_round_trips(identitystore_endpoint):
    document = make_directory(250, disabled_every=10, without_extensions_every=25)
    identitystore_endpoint.seed(document)
    fetched = make(identitystore_endpoint).fetch()

    assert identitystore_endpoint.calls() == {"ListUsers": 3, "ListGroups": 1, "ListGroupMemberships": 5}
    assert fetched.stats["calls"] == identitystore_endpoint.calls()
    assert sorted(document["Users"], key=lambda r: r["UserId"]) == [without_assigned(u.record) for u in fetched.directory.users]
    if "UserArn" in shapes.service_model("identitystore").shape_for("User").required_members:
        assert all(u.record["UserArn"] == f"arn:aws:identitystore:::user/{u.user_id}" for u in fetched.directory.users)
    assert len(fetched.directory.groups) == 5
    assert fetched.directory.members[group_id(4)] == frozenset(user_id(i) for i in range(200, 250))
    assert sum(1 for u in fetched.directory.users if not u.enabled) == 25
    assert fetched.directory.problems == ()


@pytest.mark.parametrize(
    "users, per_group",
    [(0, 0), (1, 0), (100, 0), (101, 0), (250, 2), (300, 300), (120, 1), (201, 150)],
)
def test_calls_are_the_minimum(identitystore_endpoint, users, per_group):
    document = make_directory(users, users_per_group=per_group)
    identitystore_endpoint.seed(document)
    fetched = make(identitystore_endpoint).fetch()

    sizes: dict[str, int] = {}
    for m in document["GroupMemberships"]:
        sizes[m["GroupId"]] = sizes.get(m["GroupId"], 0) + 1
    expected = minimum_calls(len(document["Users"]), len(document["Groups"]), [sizes.get(g["GroupId"], 0) for g in document["Groups"]])
    assert identitystore_endpoint.calls() == expected
    assert fetched.stats["calls"] == expected
    assert len(fetched.directory.users) == len(document["Users"])
    assert sum(len(m) for m in fetched.directory.members.values()) == len(document["GroupMemberships"])


def test_disabled_users_missing_extensions_and_mixed_case_keys(identitystore_endpoint):
    users = [
        {"UserId": user_id(1), "UserName": "alice", "UserStatus": "DISABLED",
         "Extensions": {ENTERPRISE_EXTENSION: {"Organization": "ACME", "Department": "Ops"}}},
        {"UserId": user_id(2), "UserName": "bob", "UserStatus": "ENABLED"},
        {"UserId": user_id(3), "UserName": "carol", "UserStatus": "ENABLED",
         "Extensions": {ENTERPRISE_EXTENSION: {"organization": "Initech"}}},
    ]
    identitystore_endpoint.seed({"IdentityStoreId": STORE, "Users": users, "Groups": [], "GroupMemberships": []})
    directory = make(identitystore_endpoint).fetch().directory
    by_name = {u.user_name: u for u in directory.users}

    assert by_name["alice"].enabled is False
    assert by_name["alice"].organization == "ACME"
    assert by_name["alice"].enterprise()["department"] == "Ops"
    assert by_name["bob"].enabled is True and "Extensions" not in by_name["bob"].record
    assert by_name["bob"].organization == ""
    assert by_name["carol"].record["UserStatus"] == "ENABLED" and by_name["carol"].organization == "Initech"


def test_a_record_the_service_never_returns_is_not_seeded(identitystore_endpoint):
    """The endpoint reads a document as the file source does (one parser): a user without
    UserStatus, which the service always returns, would be held there and served as ENABLED here."""
    users = [{"UserId": user_id(1), "UserName": "alice"}]
    with pytest.raises(ValueError, match=r"user alice \(.*\): the record has no UserStatus"):
        identitystore_endpoint.seed({"IdentityStoreId": STORE, "Users": users, "Groups": [], "GroupMemberships": []})


def test_extensions_only_when_asked_for_like_the_service(identitystore_endpoint):
    identitystore_endpoint.seed(make_directory(2, users_per_group=0))
    client = raw_client(identitystore_endpoint)
    plain = client.list_users(IdentityStoreId=STORE)["Users"]
    asked = client.list_users(IdentityStoreId=STORE, Extensions=[ENTERPRISE_EXTENSION])["Users"]
    assert all("Extensions" not in u and u["UserStatus"] == "ENABLED" for u in plain)
    assert all(u["Extensions"][ENTERPRISE_EXTENSION]["organization"].startswith("Org") for u in asked)
    described = client.describe_user(IdentityStoreId=STORE, UserId=user_id(0), Extensions=[ENTERPRISE_EXTENSION])
    assert described["UserStatus"] == "ENABLED" and ENTERPRISE_EXTENSION in described["Extensions"]


def test_users_created_through_the_api_keep_their_extensions(identitystore_endpoint):
    identitystore_endpoint.seed({"IdentityStoreId": STORE, "Users": [], "Groups": [], "GroupMemberships": []})
    client = raw_client(identitystore_endpoint)
    created = client.create_user(
        IdentityStoreId=STORE, UserName="dora", DisplayName="Dora", Name={"GivenName": "D", "FamilyName": "E"},
        Extensions={ENTERPRISE_EXTENSION: {"organization": "Umbrella"}},
    )
    directory = make(identitystore_endpoint).fetch().directory
    assert directory.users[0].user_id == created["UserId"]
    assert directory.users[0].organization == "Umbrella" and directory.users[0].enabled


def test_timestamps_travel_as_epoch_and_come_back_as_iso(identitystore_endpoint):
    users = [{"UserId": user_id(1), "UserName": "alice", "UserStatus": "ENABLED", "CreatedAt": "2024-05-01T12:00:00+00:00"}]
    identitystore_endpoint.seed({"IdentityStoreId": STORE, "Users": users, "Groups": [], "GroupMemberships": []})
    fetched = make(identitystore_endpoint).fetch()
    assert fetched.directory.users[0].record["CreatedAt"] == "2024-05-01T12:00:00+00:00"
    assert fetched.directory.canonical_bytes()


def test_aws_endpoint_url_from_the_environment_is_honoured(identitystore_endpoint, monkeypatch):
    identitystore_endpoint.seed(make_directory(3, users_per_group=0))
    monkeypatch.setenv("AWS_ENDPOINT_URL", identitystore_endpoint.url)
    source = make_source(cfg(identitystore_endpoint, endpoint_url=None))
    assert len(source.fetch().directory.users) == 3
    assert identitystore_endpoint.calls()["ListUsers"] == 1


# -- discovery ---------------------------------------------------------------------------------------------


def test_the_store_is_discovered_with_sso_admin_list_instances(identitystore_endpoint):
    identitystore_endpoint.seed(make_directory(5, users_per_group=0, store_id="d-abcdef0123"))
    source = make(identitystore_endpoint, identity_store_id=None)
    fetched = source.fetch()
    assert fetched.directory.identity_store_id == "d-abcdef0123" and len(fetched.directory.users) == 5
    assert identitystore_endpoint.calls()["sso-admin:ListInstances"] == 1
    source.fetch()
    assert identitystore_endpoint.calls()["sso-admin:ListInstances"] == 1


@pytest.mark.parametrize(
    "stores, fragment",
    [([], "shows no IAM Identity Center instance"), (["d-1111111111", "d-2222222222"], "several Identity Stores")],
)
def test_discovery_refuses_none_or_several_stores(identitystore_endpoint, stores, fragment):
    identitystore_endpoint.seed(make_directory(5, users_per_group=0))
    identitystore_endpoint.set_instances(stores)
    with pytest.raises(SourceError, match=fragment):
        make(identitystore_endpoint, identity_store_id=None).fetch()
    assert "ListUsers" not in identitystore_endpoint.calls()


def test_discovery_denied_names_sso_list_instances(identitystore_endpoint):
    identitystore_endpoint.seed(make_directory(5, users_per_group=0))
    identitystore_endpoint.inject("sso-admin:ListInstances", "access_denied")
    with pytest.raises(SourceError, match=r"ListInstances page 1: access denied .*needs sso:ListInstances"):
        make(identitystore_endpoint, identity_store_id=None).fetch()


# -- faults: every one fails the read, none returns a shorter directory ----------------------------------------

FAULTS = [
    # (operation, kind, options, what the message must say)
    ("ListUsers", "throttle", dict(page=2, retry_after=0), ["ListUsers page 2", "throttled (ThrottlingException", "3 attempt(s) of 3"]),
    ("ListUsers", "internal", dict(page=3), ["ListUsers page 3", "server error (InternalServerException", "3 attempt(s) of 3"]),
    ("ListUsers", "unavailable", dict(page=2), ["ListUsers page 2", "server error", "503"]),
    ("ListUsers", "access_denied", dict(page=1), ["ListUsers page 1", "needs identitystore:ListUsers", "AWSSSODirectoryReadOnly"]),
    ("ListUsers", "not_found", dict(page=1), ["ListUsers page 1", "ResourceNotFoundException", "source.identity_store_id"]),
    ("ListUsers", "invalid_token", dict(page=3), ["ListUsers page 3", "pagination token was rejected"]),
    ("ListUsers", "bad_next_token", dict(page=2), ["ListUsers page 3", "pagination token was rejected"]),
    ("ListUsers", "stall", dict(page=2), ["ListUsers page 2", "timed out", "3 attempt(s) of 3"]),
    ("ListGroups", "throttle", dict(page=1, retry_after=0), ["ListGroups page 1", "throttled"]),
    ("ListGroupMemberships", "internal", dict(page=1, group_id=group_id(1)), [f"ListGroupMemberships page 1 (group {group_id(1)})", "server error"]),
    ("ListGroupMemberships", "access_denied", dict(page=2), ["ListGroupMemberships page 2", "needs identitystore:ListGroupMemberships"]),
    ("ListGroupMemberships", "not_found", dict(page=1), ["ListGroupMemberships page 1", "ResourceNotFoundException"]),
]


@pytest.mark.parametrize("operation, kind, options, fragments", FAULTS, ids=[f"{f[0]}-{f[1]}" for f in FAULTS])
def test_every_fault_fails_the_read_with_a_message_naming_the_call(identitystore_endpoint, operation, kind, options, fragments):
    document = make_directory(250, users_per_group=125)  # 3 user pages, 2 groups of 2 membership pages each
    identitystore_endpoint.seed(document)
    identitystore_endpoint.inject(operation, kind, **options)
    source = make(identitystore_endpoint, Sleeps(), read_timeout=0.3)

    with pytest.raises(SourceError) as raised:
        source.fetch()
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message
    assert source.last_stats == {}

    # Once the fault is gone the same source reads everything: nothing of the failed read was kept.
    identitystore_endpoint.clear_faults()
    fetched = source.fetch()
    assert len(fetched.directory.users) == 250
    assert sum(len(m) for m in fetched.directory.members.values()) == 250


def test_retry_after_seconds_is_honoured_and_the_read_completes(identitystore_endpoint):
    identitystore_endpoint.seed(make_directory(250, users_per_group=0))
    identitystore_endpoint.inject("ListUsers", "throttle", page=2, times=2, retry_after=1)
    sleeps = Sleeps()
    fetched = make(identitystore_endpoint, sleeps).fetch()

    assert len(fetched.directory.users) == 250
    assert len(sleeps.calls) == 2 and all(1.0 <= s < 1.0 + 2 * 0.5 for s in sleeps.calls)
    assert identitystore_endpoint.calls() == {"ListUsers": 5, "ListGroups": 1}
    assert fetched.stats["pages"] == {"ListUsers": 3, "ListGroups": 1}


def test_retry_after_seconds_is_waited_for_in_real_time(identitystore_endpoint):
    identitystore_endpoint.seed(make_directory(150, users_per_group=0))
    identitystore_endpoint.inject("ListUsers", "internal", page=2, times=1, retry_after=1)
    started = time.monotonic()
    fetched = make(identitystore_endpoint).fetch()
    assert time.monotonic() - started >= 1.0
    assert len(fetched.directory.users) == 150


def test_a_stall_shorter_than_the_read_timeout_is_waited_out(identitystore_endpoint):
    identitystore_endpoint.seed(make_directory(150, users_per_group=0))
    identitystore_endpoint.inject("ListUsers", "stall", page=2, seconds=0.3)
    sleeps = Sleeps()
    fetched = make(identitystore_endpoint, sleeps, read_timeout=2).fetch()
    assert len(fetched.directory.users) == 150 and sleeps.calls == []


def test_a_stalled_page_past_the_read_deadline_fails(identitystore_endpoint):
    identitystore_endpoint.seed(make_directory(150, users_per_group=0))
    identitystore_endpoint.inject("ListUsers", "stall", page=2)
    with pytest.raises(SourceError, match="ListUsers page 2: .*(read_deadline|timed out)"):
        make(identitystore_endpoint, read_timeout=0.4, read_deadline=1, max_attempts=10).fetch()
    assert identitystore_endpoint.calls()["ListUsers"] <= 4


def test_missing_credentials_fail_the_read(identitystore_endpoint, monkeypatch):
    identitystore_endpoint.seed(make_directory(3, users_per_group=0))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(SourceError, match="ListUsers page 1: no usable AWS credentials"):
        make(identitystore_endpoint).fetch()
    assert identitystore_endpoint.calls() == {}


def test_an_old_botocore_is_refused_before_any_call(identitystore_endpoint, monkeypatch):
    import botocore.loaders

    original = botocore.loaders.Loader.load_service_model

    def without_user_status(self, service_name, type_name, api_version=None):
        model = original(self, service_name, type_name, api_version)
        if service_name == "identitystore" and type_name == "service-2":
            model = json.loads(json.dumps(model))
            del model["shapes"]["User"]["members"]["UserStatus"]
        return model

    monkeypatch.setattr(botocore.loaders.Loader, "load_service_model", without_user_status)
    with pytest.raises(SourceError, match=r"does not know User.UserStatus.*botocore>=1\.42\.5"):
        make_source(cfg(identitystore_endpoint))
    assert identitystore_endpoint.calls() == {}


# -- the endpoint itself ---------------------------------------------------------------------------------------


def test_every_response_shape_the_endpoint_emits_matches_botocore(identitystore_endpoint):
    """Every operation and every fault error through the wire; the fixture fails the test if any
    response the endpoint served broke the model, and this checks that it did look."""
    document = make_directory(120, users_per_group=60, disabled_every=3, without_extensions_every=4)
    document["Users"][0]["ExternalIds"] = [{"Issuer": "https://scim.example.com", "Id": "ext-1"}]
    document["Users"][0]["CreatedAt"] = "2024-01-02T03:04:05+00:00"
    document["Groups"][0]["Description"] = "first group"
    identitystore_endpoint.seed(document)
    client = raw_client(identitystore_endpoint)
    sso = raw_client(identitystore_endpoint, "sso-admin")

    client.list_users(IdentityStoreId=STORE, MaxResults=100)
    client.list_users(IdentityStoreId=STORE, Extensions=[ENTERPRISE_EXTENSION], MaxResults=50)
    client.list_users(IdentityStoreId=STORE, Filters=[{"AttributePath": "UserName", "AttributeValue": "user00001"}])
    client.describe_user(IdentityStoreId=STORE, UserId=user_id(0), Extensions=[ENTERPRISE_EXTENSION])
    client.get_user_id(IdentityStoreId=STORE, AlternateIdentifier={"UniqueAttribute": {"AttributePath": "userName", "AttributeValue": "user00002"}})
    client.create_user(IdentityStoreId=STORE, UserName="new", DisplayName="New", Name={"GivenName": "N", "FamilyName": "W"},
                       Extensions={ENTERPRISE_EXTENSION: {"organization": "X"}})
    client.list_groups(IdentityStoreId=STORE)
    client.describe_group(IdentityStoreId=STORE, GroupId=group_id(0))
    client.list_group_memberships(IdentityStoreId=STORE, GroupId=group_id(0), MaxResults=10)
    sso.list_instances()
    errors = 0
    for operation, kind, options, _ in FAULTS:
        if kind in ("stall", "bad_next_token", "unavailable"):
            continue
        identitystore_endpoint.inject(operation, kind, **dict(options, page=None, times=1, group_id=None))
        call = {"ListUsers": lambda: client.list_users(IdentityStoreId=STORE),
                "ListGroups": lambda: client.list_groups(IdentityStoreId=STORE),
                "ListGroupMemberships": lambda: client.list_group_memberships(IdentityStoreId=STORE, GroupId=group_id(0))}[operation]
        with pytest.raises(client.exceptions.ClientError):
            call()
        errors += 1
    identitystore_endpoint.inject("ListUsers", "bad_next_token", page=1, times=1)
    token = client.list_users(IdentityStoreId=STORE, MaxResults=10)["NextToken"]
    with pytest.raises(client.exceptions.ValidationException):
        client.list_users(IdentityStoreId=STORE, MaxResults=10, NextToken=token)
    identitystore_endpoint.inject("sso-admin:ListInstances", "throttle", retry_after=2, times=1)
    with pytest.raises(sso.exceptions.ThrottlingException) as throttled:
        sso.list_instances()
    assert "RetryAfterSeconds" not in throttled.value.response  # sso-admin's model has none
    identitystore_endpoint.inject("ListGroups", "throttle", retry_after=2, times=1)
    with pytest.raises(client.exceptions.ThrottlingException) as throttled:
        client.list_groups(IdentityStoreId=STORE)
    assert throttled.value.response["RetryAfterSeconds"] == 2

    assert errors == 9
    assert identitystore_endpoint.problems == []
    assert sum(identitystore_endpoint.calls().values()) == 10 + errors + 4  # + the bad-token pair and two throttles


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"Users": [{"IdentityStoreId": STORE, "UserId": user_id(1), "UserStatus": "SUSPENDED"}]}, "is not one of ENABLED, DISABLED"),
        ({"Users": [{"IdentityStoreId": STORE, "UserId": user_id(1), "Organization": "x"}]}, "Unknown parameter"),
        ({"Users": [{"UserId": user_id(1)}]}, "Missing required parameter"),
        ({"Users": [{"IdentityStoreId": STORE, "UserId": user_id(1), "DisplayName": None}]}, "Invalid type"),
        ({"Users": [{"IdentityStoreId": STORE, "UserId": user_id(1), "Extensions": {"enterprise": {}}}]}, "does not match aws:identitystore"),
        ({"Users": [{"IdentityStoreId": STORE, "UserId": user_id(1), "Emails": [{}, {}]}]}, "at most 1"),
    ],
)
def test_the_model_check_catches_drift(body, fragment):
    problems = shapes.check_output("identitystore", "ListUsers", body)
    assert any(fragment in p for p in problems), problems


def test_the_model_check_catches_wrong_errors():
    assert shapes.check_error("identitystore", "ListUsers", 400, {"__type": "ThrottlingException", "Message": "x", "RetryAfterSeconds": 1}) == []
    assert any("not an error of ListUsers" in p for p in shapes.check_error("identitystore", "ListUsers", 400, {"__type": "InvalidToken"}))
    assert any("not an error status" in p for p in shapes.check_error("identitystore", "ListUsers", 200, {"__type": "InternalServerException"}))
    assert any("Invalid type" in p for p in shapes.check_error("identitystore", "ListUsers", 400, {"__type": "ThrottlingException", "RetryAfterSeconds": "1"}))


def test_ten_thousand_users_seed_in_seconds(identitystore_endpoint):
    document = make_directory(10_000)
    started = time.monotonic()
    identitystore_endpoint.seed(document)
    assert time.monotonic() - started < 5
    client = raw_client(identitystore_endpoint)
    last = client.list_users(IdentityStoreId=STORE, Filters=[{"AttributePath": "UserName", "AttributeValue": "user09999"}])["Users"]
    assert [u["UserId"] for u in last] == [user_id(9999)]
    assert identitystore_endpoint.calls() == {"ListUsers": 1}


def test_counters_reset(identitystore_endpoint):
    identitystore_endpoint.seed(make_directory(1, users_per_group=0))
    make(identitystore_endpoint).fetch()
    assert identitystore_endpoint.calls() == {"ListUsers": 1, "ListGroups": 1}
    identitystore_endpoint.reset_calls()
    assert identitystore_endpoint.calls() == {}


def test_the_endpoint_runs_as_a_module_with_a_seed_file(tmp_path):
    seed = tmp_path / "directory.json"
    seed.write_text(json.dumps(make_directory(120, users_per_group=0)))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.endpoint", "--port", "0", "--region", REGION, "--seed", str(seed)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        source = IdentityStoreSource.from_settings(
            config.validate({"source": {"region": REGION, "endpoint_url": url, "max_attempts": 2, "connect_timeout": 2,
                                        "read_timeout": 5, "read_deadline": 30},
                             "run_as": {"expression": "${path:userName}"}}).source,
            session=boto3.session.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name=REGION),
        )
        assert len(source.fetch().directory.users) == 120
        with urllib.request.urlopen(f"{url}/_endpoint/calls") as answer:
            assert json.load(answer)["calls"] == {"sso-admin:ListInstances": 1, "ListUsers": 2, "ListGroups": 1}
        request = urllib.request.Request(f"{url}/_endpoint/faults", method="POST",
                                         data=json.dumps({"operation": "ListUsers", "kind": "access_denied"}).encode())
        urllib.request.urlopen(request).close()
        with pytest.raises(SourceError, match="access denied"):
            source.fetch()
        with urllib.request.urlopen(f"{url}/_endpoint/problems") as answer:
            assert json.load(answer)["problems"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
