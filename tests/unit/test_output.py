"""Output that outlives its reader, and debug logs without credentials."""

import io
import logging
import os

from runas_agent.output import REDACTED, PipeSafe, RedactingFilter, redact

# What botocore logs at DEBUG for one request (botocore.endpoint "Sending http request").
BOTOCORE_LINE = ("Sending http request: <AWSPreparedRequest stream_output=False, method=POST, url=https://identitystore."
                 "us-east-1.amazonaws.com/, headers={'X-Amz-Target': b'AWSIdentityStore.ListUsers', "
                 "'X-Amz-Date': b'20260101T000000Z', 'X-Amz-Security-Token': b'FQoGZXIvYXdzSECRET', "
                 "'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/identitystore/"
                 "aws4_request, SignedHeaders=host;x-amz-date, Signature=0123abcdef'}>")


def test_tokens_signatures_and_secrets_are_redacted():
    out = redact(BOTOCORE_LINE)
    for secret in ("FQoGZXIvYXdzSECRET", "AKIAIOSFODNN7EXAMPLE", "0123abcdef"):
        assert secret not in out
    assert "'X-Amz-Target': b'AWSIdentityStore.ListUsers'" in out and out.count(REDACTED) == 3
    assert redact('{"SecretAccessKey": "abc/def", "Token": "xyz"}') == f'{{"SecretAccessKey": "{REDACTED}", "Token": "{REDACTED}"}}'
    assert "X-Amz-Signature=<redacted>&" in redact("https://b.s3.amazonaws.com/k?X-Amz-Signature=ff00&X-Amz-Expires=60")


def test_the_filter_redacts_debug_and_aws_library_records_only():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("botocore.test_output")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.debug("%s", BOTOCORE_LINE)
        logging.getLogger("runas_agent.test_output").addHandler(handler)
        logging.getLogger("runas_agent.test_output").warning("snapshot signature: %s", "valid")
    finally:
        logger.removeHandler(handler)
        logging.getLogger("runas_agent.test_output").removeHandler(handler)
    assert "FQoGZXIvYXdzSECRET" not in stream.getvalue()
    assert "snapshot signature: valid" in stream.getvalue()


def test_a_reader_that_left_turns_output_into_nothing_not_an_error():
    read, write = os.pipe()
    os.close(read)
    stream = PipeSafe(io.TextIOWrapper(io.FileIO(write, "w"), write_through=True))
    assert stream.write("line\n") == 5 and stream.gone
    stream.write("x" * 100_000)
    stream.flush()
    assert os.readlink(f"/proc/self/fd/{write}") == os.devnull
    stream.close()
