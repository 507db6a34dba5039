"""The fleet publisher (shell): `runas-agent publish` reads the directory once and writes the snapshot a
fleet of instances reads (`source.type: s3`), only when the directory changed.

One publish:
1. read the directory from the configured source (the Identity Store: one full listing, whatever the
   fleet's size), and with `run_as.expression: from-identity-center` the live expression;
2. project it (core/projection.py): every record, only the fields the fleet needs plus
   `publisher.fields`; refuse a read that dropped what the Identity Store always returns (the fleet
   would refuse it too);
3. its content digest: SHA-256 of the canonical document without GeneratedAt and Signature;
4. HeadObject on `publisher.url`: the published object's digest and GeneratedAt travel in its
   metadata (x-amz-meta-runas-agent-digest, -generated-at). Same digest and younger than
   `publisher.refresh_seconds`: done, no PutObject;
5. otherwise stamp GeneratedAt, sign with `publisher.signing_key` (KMS Sign of the digest, checked
   with the key's public half), and write the object once (PutObject, no SSE headers: the bucket's
   default key applies).

A HeadObject answered 403 (S3's answer for a missing object to a role without s3:ListBucket, as well
as for a denied read) or 404 cannot be compared with: the snapshot is written. Nothing is written
when the read, the projection or the signature fails: the fleet keeps the last snapshot.

`runas-agent publish --once` publishes once (waiting for a running publish on this host);
`runas-agent publish` is the service: daemon.Daemon's loop (watchdog, notify, backoff, reload),
publishing every `publisher.interval_seconds`, one journal record per publish.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from runas_agent import aws, config, daemon
from runas_agent.core.expression import parse
from runas_agent.core.projection import project
from runas_agent.directory import canonical, format_timestamp, parse_document, parse_timestamp
from runas_agent.errors import AgentError, ConfigError, LockBusyError, RefusedError, SourceError, UntrustedError
from runas_agent.events import PUBLISH, PUBLISH_FAILED, Priority, Record
from runas_agent.exitcodes import Exit
from runas_agent.host.lock import SyncLock
from runas_agent.identitycenter import resolve_run_as
from runas_agent.journal import Journal, journald_listening
from runas_agent.settings import Config
from runas_agent.sources import Source, make_source
from runas_agent.sources.admission import dropped_fields
from runas_agent.sources.s3 import publish as put_snapshot, split_url
from runas_agent.sources.signature import sign_with_kms, snapshot
from runas_agent.status import SyncStatus

#: the object's metadata (S3 keeps user metadata keys lower-case): what HeadObject compares
DIGEST_KEY = "runas-agent-digest"
GENERATED_AT_KEY = "runas-agent-generated-at"
LOCK_NAME = "publish.lock"


class PublishError(AgentError):
    """The snapshot could not be compared or written (the directory was read): nothing was written."""


def content_digest(document: dict[str, Any]) -> str:
    """`sha256:` and the hex SHA-256 of the canonical document without GeneratedAt and Signature."""
    body = {k: v for k, v in document.items() if k not in ("GeneratedAt", "Signature")}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


@dataclass(frozen=True)
class Published:
    """What one publish came to."""

    #: "published" or "unchanged"
    result: str
    url: str
    digest: str
    users: int
    groups: int
    #: why it was written: "first" (no object), "changed", "refresh" (older than refresh_seconds),
    #: "not compared" (HeadObject refused); "" when unchanged
    reason: str = ""
    #: GeneratedAt of the object now published (the new one, or the unchanged one's)
    generated_at: str = ""
    etag: str = ""
    #: the signing key's public fingerprint ("" when unsigned or unchanged)
    public_key: str = ""
    #: Identity Store calls (all pages, retries included) of the read
    identitystore_calls: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        if self.result == "unchanged":
            return (f"{self.url} unchanged ({self.digest[:19]}..., generated at {self.generated_at}): "
                    f"{self.users} users, {self.groups} groups, nothing written")
        signed = f", signed (public key {self.public_key})" if self.public_key else ", unsigned"
        return (f"{self.url} published ({self.reason}): {self.users} users, {self.groups} groups{signed}, "
                f"generated at {self.generated_at}, ETag {self.etag}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def needed_paths(cfg: Config) -> tuple[str, ...]:
    """The attribute paths the snapshot carries: those run_as.expression reads (the live one already
    resolved), and publisher.fields."""
    return tuple(sorted(set(parse(cfg.run_as.expression).paths) | set(cfg.publisher.fields)))


class Publisher:
    """One publish at a time, of `cfg`'s directory to `cfg.publisher.url`. The source, the S3 client,
    the signer and the clock are given (from_config builds the real ones)."""

    def __init__(self, cfg: Config, *, source: Source[Any], s3: Any,
                 signer: Optional[Callable[[Any], Any]] = None, clock: Callable[[], float] = time.time,
                 resolve: Callable[[Config], Config] = resolve_run_as):
        assert cfg.publisher.url is not None  # load() requires it
        self.cfg = cfg
        self.url = cfg.publisher.url
        self.bucket, self.key = split_url(self.url)
        self.source = source
        self.s3 = s3
        self.signer = signer
        self.clock = clock
        self.resolve = resolve

    @classmethod
    def from_config(cls, cfg: Config, *, source: Optional[Source[Any]] = None) -> "Publisher":
        """The real clients: S3 and KMS in their own regions (the bucket's: source.region; the key's:
        its ARN's), never through source.endpoint_url (AWS_ENDPOINT_URL_S3 / _KMS are honoured)."""
        return cls(cfg, source=source or make_source(cfg.source), s3=aws.client("s3", cfg.source, endpoint_url=None),
                   signer=kms_signer(cfg))

    def publish(self, progress: Optional[Callable[[], None]] = None) -> Published:
        """Read, compare, and write when the directory changed or the snapshot is due for a refresh.
        Raises SourceError (the read or its projection), RefusedError (an empty directory),
        PublishError (HeadObject, PutObject) or AgentError (signing); nothing is written then."""
        started = time.monotonic()
        # GeneratedAt says when the directory was read: from the start of the read, never later
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.timezone.utc)
        cfg = self.resolve(self.cfg)
        fetched = self.source.fetch()
        assert fetched is not None  # no known version was given
        if progress is not None:
            progress()
        origin = self.source.describe()
        problem = dropped_fields(fetched.directory, cfg.run_as.expression, origin)
        if problem:
            raise UntrustedError(problem.replace("Nothing was changed", "Nothing was published"))
        if cfg.safety.refuse_empty_directory and not fetched.directory.users:
            raise RefusedError(f"{origin}: the directory has no users at all: nothing was published (every instance "
                               "would refuse it: safety.refuse_empty_directory)")
        document = project(fetched.directory.document, needed_paths(cfg))
        directory = parse_document(document, f"the projected snapshot of {origin}")
        digest = content_digest(document)
        calls = sum((fetched.stats.get("calls") or {}).values())
        counts = dict(url=self.url, digest=digest, users=len(directory.users), groups=len(directory.groups),
                      identitystore_calls=calls)
        reason, published_at = self._compare(digest, now)
        if not reason:
            return Published("unchanged", generated_at=published_at, seconds=time.monotonic() - started, **counts)
        data, public_key = snapshot(directory, now, self.signer)
        if progress is not None:
            progress()
        generated_at = format_timestamp(now)
        try:
            etag = put_snapshot(self.s3, self.url, data, {DIGEST_KEY: digest, GENERATED_AT_KEY: generated_at})
        except SourceError as exc:
            raise PublishError(f"nothing was written: {exc}") from None
        return Published("published", reason=reason, generated_at=generated_at, etag=etag,
                         public_key=public_key.fingerprint if public_key else "",
                         seconds=time.monotonic() - started, **counts)

    def _compare(self, digest: str, now: datetime.datetime) -> tuple[str, str]:
        """(why the snapshot must be written, "" when it need not; the published GeneratedAt)."""
        metadata = self._head()
        if metadata is None:
            return "first", ""
        if metadata is False:
            return "not compared", ""
        published_at = metadata.get(GENERATED_AT_KEY, "")
        try:
            when = parse_timestamp(published_at, "GeneratedAt")
        except ValueError:
            return "changed", published_at
        if metadata.get(DIGEST_KEY) != digest:
            return "changed", published_at
        if (now - when).total_seconds() >= self.cfg.publisher.refresh_seconds:
            return "refresh", published_at
        return "", published_at

    def _head(self) -> Any:
        """The published object's metadata; None when there is none (404); False when S3 refused
        to say (403)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.s3.head_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            failure = aws.classify(exc)
            if failure.kind is aws.Kind.NOT_FOUND:
                return None
            if failure.kind is aws.Kind.ACCESS_DENIED:
                return False
            raise PublishError(f"nothing was written: {self.url}: HeadObject: {failure}") from None
        except BotoCoreError as exc:
            raise PublishError(f"nothing was written: {self.url}: HeadObject: {aws.classify(exc)}") from None
        return {str(k).lower(): str(v) for k, v in (response.get("Metadata") or {}).items()}


def kms_signer(cfg: Config) -> Optional[Callable[[Any], Any]]:
    """The KMS signer of publisher.signing_key (None without one): the key's region is its ARN's,
    else source.region."""
    key = cfg.publisher.signing_key
    if not key:
        return None
    parts = key.split(":")
    region = parts[3] if key.startswith("arn:") and len(parts) > 4 else None
    kms = aws.client("kms", cfg.source, region=region, endpoint_url=None)
    return lambda document: sign_with_kms(document, kms, key)


def lock_path(cfg: Config) -> str:
    """The publisher's own lock: publishes never overlap, and never wait for this host's syncs."""
    return os.path.join(cfg.state_dir, LOCK_NAME)


def load(path: str) -> Config:
    """The configuration, which must name where to publish."""
    cfg = config.load(path)
    if not cfg.publisher.url:
        raise ConfigError(["publisher.url: required for runas-agent publish: s3://bucket/key of the snapshot the "
                           "fleet reads (publisher.yaml's output SnapshotUrl)"], path)
    return cfg


# --------------------------------------------------------------------------------------------------
# journal records


def record(published: Optional[Published], cfg: Config, *, status: SyncStatus = SyncStatus.OK, error: str = "",
           seconds: float = 0.0, next_in: Optional[float] = None, attempt: int = 0) -> Record:
    """The journal record of one publish: PUBLISH (published or unchanged) or PUBLISH_FAILED."""
    fields: dict[str, Any] = {"PUBLISH_URL": cfg.publisher.url, "PUBLISH_SOURCE": cfg.source.type,
                              "PUBLISH_NEXT_SECONDS": None if next_in is None else f"{next_in:.0f}"}
    if published is None:
        fields.update(PUBLISH_RESULT=status.value, PUBLISH_SECONDS=f"{seconds:.3f}", PUBLISH_ERROR=error,
                      PUBLISH_ATTEMPT=str(attempt) if attempt else None)
        retry = f"; retry in {next_in:.0f}s" if next_in is not None else ""
        what = {SyncStatus.BUSY: "postponed", SyncStatus.ABANDONED: "abandoned at a safe point, nothing was written"
                }.get(status, "failed, nothing was written")
        return Record.of(PUBLISH_FAILED, status.priority, f"publish {what}: {error}{retry}", **fields)
    fields.update(PUBLISH_RESULT=published.result, PUBLISH_REASON=published.reason or None,
                  PUBLISH_DIGEST=published.digest, PUBLISH_GENERATED_AT=published.generated_at or None,
                  PUBLISH_ETAG=published.etag or None, PUBLISH_PUBLIC_KEY=published.public_key or None,
                  PUBLISH_USERS=published.users, PUBLISH_GROUPS=published.groups,
                  PUBLISH_IDENTITYSTORE_CALLS=published.identitystore_calls,
                  PUBLISH_SECONDS=f"{published.seconds:.3f}")
    return Record.of(PUBLISH, Priority.INFO, published.summary(), **fields)


# --------------------------------------------------------------------------------------------------
# the service


@dataclass
class PublishReport(daemon.Report):
    published: Optional[Published] = None

    def summary(self) -> str:
        if self.published is not None:
            return self.published.summary()
        return super().summary()


class PublishDaemon(daemon.Daemon):
    """The publisher's service: the sync loop's machinery (READY after the first publish, watchdog
    pings from the read, backoff after failures, SIGHUP reload, SIGTERM at a safe point), publishing
    every publisher.interval_seconds."""

    work = "publish"

    def __init__(self, config_path: str, cfg: Config, *,
                 publisher_factory: Optional[Callable[..., Publisher]] = None, **kwargs: Any):
        kwargs.setdefault("watcher_factory", lambda _cfg: None)  # sessions are the instances' business
        kwargs.setdefault("load_config", load)
        super().__init__(config_path, cfg, sync_fn=self._publish, **kwargs)
        self.publisher_factory = publisher_factory or Publisher.from_config

    def _publish(self, cfg: Config, *, source: Any, progress: Callable[[], None]) -> Published:
        return self.publisher_factory(cfg, source=source).publish(progress)

    def lock_path(self) -> str:
        return lock_path(self.cfg)

    def interval(self) -> float:
        return self.cfg.publisher.interval_seconds

    def _report(self, result: Any, seconds: float) -> PublishReport:
        return PublishReport(SyncStatus.OK, seconds, published=result)

    def _journal_abandoned(self, seconds: float) -> None:
        self.journal.write(record(None, self.cfg, status=SyncStatus.ABANDONED, seconds=seconds,
                                  error="the service is stopping"))

    def _journal_sync(self, report: daemon.Report) -> None:
        published = getattr(report, "published", None)
        self.journal.write(record(published, self.cfg, status=report.status, error=report.error,
                                  seconds=report.seconds, next_in=report.next_in, attempt=self.failures))


# --------------------------------------------------------------------------------------------------
# command line


def once(args: Any) -> Exit:
    """`runas-agent publish --once`: one publish, after any running one on this host (up to --wait)."""
    cfg = load(args.config)
    journal = Journal(echo=False) if journald_listening() else None
    started = time.monotonic()
    try:
        with SyncLock(lock_path(cfg), wait=args.wait):
            published = Publisher.from_config(cfg).publish()
    except AgentError as exc:
        if journal is not None and not isinstance(exc, ConfigError):
            status = SyncStatus.BUSY if isinstance(exc, LockBusyError) else SyncStatus.FAILED
            journal.write(record(None, cfg, status=status, error=str(exc), seconds=time.monotonic() - started))
        raise
    if journal is not None:
        journal.write(record(published, cfg))
    if args.json:
        json.dump(published.to_json(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(published.summary())
    return Exit.OK


def main(args: Any) -> Exit:
    if args.once:
        return once(args)
    return daemon.main(args, PublishDaemon, load)


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "publish", help="publish the directory snapshot a fleet reads (publisher.url): as a service, or once with --once")
    p.add_argument("--once", action="store_true", help="publish once and exit (0: published or unchanged)")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="with --once: how long to wait for a running publish to finish (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="with --once: machine-readable output")
    p.set_defaults(func=main, needs_config=False)
