"""AWS clients and errors (host side): one way to build a boto3 client from the `source` settings, and
one reading of what a failed call means.

`classify` is the only place that knows botocore's exceptions and the services' error codes: whether
a failure is worth retrying (throttling, 5xx, timeouts, dropped connections), a denial, rejected or
missing credentials, a missing resource. The sources, Identity Center and `doctor` all ask it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from runas_agent import __version__
from runas_agent.settings import SourceSettings

THROTTLING_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
                              "SlowDown"})
SERVER_CODES = frozenset({"InternalServerException", "InternalFailure", "ServiceUnavailable",
                          "ServiceUnavailableException"})
#: "403" is what S3 answers a HEAD request it denies (no body, so no code of its own)
ACCESS_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied", "403"})
BAD_CREDENTIALS_CODES = frozenset({"UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException",
                                   "ExpiredToken", "InvalidSignatureException", "SignatureDoesNotMatch",
                                   "IncompleteSignature"})
NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "NoSuchKey", "NoSuchBucket", "NotFound", "404"})


class Kind(enum.Enum):
    """What a failed AWS call came to."""

    THROTTLED = "throttled"
    SERVER = "server error"
    TIMEOUT = "timed out"
    CONNECTION = "connection failed"
    ACCESS_DENIED = "access denied"
    BAD_CREDENTIALS = "the AWS credentials were rejected"
    NO_CREDENTIALS = "no usable AWS credentials"
    NO_REGION = "no region"
    BAD_TOKEN = "the pagination token was rejected, invalid or expired"
    NOT_FOUND = "not found"
    #: any other answer of the service (a ClientError)
    REFUSED = "refused"
    #: an exception that is not a botocore one
    OTHER = "error"


_RETRYABLE = frozenset({Kind.THROTTLED, Kind.SERVER, Kind.TIMEOUT, Kind.CONNECTION})


@dataclass(frozen=True)
class Failure:
    """One failed call, classified."""

    kind: Kind
    #: the service's error code ("" when the service did not answer)
    code: str
    message: str
    #: HTTP status of the answer (0 when there was none)
    status: int = 0
    #: seconds the service asked to wait before a retry, if it said
    retry_after: Optional[float] = None
    #: the exception's class name
    exception: str = ""

    @property
    def retryable(self) -> bool:
        return self.kind in _RETRYABLE

    @property
    def answered(self) -> bool:
        """Whether the service answered (the failure is its error response)."""
        return bool(self.code or self.status)

    def __str__(self) -> str:
        """The failure in words: `access denied (AccessDeniedException: ...)`, `timed out (...)`."""
        if self.answered:
            return f"{self.kind.value} ({self.code or 'HTTP ' + str(self.status)}: {self.message})"
        if self.kind is Kind.NO_CREDENTIALS:
            return f"{self.kind.value} (instance profile, environment or shared files): {self.message}"
        if self.kind is Kind.NO_REGION:
            return f"{self.kind.value}: {self.message}"
        if self.kind is Kind.OTHER:
            return f"{self.exception}: {self.message}"
        return f"{self.kind.value} ({self.message})"


def client_error(exc: BaseException) -> tuple[str, str]:
    """(error code, message) of a botocore ClientError; ("", str(exc)) for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        error = response.get("Error", {}) or {}
        return str(error.get("Code", "")), str(error.get("Message", "")) or str(exc)
    return "", str(exc)


def classify(exc: BaseException) -> Failure:
    """What a failed boto3 call came to. Never raises."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return _classify_answer(exc)
    return Failure(_classify_transport(exc), "", str(exc), exception=type(exc).__name__)


#: the kind of an answer by its error code, where the code alone decides
_KIND_OF_CODE = {**{code: Kind.ACCESS_DENIED for code in ACCESS_DENIED_CODES},
                 **{code: Kind.BAD_CREDENTIALS for code in BAD_CREDENTIALS_CODES},
                 **{code: Kind.NOT_FOUND for code in NOT_FOUND_CODES}}


def _classify_answer(exc: Any) -> Failure:
    code, message = client_error(exc)
    status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    kind = _answer_kind(code, message, status)
    retry_after = _retry_after(exc.response) if kind in (Kind.THROTTLED, Kind.SERVER) else None
    return Failure(kind, code, message, status, retry_after, type(exc).__name__)


def _answer_kind(code: str, message: str, status: int) -> Kind:
    if code in THROTTLING_CODES:
        return Kind.THROTTLED
    if code in SERVER_CODES or status >= 500:
        return Kind.SERVER
    if code == "ValidationException" and "token" in message.lower():
        return Kind.BAD_TOKEN
    return _KIND_OF_CODE.get(code, Kind.REFUSED)


def _classify_transport(exc: BaseException) -> Kind:
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        HTTPClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return Kind.NO_CREDENTIALS
    if isinstance(exc, NoRegionError):
        return Kind.NO_REGION
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        return Kind.TIMEOUT
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return Kind.CONNECTION
    return Kind.OTHER


def _retry_after(response: Mapping[str, Any]) -> Optional[float]:
    """RetryAfterSeconds from the error body (a modelled field), else a Retry-After header."""
    headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    for value in (response.get("RetryAfterSeconds"), headers.get("retry-after")):
        try:
            seconds = float(str(value))
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


#: endpoint_url default: the source's endpoint_url
SOURCE_ENDPOINT: Any = object()


def client(service: str, source_cfg: SourceSettings, *, session: Any = None, region: Optional[str] = None,
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
