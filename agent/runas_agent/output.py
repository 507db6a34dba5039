"""Standard output and error as a command uses them: a reader that goes away (`| head`) does not
change what the command does or its exit status, and debug logs never carry credentials."""

from __future__ import annotations

import logging
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Iterator


class PipeSafe:
    """A text stream whose reader may leave. The first write to a closed pipe (EPIPE) points the
    file descriptor at /dev/null, and the command carries on: a sync that applied changes still
    exits with the status that says so, whoever stopped reading its output."""

    def __init__(self, stream: Any):
        self._stream = stream
        self.gone = False

    def _reader_left(self) -> None:
        self.gone = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError):  # a stream without a file descriptor
            return

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_left()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_left()
                self.flush_quietly()

    def flush_quietly(self) -> None:
        """Drain what is still buffered (into /dev/null once the reader left)."""
        try:
            self._stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    @property
    def buffer(self) -> "PipeSafe":
        return PipeSafe(self._stream.buffer) if hasattr(self._stream, "buffer") else self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextmanager
def pipe_safe() -> Iterator[None]:
    """sys.stdout and sys.stderr wrapped in PipeSafe for the duration."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafe(saved[0]), PipeSafe(saved[1])
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            stream.flush_quietly()
        sys.stdout, sys.stderr = saved


#: Names whose values are secrets wherever they appear in a log message: HTTP headers, query
#: parameters, JSON or Python dict keys (`'X-Amz-Security-Token': b'...'`, `"SecretAccessKey": "..."`,
#: `Signature=...`).
SECRET_NAMES = ("x-amz-security-token", "x-aws-ec2-metadata-token", "x-amz-signature", "x-amz-credential",
                "aws_session_token", "aws_secret_access_key", "secretaccesskey", "sessiontoken", "session_token",
                "secret_access_key", "token", "signature", "credential", "password")
_SECRET = re.compile(r"(?P<name>\b(?:" + "|".join(re.escape(n) for n in SECRET_NAMES) + r"))"
                     r"(?P<sep>['\"]?\s*[:=]\s*b?['\"]?)(?P<value>[^'\"\s,&}<>)\]]+)", re.IGNORECASE)
REDACTED = "<redacted>"


def redact(text: str) -> str:
    """`text` with the value of every credential-like name replaced by <redacted>."""
    return _SECRET.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)


#: Loggers whose every record is redacted (besides every DEBUG record).
CHATTY = ("botocore", "boto3", "urllib3", "s3transfer")


class RedactingFilter(logging.Filter):
    """A handler filter that redacts credentials from the message of each DEBUG record and each
    record of the AWS libraries (botocore logs whole requests, headers and all, at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and not record.name.startswith(CHATTY):
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it itself
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def redact_handlers(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
