"""End to end: `runas-agent --once` reading the local Identity Store endpoint inside an isolated host.
A listing that fails part-way (throttled past every retry, 5xx, a stalled page) exits non-zero and
disables none of the accounts an earlier sync created. The safety limits on mass disables are opened
wide here, so only the source's refusal to return a shorter directory can keep the accounts."""

from __future__ import annotations

import hashlib

import pytest

from runas_agent.exitcodes import Exit
from tests.endpoint.directories import make_directory

pytest_plugins = ["tests.endpoint.fixtures"]
pytestmark = pytest.mark.host

USERS = 250  # three ListUsers pages; the accounts of pages 2 and 3 are what a partial read would lose


def configure(host, endpoint, **source):
    return host.write_config({
        "source": {"type": "identitystore", "region": endpoint.region, "identity_store_id": "d-1234567890",
                   "endpoint_url": endpoint.url, "max_attempts": 2, "read_timeout": 1, "read_deadline": 30, **source},
        "run_as": {"expression": "${path:userName}"},
        "safety": {"max_disable_fraction": 1.0, "max_disable_count": 100000},
    })


def etc_state(host) -> dict[str, str]:
    return {name: hashlib.sha256((host.etc / name).read_bytes()).hexdigest() for name in ("passwd", "shadow", "group", "gshadow")}


def names(first: int, last: int) -> list[str]:
    return [f"user{i:05d}" for i in range(first, last)]


@pytest.fixture
def synced(isolated_host, identitystore_endpoint):
    """A host where a first, complete sync created one account per user."""
    identitystore_endpoint.seed(make_directory(USERS, users_per_group=0))
    cfg = configure(isolated_host, identitystore_endpoint)
    first = isolated_host.agent("--config", str(cfg), "--once")
    assert first.returncode == Exit.OK, first.stdout + first.stderr
    assert set(names(0, USERS)) <= set(isolated_host.passwd())
    return isolated_host, identitystore_endpoint, cfg


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("throttle", dict(page=2, retry_after=0), "ListUsers page 2: throttled"),
        ("internal", dict(page=3), "ListUsers page 3: server error (InternalServerException"),
        ("unavailable", dict(page=2), "ListUsers page 2: server error"),
        ("stall", dict(page=3, seconds=5), "ListUsers page 3: timed out"),
    ],
)
def test_a_failed_listing_exits_non_zero_and_disables_nothing(synced, kind, options, message):
    host, endpoint, cfg = synced
    before = etc_state(host)
    ledger = host.ledger()
    endpoint.reset_calls()
    endpoint.inject("ListUsers", kind, **options)

    result = host.agent("--config", str(cfg), "--once")

    assert result.returncode == Exit.ERROR, result.stdout + result.stderr
    assert message in result.stderr
    assert endpoint.calls()["ListUsers"] == options["page"] - 1 + 2  # the pages before, then both attempts
    assert etc_state(host) == before
    assert host.ledger() == ledger
    for name in ("user00000", "user00150", "user00249"):
        assert host.id(name).returncode == 0, name
    assert not [n for n in host.passwd() if n.startswith("runas-off-")]


def test_the_same_host_does_disable_when_the_directory_really_shrinks(synced):
    """The control: with these settings a shorter directory is applied, so the test above would
    catch a source that returned one."""
    host, endpoint, cfg = synced
    endpoint.seed(make_directory(USERS - 20, users_per_group=0))
    result = host.agent("--config", str(cfg), "--once")
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert all(host.id(name).returncode != 0 for name in names(USERS - 20, USERS))
    assert host.id("user00000").returncode == 0
