"""The one reading of a failed AWS call: what it came to, whether it is worth retrying, and how it is
said. Real botocore exceptions, built the way botocore builds them."""

from __future__ import annotations

import pytest
from botocore.exceptions import (ClientError, ConnectTimeoutError, CredentialRetrievalError, EndpointConnectionError,
                                 NoCredentialsError, NoRegionError, ParamValidationError, ReadTimeoutError)

from runas_agent.aws import Kind, classify


def answer(code: str, message: str = "no", status: int = 400, body: dict | None = None, headers: dict | None = None,
           operation: str = "ListUsers") -> ClientError:
    response = {"Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}}, **(body or {})}
    return ClientError(response, operation)


@pytest.mark.parametrize("exc, kind, retryable, text", [
    (answer("ThrottlingException", "Rate exceeded"), Kind.THROTTLED, True, "throttled (ThrottlingException: Rate exceeded)"),
    (answer("SlowDown", status=503), Kind.THROTTLED, True, "throttled (SlowDown: no)"),
    (answer("InternalServerException", status=500), Kind.SERVER, True, "server error (InternalServerException: no)"),
    (answer("", "Bad Gateway", status=502), Kind.SERVER, True, "server error (HTTP 502: Bad Gateway)"),
    (answer("AccessDeniedException", "not allowed"), Kind.ACCESS_DENIED, False, "access denied (AccessDeniedException: not allowed)"),
    (answer("AccessDenied", status=403), Kind.ACCESS_DENIED, False, "access denied (AccessDenied: no)"),
    (answer("403", "Forbidden", status=403), Kind.ACCESS_DENIED, False, "access denied (403: Forbidden)"),
    (answer("ExpiredTokenException"), Kind.BAD_CREDENTIALS, False, "the AWS credentials were rejected (ExpiredTokenException: no)"),
    (answer("InvalidClientTokenId", status=403), Kind.BAD_CREDENTIALS, False, "the AWS credentials were rejected (InvalidClientTokenId: no)"),
    (answer("ValidationException", "Invalid pagination token"), Kind.BAD_TOKEN, False,
     "the pagination token was rejected, invalid or expired (ValidationException: Invalid pagination token)"),
    (answer("ValidationException", "MaxResults too big"), Kind.REFUSED, False, "refused (ValidationException: MaxResults too big)"),
    (answer("ResourceNotFoundException"), Kind.NOT_FOUND, False, "not found (ResourceNotFoundException: no)"),
    (answer("NoSuchKey", status=404, operation="GetObject"), Kind.NOT_FOUND, False, "not found (NoSuchKey: no)"),
    (NoCredentialsError(), Kind.NO_CREDENTIALS, False,
     "no usable AWS credentials (instance profile, environment or shared files): Unable to locate credentials"),
    (CredentialRetrievalError(provider="imds", error_msg="timeout"), Kind.NO_CREDENTIALS, False,
     "no usable AWS credentials (instance profile, environment or shared files): Error when retrieving credentials from imds: timeout"),
    (NoRegionError(), Kind.NO_REGION, False, "no region: You must specify a region."),
    (ReadTimeoutError(endpoint_url="https://x"), Kind.TIMEOUT, True, 'timed out (Read timeout on endpoint URL: "https://x")'),
    (ConnectTimeoutError(endpoint_url="https://x"), Kind.TIMEOUT, True, 'timed out (Connect timeout on endpoint URL: "https://x")'),
    (EndpointConnectionError(endpoint_url="https://x"), Kind.CONNECTION, True,
     'connection failed (Could not connect to the endpoint URL: "https://x")'),
    (ParamValidationError(report="bad"), Kind.OTHER, False, "ParamValidationError: Parameter validation failed:\nbad"),
    (ValueError("odd"), Kind.OTHER, False, "ValueError: odd"),
])
def test_classify(exc, kind, retryable, text):
    failure = classify(exc)
    assert (failure.kind, failure.retryable, str(failure)) == (kind, retryable, text)
    assert failure.answered == isinstance(exc, ClientError)


@pytest.mark.parametrize("exc, seconds", [
    (answer("ThrottlingException", status=400, body={"RetryAfterSeconds": 3}), 3.0),
    (answer("ThrottlingException", status=400, headers={"retry-after": "2.5"}), 2.5),
    (answer("InternalServerException", status=500, headers={"retry-after": "soon"}), None),
    (answer("ThrottlingException", status=400, body={"RetryAfterSeconds": -1}), None),
    (answer("AccessDeniedException", body={"RetryAfterSeconds": 3}), None),  # not retried at all
])
def test_retry_after_is_taken_from_the_body_or_the_header(exc, seconds):
    assert classify(exc).retry_after == seconds
