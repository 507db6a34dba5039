"""AWS clients (host side): one way to build a boto3 client from the `source` config section."""

from __future__ import annotations

from typing import Any, Mapping

from runas_agent import __version__
from runas_agent.settings import SourceSettings


def client_error(exc: Exception) -> tuple[str, str]:
    """(error code, message) of a botocore ClientError; ("", str(exc)) for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error", {}) or {}
        return str(error.get("Code", "")), str(error.get("Message", "")) or str(exc)
    return "", str(exc)


#: endpoint_url default: the source's endpoint_url
SOURCE_ENDPOINT: Any = object()


def client(service: str, source_cfg: SourceSettings, *, session: Any = None, region: str | None = None,
           endpoint_url: Any = SOURCE_ENDPOINT, attempts: int = 3, agent: str = "") -> Any:
    """A boto3 client for `service` with the configured timeouts. `region` defaults to the Identity
    Center home region (source.region) and `endpoint_url` to source.endpoint_url (None: no override); without one
    boto3 itself honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>. `attempts` is botocore's
    total_max_attempts (1 when the caller retries by itself)."""
    import boto3
    from botocore.config import Config

    region = region or source_cfg.region
    if endpoint_url is SOURCE_ENDPOINT:
        endpoint_url = source_cfg.endpoint_url
    config = Config(
        region_name=region,
        connect_timeout=source_cfg.connect_timeout,
        read_timeout=source_cfg.read_timeout,
        retries={"total_max_attempts": attempts, "mode": "standard"},
        user_agent_extra=f"runas-agent/{__version__}" + (f" {agent}" if agent else ""),
    )
    session = session or boto3.session.Session(region_name=region)
    return session.client(service, config=config, **({"endpoint_url": endpoint_url} if endpoint_url else {}))
