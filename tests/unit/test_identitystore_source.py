"""IdentityStoreSource's paging, retry and error logic, with a real botocore client whose calls are
answered from a script (no network), an injected clock, sleep and jitter."""

from __future__ import annotations

import datetime
import json
import types
from typing import Any

import boto3
import botocore.loaders
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from runas_agent import config
from runas_agent.errors import SourceError
from runas_agent.settings import SourceSettings
from runas_agent.sources import identitystore
from runas_agent.sources.identitystore import IdentityStoreSource, check_botocore

STORE = "d-1234567890"
REGION = "eu-west-1"


def user(n: int, **extra: Any) -> dict:
    return {"IdentityStoreId": STORE, "UserId": f"00000000-0000-4000-8000-{n:012d}", "UserName": f"u{n}", "UserStatus": "ENABLED", **extra}


def ok(key: str, records: list, token: str | None = None) -> dict:
    body = {key: records}
    if token:
        body["NextToken"] = token
    return body


def error(code: str, status: int = 400, message: str = "nope", **fields: Any) -> dict:
    return {"__error__": (code, status, message, fields)}


class Script:
    """Answers a botocore client's calls in order from a list of outcomes: a response body, an
    `error(...)`, or an exception to raise. Records (operation, params) of every call."""

    def __init__(self, client: Any, outcomes: list):
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, dict]] = []
        client.meta.events.register("before-call", self._answer)

    def _answer(self, model: Any, params: dict, **_: Any):
        self.calls.append((model.name, json.loads(params["body"] or b"{}")))
        if not self.outcomes:
            raise AssertionError(f"unexpected call {model.name}")
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        if "__error__" in outcome:
            code, status, message, fields = outcome["__error__"]
            parsed = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {}}, **fields}
            return types.SimpleNamespace(status_code=status, headers={}), parsed
        return types.SimpleNamespace(status_code=200, headers={}), dict(outcome, ResponseMetadata={"HTTPStatusCode": 200})

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def client(service: str = "identitystore") -> Any:
    return boto3.session.Session().client(
        service,
        region_name=REGION,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def time_() -> FakeTime:
    return FakeTime()


def source(outcomes: list, time_: FakeTime, *, store: str | None = STORE, sso: list | None = None, rng: float = 0.5, **kw: Any):
    ids = client()
    script = Script(ids, outcomes)
    sso_client = None
    sso_script = None
    if sso is not None:
        sso_client = client("sso-admin")
        sso_script = Script(sso_client, sso)
    src = IdentityStoreSource(
        ids, store, sso_admin=sso_client, sleep=time_.sleep, clock=time_.clock, rng=lambda: rng, **{"max_attempts": 4, "read_deadline": 600, **kw}
    )
    return src, script, sso_script


# -- complete reads ---------------------------------------------------------------------------------


def test_reads_every_page_with_extensions_and_no_per_user_calls(time_):
    group = {"IdentityStoreId": STORE, "GroupId": "g1", "DisplayName": "eng"}
    membership = {"IdentityStoreId": STORE, "MembershipId": "m1", "GroupId": "g1", "MemberId": {"UserId": user(1)["UserId"]}}
    src, script, _ = source(
        [
            ok("Users", [user(1), user(2)], "t1"),
            ok("Users", [user(3)], "t2"),
            ok("Users", [user(4, UserStatus="DISABLED")]),
            ok("Groups", [group]),
            ok("GroupMemberships", [membership]),
        ],
        time_,
    )
    fetched = src.fetch()
    assert [u.user_name for u in fetched.directory.users] == ["u1", "u2", "u3", "u4"]
    assert [u.enabled for u in fetched.directory.users] == [True, True, True, False]
    assert fetched.directory.members == {"g1": frozenset({user(1)["UserId"]})}
    assert script.ops() == ["ListUsers"] * 3 + ["ListGroups", "ListGroupMemberships"]
    first, second, third = (params for _, params in script.calls[:3])
    assert first == {"IdentityStoreId": STORE, "MaxResults": 100, "Extensions": ["aws:identitystore:enterprise"]}
    assert second["NextToken"] == "t1" and third["NextToken"] == "t2"
    assert script.calls[4][1]["GroupId"] == "g1"
    assert fetched.stats["calls"] == {"ListUsers": 3, "ListGroups": 1, "ListGroupMemberships": 1}
    assert fetched.stats["pages"] == fetched.stats["calls"]
    assert fetched.version == fetched.directory.digest()
    assert time_.sleeps == []


def test_unchanged_directory_returns_none_but_keeps_stats(time_):
    outcomes = [ok("Users", [user(1)]), ok("Groups", [])]
    src, _, _ = source(outcomes * 2, time_)
    first = src.fetch()
    assert src.fetch(known_version=first.version) is None
    assert src.last_stats["calls"] == {"ListUsers": 1, "ListGroups": 1}


def test_listing_order_does_not_change_the_version(time_):
    a, _, _ = source([ok("Users", [user(1), user(2)]), ok("Groups", [])], time_)
    b, _, _ = source([ok("Users", [user(2), user(1)]), ok("Groups", [])], time_)
    assert a.fetch().version == b.fetch().version


def test_timestamps_become_iso_strings_in_the_document(time_):
    created = datetime.datetime.fromtimestamp(1700000000, tz=datetime.timezone(datetime.timedelta(hours=2)))
    src, _, _ = source([ok("Users", [user(1, CreatedAt=created)]), ok("Groups", [])], time_)
    record = src.fetch().directory.users[0].record
    assert record["CreatedAt"] == "2023-11-14T22:13:20+00:00"


# -- retries ----------------------------------------------------------------------------------------


def test_retry_after_seconds_is_honoured_then_the_page_succeeds(time_):
    src, script, _ = source(
        [
            ok("Users", [user(1)], "t1"),
            error("ThrottlingException", RetryAfterSeconds=3),
            ok("Users", [user(2)]),
            ok("Groups", []),
        ],
        time_,
        rng=0.5,
    )
    fetched = src.fetch()
    assert len(fetched.directory.users) == 2
    # RetryAfterSeconds plus full jitter: rng 0.5 * min(20, 0.5 * 2**0)
    assert time_.sleeps == [3.25]
    assert script.calls[1][1]["NextToken"] == script.calls[2][1]["NextToken"] == "t1"
    assert fetched.stats["calls"]["ListUsers"] == 3 and fetched.stats["pages"]["ListUsers"] == 2
    assert fetched.stats["retries"] == 1


@pytest.mark.parametrize("rng", [0.0, 0.999])
def test_backoff_is_exponential_with_full_jitter_and_capped(time_, rng):
    failures = [error("InternalServerException", 500)] * 7
    src, _, _ = source(failures + [ok("Users", []), ok("Groups", [])], time_, rng=rng, max_attempts=8)
    src.fetch()
    caps = [min(20.0, 0.5 * 2**n) for n in range(7)]
    assert caps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0]
    assert time_.sleeps == pytest.approx([rng * cap for cap in caps])


@pytest.mark.parametrize(
    "failure, fragment",
    [
        (error("ThrottlingException", RetryAfterSeconds=1), "throttled (ThrottlingException"),
        (error("InternalServerException", 500), "server error (InternalServerException"),
        (error("ServiceUnavailable", 503), "server error"),
        (error("", 502), "server error (HTTP 502"),
        (ReadTimeoutError(endpoint_url="https://identitystore.eu-west-1.amazonaws.com/"), "timed out"),
        (EndpointConnectionError(endpoint_url="https://identitystore.eu-west-1.amazonaws.com/"), "connection failed"),
    ],
)
def test_a_page_failing_past_max_attempts_fails_the_read(time_, failure, fragment):
    src, script, _ = source([ok("Users", [user(1)], "t1"), ok("Users", [user(2)], "t2")] + [failure] * 3, time_, max_attempts=3)
    with pytest.raises(SourceError) as raised:
        src.fetch()
    message = str(raised.value)
    assert f"Identity Store {STORE}: ListUsers page 3" in message
    assert fragment in message
    assert "3 attempt(s) of 3 (source.max_attempts)" in message
    assert script.ops() == ["ListUsers"] * 5
    assert len(time_.sleeps) == 2


def test_a_retry_that_would_pass_the_deadline_is_not_attempted(time_):
    src, script, _ = source([error("ThrottlingException", RetryAfterSeconds=120)], time_, read_deadline=60)
    with pytest.raises(SourceError, match=r"ListUsers page 1: throttled .*would pass source.read_deadline \(60s\)"):
        src.fetch()
    assert time_.sleeps == [] and len(script.calls) == 1


def test_the_deadline_covers_the_whole_read(time_):
    outcomes = [ok("Users", [user(1)], "t1")] + [error("ThrottlingException", RetryAfterSeconds=20)] * 3 + [ok("Users", [])]
    src, _, _ = source(outcomes, time_, read_deadline=50, max_attempts=8, rng=0.0)
    with pytest.raises(SourceError, match="ListUsers page 2: throttled"):
        src.fetch()
    assert time_.sleeps == [20.0, 20.0]


# -- errors that are not retried ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "position, operation, action",
    [(0, "ListUsers", "identitystore:ListUsers"), (1, "ListGroups", "identitystore:ListGroups"), (2, "ListGroupMemberships", "identitystore:ListGroupMemberships")],
)
def test_access_denied_names_the_iam_action_and_managed_policy(time_, position, operation, action):
    answers = [ok("Users", [user(1)]), ok("Groups", [{"IdentityStoreId": STORE, "GroupId": "g1", "DisplayName": "eng"}])]
    denied = error("AccessDeniedException", message=f"User: arn:aws:sts::1:assumed-role/r/i is not authorized to perform: {action}")
    src, script, _ = source(answers[:position] + [denied], time_)
    with pytest.raises(SourceError) as raised:
        src.fetch()
    message = str(raised.value)
    assert f"{operation} page 1" in message
    assert f"needs {action}" in message and "AWSSSODirectoryReadOnly" in message
    assert len(script.calls) == position + 1 and time_.sleeps == []


def test_access_denied_by_kms_mentions_kms_decrypt(time_):
    src, _, _ = source([error("AccessDeniedException", message="KMS key access denied")], time_)
    with pytest.raises(SourceError, match="kms:Decrypt"):
        src.fetch()


@pytest.mark.parametrize(
    "failure, fragment",
    [
        (error("ValidationException", message="The pagination token is invalid or has expired"), "pagination token was rejected"),
        (error("ResourceNotFoundException", message="IDENTITY_STORE not found."), "source.identity_store_id"),
        (error("UnrecognizedClientException", message="The security token included in the request is invalid"), "credentials were rejected"),
        (error("ExpiredTokenException", message="expired"), "credentials were rejected"),
        (NoCredentialsError(), "no usable AWS credentials"),
    ],
)
def test_errors_that_retrying_cannot_fix_fail_at_once(time_, failure, fragment):
    src, script, _ = source([ok("Users", [user(1)], "t1"), failure], time_)
    with pytest.raises(SourceError) as raised:
        src.fetch()
    assert "ListUsers page 2" in str(raised.value) and fragment in str(raised.value)
    assert len(script.calls) == 2 and time_.sleeps == []


def test_a_repeated_next_token_fails_instead_of_looping(time_):
    src, _, _ = source([ok("Users", [user(1)], "same"), ok("Users", [user(2)], "same")], time_)
    with pytest.raises(SourceError, match="ListUsers page 3.*did not advance"):
        src.fetch()


# -- discovering the store ------------------------------------------------------------------------------


def instance(store: str) -> dict:
    return {"InstanceArn": f"arn:aws:sso:::instance/ssoins-{store[-10:]}", "IdentityStoreId": store, "Status": "ACTIVE"}


def test_the_store_id_is_discovered_with_list_instances(time_):
    src, script, sso = source([ok("Users", [user(1)]), ok("Groups", [])], time_, store=None, sso=[ok("Instances", [instance(STORE)])])
    fetched = src.fetch()
    assert fetched.directory.identity_store_id == STORE
    assert script.calls[0][1]["IdentityStoreId"] == STORE
    assert fetched.stats["calls"]["sso-admin:ListInstances"] == 1


@pytest.mark.parametrize(
    "answer, fragment",
    [
        (ok("Instances", []), "no IAM Identity Center instance"),
        (ok("Instances", [instance("d-1111111111"), instance("d-2222222222")]), "several Identity Stores (d-1111111111, d-2222222222)"),
        (error("AccessDeniedException"), "needs sso:ListInstances"),
    ],
)
def test_discovery_fails_clearly(time_, answer, fragment):
    src, script, _ = source([], time_, store=None, sso=[answer])
    with pytest.raises(SourceError) as raised:
        src.fetch()
    assert fragment in str(raised.value)
    assert "source.identity_store_id" in str(raised.value)
    assert script.calls == []


# -- configuration and the botocore guard ----------------------------------------------------------------


def source_cfg(**overrides: Any) -> SourceSettings:
    values = dict(type="identitystore", region=REGION, identity_store_id=STORE, max_attempts=5, connect_timeout=2,
                  read_timeout=3, read_deadline=90)
    values.update(overrides)
    return config.validate({"source": values, "run_as": {"expression": "${path:userName}"}}).source


def test_from_settings_switches_botocore_retries_off_and_applies_timeouts():
    src = IdentityStoreSource.from_settings(source_cfg(endpoint_url="http://127.0.0.1:9"))
    config = src._client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert (config.connect_timeout, config.read_timeout) == (2, 3)
    assert src._client.meta.endpoint_url == "http://127.0.0.1:9"
    assert src._client.meta.region_name == REGION
    assert (src.max_attempts, src.read_deadline, src.identity_store_id) == (5, 90, STORE)


def _without(member: str, where: str):
    original = botocore.loaders.Loader.load_service_model

    def load(self, service_name, type_name, api_version=None):
        model = original(self, service_name, type_name, api_version)
        if service_name == "identitystore" and type_name == "service-2":
            model = json.loads(json.dumps(model))
            model["shapes"][where]["members"].pop(member, None)
        return model

    return load


@pytest.mark.parametrize("member, shape, named", [("UserStatus", "User", "User.UserStatus"), ("Extensions", "ListUsersRequest", "ListUsers Extensions")])
def test_an_old_botocore_is_refused(monkeypatch, member, shape, named):
    import botocore

    monkeypatch.setattr(botocore.loaders.Loader, "load_service_model", _without(member, shape))
    with pytest.raises(SourceError) as raised:
        IdentityStoreSource.from_settings(source_cfg())
    message = str(raised.value)
    assert named in message and f"botocore>={identitystore.MIN_BOTOCORE}" in message and f"botocore {botocore.__version__}" in message


def test_the_installed_botocore_passes_the_guard():
    check_botocore()
    assert identitystore.MIN_BOTOCORE == "1.42.5"
