"""Identity Store source (shell: talks to AWS): the whole directory in the fewest calls the API allows.

One read is ListUsers (with the enterprise extension, so no per-user DescribeUser is ever needed),
ListGroups, and ListGroupMemberships for each group, every listing through a botocore paginator to
its last page at MaxResults=100. botocore's own retries are switched off: each page is retried here,
so that a ThrottlingException's or InternalServerException's RetryAfterSeconds is honoured, backoff
is exponential with full jitter, and the whole read stays within `read_deadline`. A listing that does
not complete raises SourceError naming the call and page; a shorter directory is never returned.

`doctor` probes this type with the checks declared here (`probes`): botocore's model, one page of each
listing (each denied IAM action named), and whether UserStatus and Extensions arrive.
"""

from __future__ import annotations

import datetime
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple

from runas_agent import aws, identitycenter
from runas_agent.core.expression import parse as parse_expression
from runas_agent.directory import ENTERPRISE_EXTENSION, make_document, parse_document
from runas_agent.doctor.check import Check, Fact, Facts, Need, Verdict, failed, ok, warning
from runas_agent.doctor.facts import CONFIG, CREDENTIALS, EXPRESSION, SOURCE_ANSWERS, source_is
from runas_agent.errors import SourceError
from runas_agent.schema import region as region_problem
from runas_agent.settings import SourceSettings
from runas_agent.sources import Fetched, Source, Step, register

if TYPE_CHECKING:
    from runas_agent.doctor.env import Env

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


# -- what `doctor` probes of this type ------------------------------------------------------------
#
# Beyond reading the directory (the `identities` check does that for every type): that botocore knows
# the fields the sync relies on, that one page of each listing is allowed, and that UserStatus and
# Extensions arrive on the wire and survive botocore's parsing. Each probe reads through the doctor's
# environment; the verdicts are pure.

IDENTITY_STORE = source_is("identitystore")


@dataclass(frozen=True)
class FirstPage:
    """One ListUsers page as it came over the wire (`raw`) and as botocore parsed it (`parsed`)."""

    raw: Tuple[Mapping[str, Any], ...]
    parsed: Tuple[Mapping[str, Any], ...]


FIRST_PAGE: Fact[FirstPage] = Fact("the first ListUsers page", "the Identity Store is not readable")


@dataclass(frozen=True)
class Answer:
    """One probe call: the operation and its response, or how it failed."""

    operation: str
    response: Mapping[str, Any] = field(default_factory=dict)
    failure: Optional[aws.Failure] = None


class BotocoreProbe(Check):
    name = "botocore"
    needs = (CONFIG, Need(IDENTITY_STORE, "{reason}: no Identity Store calls"))

    def run(self, facts: Facts, env: "Env") -> Verdict:
        import botocore

        try:
            check_botocore(env.session(facts[CONFIG])._session)
        except SourceError as exc:
            return failed(str(exc), "install botocore>=1.43 and boto3>=1.43 into runas-agent's own environment "
                                    "(the package's virtualenv), not python3-botocore")
        return ok(f"botocore {botocore.__version__} knows User.UserStatus and ListUsers Extensions")


class StoreProbe(Check):
    """One page of ListUsers, ListGroups and ListGroupMemberships: reachable, and each denied IAM action named."""

    name = "identitystore"
    needs = (CONFIG, Need(IDENTITY_STORE, "{reason} (the directory comes from {origin})"), CREDENTIALS)
    provides = (FIRST_PAGE, SOURCE_ANSWERS)
    absent = {SOURCE_ANSWERS: "the Identity Store is not readable (see identitystore)"}

    def run(self, facts: Facts, env: "Env") -> Verdict:
        cfg, principal = facts[CONFIG], facts[CREDENTIALS]
        source = cfg.source
        store = source.identity_store_id
        if not store:
            sso_admin = env.client(cfg, "sso-admin", source.region, source.endpoint_url)
            try:
                instances = identitycenter.list_instances(sso_admin)
                store = identitycenter.discover(instances, source.region, "source.identity_store_id").identity_store_id
            except identitycenter.IdentityCenterError as exc:
                return undiscovered(exc, principal)
        answers, raw_users = probe_store(env.client(cfg, "identitystore", source.region, source.endpoint_url), store)
        return store_verdict(answers, raw_users, f"Identity Store {store} in {source.region}", str(source.region), principal)


def probe_store(client: Any, store: str) -> tuple[list[Answer], list[Mapping[str, Any]]]:
    """The first page of each listing until one fails other than by a denial, and the ListUsers page
    as it came over the wire."""
    from botocore.exceptions import BotoCoreError, ClientError

    raw: dict[str, Any] = {}

    def keep_raw(http_response: Any = None, **_: Any) -> None:
        if http_response is not None and http_response.status_code == 200:
            try:
                raw["ListUsers"] = json.loads(http_response.content or b"{}")
            except ValueError:
                raw["ListUsers"] = {}

    client.meta.events.register("after-call.identitystore.ListUsers", keep_raw)
    list_users: dict[str, Any] = {"IdentityStoreId": store, "MaxResults": PAGE_SIZE}
    if "Extensions" in client.meta.service_model.operation_model("ListUsers").input_shape.members:
        list_users["Extensions"] = [ENTERPRISE_EXTENSION]
    calls: list[tuple[str, dict[str, Any]]] = [("ListUsers", list_users),
                                               ("ListGroups", {"IdentityStoreId": store, "MaxResults": PAGE_SIZE})]
    answers: list[Answer] = []
    for operation, params in calls:  # ListGroups' first group adds its memberships
        try:
            response = getattr(client, _snake(operation))(**params)
        except (ClientError, BotoCoreError) as exc:
            failure = aws.classify(exc)
            answers.append(Answer(operation, failure=failure))
            if failure.kind is aws.Kind.ACCESS_DENIED:
                continue
            break
        answers.append(Answer(operation, response))
        if operation == "ListGroups" and response.get("Groups"):
            calls.append(("ListGroupMemberships", {"IdentityStoreId": store, "GroupId": response["Groups"][0].get("GroupId"),
                                                   "MaxResults": PAGE_SIZE}))
    return answers, list(raw.get("ListUsers", {}).get("Users") or [])


def undiscovered(exc: identitycenter.IdentityCenterError, principal: str) -> Verdict:
    """source.identity_store_id is not set, and sso-admin could not name the store."""
    if exc.kind in ("no_instance", "several_instances"):
        verdict = failed(str(exc), "set source.identity_store_id (and check source.region is the Identity Center home region)")
    else:
        remedy = "set source.identity_store_id" + (f", or allow {exc.action} to {principal}" if exc.action else "")
        verdict = failed(f"source.identity_store_id is not set and {exc}", remedy)
    return verdict.withholding(FIRST_PAGE, "the Identity Store id is unknown")


def store_verdict(answers: Sequence[Answer], raw_users: Sequence[Mapping[str, Any]], where: str, region: str,
                  principal: str) -> Verdict:
    """The probe calls' answers: the first failure that is not a denial ends the probe; denials are
    collected, each naming its IAM action; the first page goes to the fields check unless ListUsers
    itself was denied."""
    refused, stopped = _failures(answers)
    if stopped is not None:
        return _stopped(stopped, where, region)
    page = FirstPage(tuple(raw_users), tuple(_parsed_users(answers)))
    if not refused:
        return ok(f"{where} answers {', '.join(a.operation for a in answers)}").giving(FIRST_PAGE, page).giving(SOURCE_ANSWERS, None)
    denied = [_denied_action(a) for a in refused]
    verdict = failed(f"{where}: access denied to {', '.join(denied)}",
                     f"allow {', '.join(d.split(' ')[0] for d in denied)} to {principal} (the AWS managed policy "
                     f"{MANAGED_POLICY} grants identitystore:List*, Describe* and GetUserId)")
    if "ListUsers" in (a.operation for a in refused):
        return verdict.withholding(FIRST_PAGE, "ListUsers is denied")
    return verdict.giving(FIRST_PAGE, page)


def _failures(answers: Sequence[Answer]) -> tuple[list[Answer], Optional[Answer]]:
    """The calls that were denied, and the one that ended the probe otherwise (None when none did)."""
    denied: list[Answer] = []
    for answer in answers:
        if answer.failure is None:
            continue
        if answer.failure.kind is not aws.Kind.ACCESS_DENIED:
            return denied, answer
        denied.append(answer)
    return denied, None


def _parsed_users(answers: Sequence[Answer]) -> list[Mapping[str, Any]]:
    """The users of the ListUsers answer as botocore parsed them ([] when it failed)."""
    for answer in answers:
        if answer.operation == "ListUsers" and answer.failure is None:
            return list(answer.response.get("Users") or [])
    return []


def _denied_action(answer: Answer) -> str:
    kms = answer.failure is not None and "kms" in answer.failure.message.lower()
    return f"identitystore:{answer.operation}" + (" (and kms:Decrypt via identitystore)" if kms else "")


def _stopped(answer: Answer, where: str, region: str) -> Verdict:
    failure = answer.failure
    assert failure is not None
    if failure.answered:
        return failed(f"{where}: {answer.operation}: {failure.code}: {failure.message}", _store_remedy(failure, region)
                      ).withholding(FIRST_PAGE, "the Identity Store is not readable")
    if failure.exception == "ParamValidationError":
        return failed(f"{where}: {answer.operation} cannot even be sent: {failure.message}",
                      "install botocore>=1.43 into runas-agent's environment"
                      ).withholding(FIRST_PAGE, "the Identity Store is not readable")
    return failed(f"cannot reach the Identity Store in {region}: {failure.message}",
                  f"allow outbound HTTPS to identitystore.{region}.amazonaws.com (or an interface VPC endpoint), "
                  "and check source.region is the Identity Center home region"
                  ).withholding(FIRST_PAGE, "the Identity Store is not reachable")


def _store_remedy(failure: aws.Failure, region: str) -> str:
    if failure.kind is aws.Kind.NOT_FOUND:
        return f"check source.identity_store_id, and that {region} (source.region) is the Identity Center home region"
    if failure.kind is aws.Kind.BAD_CREDENTIALS:
        return "the credentials were rejected: check the instance profile, the clock (signatures expire) and AWS_* variables"
    return ""


class FieldsProbe(Check):
    """Whether UserStatus and Extensions arrive: the raw page against what botocore parsed."""

    name = "identitystore-fields"
    needs = (CONFIG, IDENTITY_STORE, FIRST_PAGE)
    uses = (EXPRESSION,)

    def run(self, facts: Facts, env: "Env") -> Verdict:
        page = facts[FIRST_PAGE]
        expression = (facts.get(EXPRESSION) or facts[CONFIG]).run_as.expression
        return fields_verdict(page.raw, page.parsed, wants_enterprise(expression))


def wants_enterprise(expression: str) -> bool:
    """Whether the expression reads enterprise attributes (False for one that cannot be parsed, such as
    from-identity-center whose live value could not be read: the abac check says so)."""
    try:
        return any(p.startswith("enterprise.") for p in parse_expression(expression).paths)
    except ValueError:
        return False


@dataclass(frozen=True)
class FieldCounts:
    """How many users of one page have UserStatus and enterprise attributes, on the wire and parsed."""

    users: int
    raw_status: int
    parsed_status: int
    raw_extensions: int
    parsed_extensions: int

    @classmethod
    def of(cls, raw_users: Sequence[Mapping[str, Any]], parsed_users: Sequence[Mapping[str, Any]]) -> "FieldCounts":
        return cls(len(raw_users), _having(raw_users, "UserStatus"), _having(parsed_users, "UserStatus"),
                   _filled(raw_users, "Extensions"), _filled(parsed_users, "Extensions"))


def _having(users: Sequence[Mapping[str, Any]], key: str) -> int:
    return sum(1 for u in users if key in u)


def _filled(users: Sequence[Mapping[str, Any]], key: str) -> int:
    return sum(1 for u in users if u.get(key))


_UPGRADE = ("install botocore>=1.43 and boto3>=1.43 into runas-agent's own environment "
            "(not the distribution's python3-botocore)")


def fields_verdict(raw_users: Sequence[Mapping[str, Any]], parsed_users: Sequence[Mapping[str, Any]],
                   wants_enterprise: bool) -> Verdict:
    """Whether UserStatus and Extensions arrive, from one ListUsers page as it came over the wire
    (`raw_users`) and as botocore parsed it (pure)."""
    n = FieldCounts.of(raw_users, parsed_users)
    if not n.users:
        return warning("the Identity Store returned no users, so UserStatus and Extensions could not be seen",
                       "add users to Identity Center (the sync refuses an empty directory)")
    if n.raw_status and not n.parsed_status:
        return failed(f"botocore drops UserStatus: {n.raw_status} of {n.users} users have it on the wire, none "
                      "after parsing", _UPGRADE)
    if not n.raw_status:
        return failed(f"none of the {n.users} users on the first ListUsers page has UserStatus: disabled people "
                      "would look enabled", "check source.endpoint_url and any proxy in between: the Identity Store "
                                            "itself always sends UserStatus")
    if n.raw_extensions and not n.parsed_extensions:
        return failed(f"botocore drops Extensions: {n.raw_extensions} users have enterprise attributes on the wire, "
                      "none after parsing", _UPGRADE)
    if wants_enterprise and not n.raw_extensions:
        return warning("no user on the first ListUsers page has enterprise attributes (Extensions), but "
                       "run_as.expression uses ${path:enterprise...}: their Run As value is empty",
                       "fill the attribute in Identity Center (or in the identity provider that provisions it through SCIM)")
    return ok(f"UserStatus arrives for {n.raw_status} of {n.users} users on the first page; {n.raw_extensions} have "
              "enterprise attributes")


@register
class IdentityStoreSource(Source[SourceSettings]):
    kind = "identitystore"
    listed = 0
    summary = "the Identity Store, read through its API (the default)"
    needs_aws_credentials = True
    probes = (BotocoreProbe, StoreProbe, FieldsProbe)

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
