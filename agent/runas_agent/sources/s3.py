"""S3 source: a directory document that one publisher (`runas-agent export --output s3://...`) writes
and a fleet reads, instead of every instance calling the Identity Store.

Every read is a conditional GET: the source keeps the ETag and directory of its last read and sends
If-None-Match, so an unchanged snapshot costs one small 304 response, not a download and a parse.
"""

from __future__ import annotations

import re
import time
from typing import Any

from runas_agent import aws
from runas_agent.errors import SourceError
from runas_agent.settings import SourceSettings
from runas_agent.sources import Fetched, Source
from runas_agent.sources.file import parse_bytes

_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of an s3://bucket/key URL; ValueError when it is not one."""
    match = _URL.match(url or "")
    if not match:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL")
    return match.group(1), match.group(2)


def _failure(url: str, call: str, exc: Exception, action: str) -> SourceError:
    failure = aws.classify(exc)
    if not failure.answered:
        return SourceError(f"{url}: {call}: {exc}")
    detail = f"{failure.code}: {failure.message}"
    if failure.kind is aws.Kind.ACCESS_DENIED:
        detail += f" (the instance role needs {action} on {url})"
    return SourceError(f"{url}: {call}: {detail}")


class S3Source(Source):
    kind = "s3"

    def __init__(self, client: Any, url: str):
        self.client = client
        self.url = url
        self.bucket, self.key = split_url(url)
        self._last: Fetched | None = None

    @classmethod
    def from_config(cls, source_cfg: SourceSettings, session: Any = None) -> "S3Source":
        assert source_cfg.url is not None  # the configuration requires it
        return cls(aws.client("s3", source_cfg, session=session), source_cfg.url)

    def describe(self) -> str:
        return self.url

    def fetch(self, known_version: str | None = None) -> Fetched | None:
        """The snapshot, read conditionally. Returns None when `known_version` is given and still
        current; with no version given, an unchanged snapshot is answered from the last read."""
        from botocore.exceptions import BotoCoreError, ClientError

        started = time.monotonic()
        etag = known_version or (self._last.version if self._last else None)
        request = {"Bucket": self.bucket, "Key": self.key}
        if etag:
            request["IfNoneMatch"] = etag
        try:
            response = self.client.get_object(**request)
            data = response["Body"].read()
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 304 and etag:
                if known_version is not None:
                    return None
                assert self._last is not None
                return Fetched(self._last.directory, self._last.version,
                               {"not_modified": True, "seconds": round(time.monotonic() - started, 3)})
            raise _failure(self.url, "GetObject", exc, "s3:GetObject") from None
        except BotoCoreError as exc:
            raise _failure(self.url, "GetObject", exc, "s3:GetObject") from None
        fetched = Fetched(parse_bytes(data, self.url), response["ETag"],
                          {"bytes": len(data), "not_modified": False, "seconds": round(time.monotonic() - started, 3)})
        self._last = fetched
        return fetched


def publish(client: Any, url: str, data: bytes) -> str:
    """Write a directory document to S3 (the publisher's side); returns the new ETag."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_url(url)
    try:
        response = client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
    except (ClientError, BotoCoreError) as exc:
        raise _failure(url, "PutObject", exc, "s3:PutObject") from None
    return response["ETag"]
