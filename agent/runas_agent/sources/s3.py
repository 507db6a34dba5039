"""S3 source: a directory document that one publisher (`runas-agent export --output s3://...`) writes
and a fleet reads, instead of every instance calling the Identity Store.

Every read is a conditional GET: the source keeps the ETag and directory of its last read and sends
If-None-Match, so an unchanged snapshot costs one small 304 response, not a download and a parse.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from runas_agent import aws
from runas_agent.errors import SourceError
from runas_agent.schema import OPT_STR, Key, region
from runas_agent.settings import SourceSettings
from runas_agent.sources import Fetched, Source, Step, register
from runas_agent.sources.file import parse_bytes

_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")
#: botocore's attempts per GetObject (its standard retry mode, backoff up to BACKOFF_CAP between them)
ATTEMPTS = 3
BACKOFF_CAP = 20.0


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


@dataclass(frozen=True)
class S3Settings(SourceSettings):
    #: s3://bucket/key of the directory document
    url: Optional[str]
    #: the bucket's region (source.region before this key existed)
    bucket_region: Optional[str]

    @property
    def effective_bucket_region(self) -> Optional[str]:
        """bucket_region, else source.region (where configurations written before bucket_region
        gave the bucket's region), else None (boto3's own default)."""
        return self.bucket_region or self.region


@register
class S3Source(Source[S3Settings]):
    kind = "s3"
    summary = "a directory document in S3 that a publisher writes with `runas-agent export --output s3://...`"
    keys = {
        "url": Key(OPT_STR, None, "type: s3: s3://bucket/key of the directory document; read with conditional GETs."),
        "bucket_region": Key(OPT_STR, None, "type: s3: the bucket's region. When unset, source.region is taken "
                                            "(configurations written before this key gave the bucket's region there); "
                                            "when both are set, source.region is only the Identity Center home region.",
                             check=region),
    }
    settings_class = S3Settings
    needs_aws_credentials = True

    def __init__(self, client: Any, url: str):
        self.client = client
        self.url = url
        self.bucket, self.key = split_url(url)
        self._last: Optional[Fetched] = None

    @classmethod
    def check(cls, settings: S3Settings, problems: list[str]) -> None:
        try:
            split_url(settings.url or "")
        except ValueError as exc:
            problems.append(f"source.url: required for type s3: {exc}")

    @classmethod
    def from_settings(cls, settings: S3Settings, *, session: Any = None, checkpoint: Optional[Callable[[], None]] = None,
                      nap: Optional[Callable[[float], None]] = None) -> "S3Source":
        assert settings.url is not None  # check() requires it
        client = aws.client("s3", settings, session=session, region=settings.effective_bucket_region, attempts=ATTEMPTS)
        return cls(client, settings.url)

    @classmethod
    def origin(cls, settings: S3Settings) -> str:
        return str(settings.url)

    @classmethod
    def longest_step(cls, settings: S3Settings) -> Step:
        seconds = ATTEMPTS * (settings.connect_timeout + settings.read_timeout) + (ATTEMPTS - 1) * BACKOFF_CAP
        return Step(seconds, f"{ATTEMPTS} attempts of source.connect_timeout + source.read_timeout, with up to "
                             f"{BACKOFF_CAP:g}s between them", "one slow S3 read")

    def describe(self) -> str:
        return self.url

    def fetch(self, known_version: Optional[str] = None) -> Optional[Fetched]:
        """The snapshot, read conditionally. Returns None when `known_version` is given and still
        current; with no version given, an unchanged snapshot is answered from the last read."""
        from botocore.exceptions import BotoCoreError, ClientError

        started = time.monotonic()
        etag = known_version or (self._last.version if self._last else None)
        request: dict[str, str] = {"Bucket": self.bucket, "Key": self.key}
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
