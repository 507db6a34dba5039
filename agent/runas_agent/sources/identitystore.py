"""Identity Store source (shell: talks to AWS): the whole directory in the fewest calls the API allows.

One read is ListUsers (with the enterprise extension, so no per-user DescribeUser is ever needed),
ListGroups, and ListGroupMemberships for each group, every listing through a botocore paginator to
its last page at MaxResults=100. botocore's own retries are switched off: each page is retried here,
so that a ThrottlingException's or InternalServerException's RetryAfterSeconds is honoured, backoff
is exponential with full jitter, and the whole read stays within `read_deadline`. A listing that does
not complete raises SourceError naming the call and page; a shorter directory is never returned.
"""

from __future__ import annotations

import datetime
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional

from runas_agent import aws, identitycenter
from runas_agent.directory import ENTERPRISE_EXTENSION, make_document, parse_document
from runas_agent.errors import SourceError
from runas_agent.schema import region as region_problem
from runas_agent.settings import SourceSettings
from runas_agent.sources import Fetched, Source, Step, register

#: The first botocore whose identitystore model has User.UserStatus and ListUsers(Extensions).
MIN_BOTOCORE = "1.42.5"
PAGE_SIZE = 100
#: Backoff before retry n (1-based) is RetryAfterSeconds (if given) plus a uniform draw in
#: [0, min(BACKOFF_CAP, BACKOFF_BASE * 2**(n-1))): "full jitter", so a fleet that was throttled
#: together does not come back together.
BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0
MANAGED_POLICY = "AWSSSODirectoryReadOnly"

_STORE_ID = re.compile(r"^d-[0-9a-f]{10}$|^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: IAM action behind each call, for access-denied messages.
_IAM_ACTION = {
    "ListUsers": "identitystore:ListUsers",
    "ListGroups": "identitystore:ListGroups",
    "ListGroupMemberships": "identitystore:ListGroupMemberships",
    "ListInstances": "sso:ListInstances",
}


def check_botocore(session: Any = None) -> None:
    """Refuse a botocore whose identitystore model lacks User.UserStatus or ListUsers' Extensions.

    Such a botocore parses the responses without those fields and drops them silently: every user
    would look enabled and every organization empty."""
    import botocore
    import botocore.session

    session = session or botocore.session.get_session()
    missing = []
    try:
        model = session.get_service_model("identitystore")
        if "UserStatus" not in model.shape_for("User").members:
            missing.append("User.UserStatus")
        if "Extensions" not in model.operation_model("ListUsers").input_shape.members:
            missing.append("ListUsers Extensions")
    except Exception as exc:  # an unknown service or a damaged data file: the same verdict
        missing.append(f"the identitystore service model ({exc})")
    if missing:
        raise SourceError(
            f"botocore {botocore.__version__} (at {botocore.__file__}) does not know {' or '.join(missing)}; "
            f"it would silently drop them. runas-agent needs botocore>={MIN_BOTOCORE} (and boto3>={MIN_BOTOCORE}), "
            "not the distribution's python3-botocore"
        )


@dataclass
class _Read:
    """Bookkeeping of one directory read: the deadline and what it cost."""

    started: float
    deadline: float
    calls: dict[str, int] = field(default_factory=dict)
    pages: dict[str, int] = field(default_factory=dict)
    #: seconds spent in the calls of each operation, retries and their waits included
    seconds: dict[str, float] = field(default_factory=dict)
    retries: int = 0
    slept: float = 0.0


@register
class IdentityStoreSource(Source[SourceSettings]):
    kind = "identitystore"
    summary = "the Identity Store, read through its API (the default)"
    needs_aws_credentials = True
    probes = ("botocore", "identitystore", "identitystore-fields")

    def __init__(
        self,
        identitystore: Any,
        identity_store_id: str | None = None,
        *,
        sso_admin: Any = None,
        region: str | None = None,
        max_attempts: int = 8,
        read_deadline: float = 600,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ):
        """`identitystore` (and `sso_admin`, needed only to discover the store id) are botocore clients
        with retries off; `sleep`, `clock` and `rng` are injectable for tests."""
        import botocore.session

        self._client = identitystore
        self._sso_admin = sso_admin
        self.identity_store_id = identity_store_id
        self.region = region or identitystore.meta.region_name
        self.max_attempts = max_attempts
        self.read_deadline = read_deadline
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        session = botocore.session.get_session()
        self._paginator_models = {
            "identitystore": session.get_paginator_model("identitystore"),
            "sso-admin": session.get_paginator_model("sso-admin"),
        }
        #: stats of the last completed read, also when fetch returned None (unchanged)
        self.last_stats: dict[str, Any] = {}

    @classmethod
    def check(cls, settings: SourceSettings, problems: list[str]) -> None:
        if not settings.region:
            problems.append("source.region: required for type identitystore (the Identity Center home region)")
        else:
            problem = region_problem(settings.region)
            if problem:
                problems.append(f"source.region: {problem}")
        if settings.identity_store_id is not None and not _STORE_ID.match(settings.identity_store_id):
            problems.append(f"source.identity_store_id: {settings.identity_store_id!r} is not an Identity Store id (d-xxxxxxxxxx)")

    @classmethod
    def from_settings(cls, settings: SourceSettings, *, session: Any = None, checkpoint: Optional[Callable[[], None]] = None,
                      nap: Optional[Callable[[float], None]] = None, **kwargs: Any) -> "IdentityStoreSource":
        """Build the source from the `source` settings. Credentials come from the default chain (the
        instance profile on EC2). endpoint_url, when set, serves sso-admin discovery too; when unset,
        boto3 itself honours AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_IDENTITYSTORE.

        For the service loop: `checkpoint` is called before every HTTP request (botocore's before-send
        event), so the watchdog sees a read that makes progress and never one stuck inside a request
        longer than the watchdog interval; backoffs sleep through `nap`. `kwargs` go to the
        constructor (sleep, clock, rng: for tests)."""
        check_botocore()
        if checkpoint is not None:
            import boto3

            hook = checkpoint
            session = session or boto3.session.Session(region_name=settings.region)
            # Clients copy the session's handlers when they are created.
            session.events.register("before-send", lambda **_: hook())
        if nap is not None:
            kwargs.setdefault("sleep", nap)
        # One HTTP attempt per call: the retry loop here honours RetryAfterSeconds and the deadline.
        identitystore = aws.client("identitystore", settings, session=session, attempts=1)
        sso_admin = None
        if not settings.identity_store_id:
            sso_admin = aws.client("sso-admin", settings, session=session, attempts=1)
        return cls(
            identitystore,
            settings.identity_store_id,
            sso_admin=sso_admin,
            region=settings.region,
            max_attempts=settings.max_attempts,
            read_deadline=settings.read_deadline,
            **kwargs,
        )

    @classmethod
    def origin(cls, settings: SourceSettings) -> str:
        return f"Identity Store {settings.identity_store_id or '(discovered)'} in {settings.region}"

    @classmethod
    def longest_step(cls, settings: SourceSettings) -> Step:
        # The service checks in before every request, and retries sleep through its naps: the
        # longest stretch without a proof of progress is one request.
        return Step(settings.connect_timeout + settings.read_timeout, "source.connect_timeout + source.read_timeout",
                    "one slow Identity Store response")

    def describe(self) -> str:
        return f"identitystore {self.identity_store_id or '(to be discovered)'} in {self.region}"

    # -- the read -----------------------------------------------------------------------------------

    def fetch(self, known_version: str | None = None) -> Fetched | None:
        """Read the whole directory. The Identity Store has no conditional read, so this always reads
        everything; it returns None when the result's digest equals `known_version`."""
        now = self._clock()
        read = _Read(started=now, deadline=now + self.read_deadline)
        store_id = self.identity_store_id or self._discover(read)
        base = {"IdentityStoreId": store_id, "MaxResults": PAGE_SIZE}

        users = self._list_all(read, "ListUsers", "Users", dict(base, Extensions=[ENTERPRISE_EXTENSION]))
        groups = self._list_all(read, "ListGroups", "Groups", dict(base))
        memberships: list[dict] = []
        for group in groups:
            group_id = group.get("GroupId")
            if not isinstance(group_id, str):
                continue  # parse_document reports the record
            memberships += self._list_all(
                read, "ListGroupMemberships", "GroupMemberships", dict(base, GroupId=group_id), f"group {group_id}"
            )

        # Sorted by id so that an unchanged directory always has the same digest, whatever order the
        # service lists it in.
        users.sort(key=lambda r: str(r.get("UserId")))
        groups.sort(key=lambda r: str(r.get("GroupId")))
        memberships.sort(key=lambda r: (str(r.get("GroupId")), str(r.get("MembershipId"))))
        directory = parse_document(make_document(store_id, users, groups, memberships), f"Identity Store {store_id}")
        version = directory.digest()
        self.last_stats = {
            "calls": dict(read.calls),
            "pages": dict(read.pages),
            "seconds_by_call": {op: round(t, 3) for op, t in read.seconds.items()},
            "retries": read.retries,
            "slept": round(read.slept, 3),
            "seconds": round(self._clock() - read.started, 3),
            "users": len(users),
            "groups": len(groups),
            "memberships": len(memberships),
        }
        if known_version == version:
            return None
        return Fetched(directory, version, dict(self.last_stats))

    def _discover(self, read: _Read) -> str:
        """The one Identity Store visible to sso-admin ListInstances in the configured region."""
        if self._sso_admin is None:
            raise SourceError("source.identity_store_id is not set and there is no sso-admin client to discover it")
        records = self._list_all(read, "ListInstances", "Instances", {}, service="sso-admin")
        instances = identitycenter.instances_from(records)
        store = identitycenter.discover(instances, self.region, "source.identity_store_id").identity_store_id
        self.identity_store_id = store
        return store

    def _list_all(
        self, read: _Read, operation: str, result_key: str, params: Mapping[str, Any], detail: str = "", service: str = "identitystore"
    ) -> list[dict]:
        """Every record of one listing, to its last page, or SourceError."""
        from botocore.exceptions import PaginationError
        from botocore.paginate import Paginator

        client = self._client if service == "identitystore" else self._sso_admin
        state = {"page": 1}
        method = self._retrying(read, client, operation, detail, state)
        paginator = Paginator(
            method,
            self._paginator_models[service].get_paginator(operation),
            client.meta.service_model.operation_model(operation),
        )
        records: list[dict] = []
        pages: Iterator[dict] = iter(paginator.paginate(**params))
        try:
            for page in pages:
                records.extend(_jsonable(record) for record in page.get(result_key) or [])
        except PaginationError as exc:
            raise SourceError(f"{self._where(operation, state['page'], detail)}: the listing did not advance ({exc})") from None
        return records

    def _retrying(self, read: _Read, client: Any, operation: str, detail: str, state: dict) -> Callable[..., dict]:
        """The client method for `operation`, retrying one page until it succeeds or the read fails."""
        from botocore.exceptions import BotoCoreError, ClientError

        method = getattr(client, _snake(operation))
        counter = operation if client is self._client else f"sso-admin:{operation}"

        def call(**kwargs: Any) -> dict:
            started = self._clock()
            try:
                return attempts(**kwargs)
            finally:
                read.seconds[counter] = read.seconds.get(counter, 0.0) + self._clock() - started

        def attempts(**kwargs: Any) -> dict:
            where = self._where(operation, state["page"], detail)
            attempt = 0
            while True:
                if self._clock() >= read.deadline:
                    raise SourceError(f"{where}: the read took longer than source.read_deadline ({self.read_deadline:g}s)")
                attempt += 1
                read.calls[counter] = read.calls.get(counter, 0) + 1
                try:
                    response = method(**kwargs)
                except (ClientError, BotoCoreError) as exc:
                    failure = aws.classify(exc)
                    if not failure.retryable:
                        raise SourceError(f"{where}: {failure}{self._advice(failure, operation)}") from None
                    if attempt >= self.max_attempts:
                        raise SourceError(
                            f"{where}: {failure}, {attempt} attempt(s) of {self.max_attempts} (source.max_attempts)"
                        ) from None
                    delay = self._delay(attempt, failure.retry_after)
                    if self._clock() + delay > read.deadline:
                        raise SourceError(
                            f"{where}: {failure}; waiting {delay:.1f}s more would pass source.read_deadline "
                            f"({self.read_deadline:g}s)"
                        ) from None
                    read.retries += 1
                    read.slept += delay
                    self._sleep(delay)
                    continue
                read.pages[counter] = read.pages.get(counter, 0) + 1
                state["page"] += 1
                return response

        return call

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        jitter = self._rng() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
        return (retry_after or 0.0) + jitter

    def _where(self, operation: str, page: int, detail: str) -> str:
        store = f"Identity Store {self.identity_store_id}" if operation != "ListInstances" else f"sso-admin in {self.region}"
        return f"{store}: {operation} page {page}" + (f" ({detail})" if detail else "")

    def _advice(self, failure: aws.Failure, operation: str) -> str:
        if failure.kind is aws.Kind.ACCESS_DENIED:
            action = _IAM_ACTION.get(operation, f"identitystore:{operation}")
            if operation == "ListInstances":
                return f". The instance role needs {action} to discover the store, or set source.identity_store_id"
            advice = (
                f". The instance role needs {action} (the AWS managed policy {MANAGED_POLICY} grants "
                "identitystore:List*, Describe* and GetUserId)"
            )
            if "kms" in failure.message.lower():
                advice += "; with a customer managed KMS key also kms:Decrypt through identitystore"
            return advice
        if failure.kind is aws.Kind.NOT_FOUND and operation in ("ListUsers", "ListGroups"):
            return ". Check source.identity_store_id and that source.region is the Identity Center home region"
        return ""


def _snake(operation: str) -> str:
    from botocore import xform_name

    return xform_name(operation)


def _jsonable(value: Any) -> Any:
    """A record as plain JSON values: botocore turns timestamps into datetimes; the document keeps
    them as ISO 8601 strings, as a directory file would."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.astimezone(datetime.timezone.utc).isoformat()
    return value
