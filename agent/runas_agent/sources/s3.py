"""S3 source: a directory document that one publisher (`runas-agent export --output s3://... --signing-key
KEY`) writes and a fleet reads, instead of every instance calling the Identity Store.

Every read is a conditional GET: the source keeps the ETag and directory of its last read and sends
If-None-Match, so an unchanged snapshot costs one small 304 response, not a download and a parse.

What an object must prove before it is believed, in order (document.py has the rest):
1. the bucket is `source.bucket_owner`'s: every GetObject sends ExpectedBucketOwner, and S3 itself
   refuses (403) when the bucket belongs to another account, as a deleted bucket's re-registered
   name would;
2. with `source.sse_kms_key_id`: S3 encrypted it with that KMS key (the response's SSEKMSKeyId),
   which only principals allowed to use the key can have done;
3. its size (ContentLength, then the bytes actually read) is within `source.max_document_bytes`;
4. JSON, the publisher's signature, IdentityStoreId and GeneratedAt signed, `source.identity_store_id`;
5. fresh: GeneratedAt at most `source.max_age` ago, checked at every read, a 304 included, so a
   publisher that stopped publishing is noticed even though the object did not change.
Any failure is an UntrustedError (a SourceError): nothing changes on the host.
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from runas_agent import aws
from runas_agent.directory import Directory
from runas_agent.errors import SourceError, UntrustedError
from runas_agent.schema import NUM, OPT_STR, Key, positive, region
from runas_agent.sources import Fetched, Source, Step, register
from runas_agent.sources.document import DOCUMENT_KEYS, DocumentSettings, Trust, fresh, read_capped

_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$")
#: botocore's attempts per GetObject (its standard retry mode, backoff up to BACKOFF_CAP between them)
ATTEMPTS = 3
BACKOFF_CAP = 20.0
#: One day: a publisher refreshes the snapshot well within it (docs/design.md, "Fleet snapshots").
MAX_AGE = 86400


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of an s3://bucket/key URL; ValueError when it is not one."""
    match = _URL.match(url or "")
    if not match:
        raise ValueError(f"{url!r} is not an s3://bucket/key URL: {_url_problem(url or '')}")
    return match.group(1), match.group(2)


def _url_problem(url: str) -> str:
    """Why `url` is not an s3://bucket/key URL, in words."""
    if not url.startswith("s3://"):
        return "it does not start with s3://"
    bucket, _, key = url[len("s3://"):].partition("/")
    if not 3 <= len(bucket) <= 63:
        return f"a bucket name has 3 to 63 characters, {bucket!r} has {len(bucket)}"
    if not re.fullmatch(r"[a-z0-9.-]+", bucket):
        return f"a bucket name has only lowercase letters, digits, dots and hyphens, not {bucket!r}"
    if not (bucket[0].isalnum() and bucket[-1].isalnum()):
        return f"a bucket name begins and ends with a letter or digit, not {bucket!r}"
    if not key:
        return "there is no object key after the bucket name"
    return "it is not one"


def _account(value: Any) -> Optional[str]:
    return None if _ACCOUNT.match(value) else f"{value!r} is not an AWS account id (12 digits, quoted in YAML)"


def _key_arn(value: Any) -> Optional[str]:
    return None if _KEY_ARN.match(value) else (f"{value!r} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID: "
                                               "S3 names the key by its ARN, never by an alias)")


def _failure(url: str, call: str, exc: Exception, action: str, owner: Optional[str] = None) -> SourceError:
    failure = aws.classify(exc)
    if not failure.answered:
        return SourceError(f"{url}: {call}: {exc}")
    detail = f"{failure.code}: {failure.message}"
    if failure.kind is aws.Kind.ACCESS_DENIED:
        detail += f" (the instance role needs {action} on {url}"
        detail += f"; S3 also refuses when the bucket is not source.bucket_owner's, {owner})" if owner else ")"
    return SourceError(f"{url}: {call}: {detail}")


@dataclass(frozen=True)
class S3Settings(DocumentSettings):
    #: s3://bucket/key of the directory document
    url: Optional[str]
    #: the bucket's region (source.region before this key existed)
    bucket_region: Optional[str]
    #: the account that owns the bucket (ExpectedBucketOwner)
    bucket_owner: Optional[str]
    #: the KMS key S3 must have encrypted the object with (its ARN), if set
    sse_kms_key_id: Optional[str]
    #: seconds a snapshot is believed after its GeneratedAt
    max_age: float

    @property
    def effective_bucket_region(self) -> Optional[str]:
        """bucket_region, else source.region (where configurations written before bucket_region
        gave the bucket's region), else None (boto3's own default)."""
        return self.bucket_region or self.region


@register
class S3Source(Source[S3Settings]):
    kind = "s3"
    listed = 1
    summary = "a signed directory document in S3 that a publisher writes with `runas-agent export --output s3://...`"
    keys = {
        "url": Key(OPT_STR, None, "type: s3: s3://bucket/key of the directory document; read with conditional GETs."),
        "bucket_region": Key(OPT_STR, None, "type: s3: the bucket's region. When unset, source.region is taken "
                                            "(configurations written before this key gave the bucket's region there); "
                                            "when both are set, source.region is only the Identity Center home region.",
                             check=region),
        "bucket_owner": Key(OPT_STR, None, "type: s3 (required): the account id that owns the bucket, sent as "
                                           "ExpectedBucketOwner with every read: S3 refuses when the bucket is another "
                                           "account's (publisher.yaml's output SnapshotBucketOwner).", check=_account),
        "sse_kms_key_id": Key(OPT_STR, None, "type: s3: the ARN of the KMS key S3 must have encrypted the snapshot "
                                             "with (the response's SSEKMSKeyId); unset: not checked.", check=_key_arn),
        "max_age": Key(NUM, MAX_AGE, "type: s3: seconds a snapshot is believed after its GeneratedAt. An older one "
                                     "(a 304 included: a publisher that stopped) is refused and nothing changes.",
                       check=positive),
        **DOCUMENT_KEYS,
    }
    settings_class = S3Settings
    needs_aws_credentials = True

    def __init__(self, client: Any, settings: S3Settings, clock: Callable[[], float] = time.time):
        assert settings.url is not None  # check() requires it
        self.client = client
        self.url = settings.url
        self.bucket, self.key = split_url(settings.url)
        self.bucket_owner = settings.bucket_owner
        self.sse_kms_key_id = settings.sse_kms_key_id
        self.max_age = settings.max_age
        self.trust = Trust.from_settings(settings)
        self._clock = clock
        self._last: Optional[Fetched] = None

    @classmethod
    def check(cls, settings: S3Settings, problems: list[str]) -> None:
        try:
            split_url(settings.url or "")
        except ValueError as exc:
            problems.append(f"source.url: required for type s3: {exc}")
        if not settings.bucket_owner:
            problems.append("source.bucket_owner: required for type s3: the account id that owns the bucket "
                            "(publisher.yaml's output SnapshotBucketOwner)")
        if not settings.signing_public_key:
            problems.append("source.signing_public_key: required for type s3: the publisher's signing key, from "
                            "`aws kms get-public-key` (see docs/deploy-aws.md)")

    @classmethod
    def from_settings(cls, settings: S3Settings, *, session: Any = None, checkpoint: Optional[Callable[[], None]] = None,
                      nap: Optional[Callable[[float], None]] = None) -> "S3Source":
        client = aws.client("s3", settings, session=session, region=settings.effective_bucket_region, attempts=ATTEMPTS)
        return cls(client, settings)

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
        """The snapshot, read conditionally and checked. Returns None when `known_version` is given
        and still current; with no version given, an unchanged snapshot is answered from the last
        read. Either way a snapshot older than source.max_age is refused."""
        from botocore.exceptions import BotoCoreError, ClientError

        started = time.monotonic()
        last = self._last if self._last and known_version in (None, self._last.version) else None
        try:
            response = self.client.get_object(**self._request(last))
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 304 and last is not None:
                return self._unchanged(last, known_version, started)
            raise _failure(self.url, "GetObject", exc, "s3:GetObject", self.bucket_owner) from None
        except BotoCoreError as exc:
            raise _failure(self.url, "GetObject", exc, "s3:GetObject") from None
        directory, size = self._read(response)
        self._fresh(directory)
        fetched = Fetched(directory, response["ETag"],
                          {"bytes": size, "not_modified": False, "seconds": round(time.monotonic() - started, 3)})
        self._last = fetched
        return None if known_version == fetched.version else fetched

    def _request(self, last: Optional[Fetched]) -> dict[str, str]:
        request = {"Bucket": self.bucket, "Key": self.key}
        if self.bucket_owner:
            request["ExpectedBucketOwner"] = self.bucket_owner
        if last is not None:
            request["IfNoneMatch"] = last.version
        return request

    def _unchanged(self, last: Fetched, known_version: Optional[str], started: float) -> Optional[Fetched]:
        """A 304: the last snapshot, unless it has grown too old meanwhile."""
        self._fresh(last.directory)
        if known_version is not None:
            return None
        return Fetched(last.directory, last.version, {"not_modified": True, "seconds": round(time.monotonic() - started, 3)})

    def _read(self, response: dict) -> tuple[Directory, int]:
        """The directory in a GetObject response, after its encryption and size are checked."""
        from botocore.exceptions import BotoCoreError

        body = response["Body"]
        try:
            self._check_encryption(response)
            length = response.get("ContentLength") or 0
            if length > self.trust.max_bytes:
                raise self.trust.too_large(length, self.url)
            data = read_capped(body, self.trust.max_bytes)
        except BotoCoreError as exc:
            raise _failure(self.url, "GetObject", exc, "s3:GetObject") from None
        finally:
            body.close()
        return self.trust.read(data, self.url), len(data)

    def _check_encryption(self, response: dict) -> None:
        if not self.sse_kms_key_id:
            return
        used = response.get("SSEKMSKeyId")
        if response.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse") or used != self.sse_kms_key_id:
            what = f"the KMS key {used}" if used else f"{response.get('ServerSideEncryption') or 'no'} server-side encryption"
            raise UntrustedError(f"{self.url}: encrypted with {what}, not source.sse_kms_key_id "
                                 f"{self.sse_kms_key_id}: it was not written by a principal allowed to use that key")

    def _fresh(self, directory: Directory) -> None:
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.timezone.utc)
        fresh(directory, self.url, self.max_age, now)


def publish(client: Any, url: str, data: bytes, metadata: Optional[dict[str, str]] = None) -> str:
    """Write a directory document to S3 (the publisher's side), with `metadata` (x-amz-meta-*) when
    given; returns the new ETag."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_url(url)
    extra = {"Metadata": dict(metadata)} if metadata else {}
    try:
        response = client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json", **extra)
    except (ClientError, BotoCoreError) as exc:
        raise _failure(url, "PutObject", exc, "s3:PutObject") from None
    return response["ETag"]
