"""pytest fixtures for the local Identity Store endpoint.

Use from a test module with `pytest_plugins = ["tests.endpoint.fixtures"]`, or list it in the root
conftest's `pytest_plugins`."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.endpoint.server import Endpoint

REGION = "eu-west-1"


@pytest.fixture(scope="session")
def _identitystore_server() -> Iterator[Endpoint]:
    with Endpoint(region=REGION) as endpoint:
        yield endpoint


@pytest.fixture
def identitystore_endpoint(_identitystore_server: Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    """A running endpoint with an empty directory, no faults and zeroed counters; the test fails if
    any response it served did not match botocore's service model. boto3 gets dummy credentials
    and no AWS_ENDPOINT_URL from the environment."""
    endpoint = _identitystore_server
    endpoint.reset()
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_IDENTITYSTORE", "AWS_ENDPOINT_URL_SSO_ADMIN", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    yield endpoint
    endpoint.clear_faults()
    assert not endpoint.problems, "responses that do not match botocore's model:\n" + "\n".join(endpoint.problems)
