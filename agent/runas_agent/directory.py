"""The directory model (pure): users, groups and memberships exactly as the Identity Store returns them.

A directory document is the union of three Identity Store listings, field for field:

    {"FormatVersion": 1,
     "IdentityStoreId": "d-1234567890",
     "GeneratedAt": "2025-01-31T08:00:00Z",                (when a publisher read it; optional)
     "Users": [ ...ListUsers(Extensions=["aws:identitystore:enterprise"]).Users... ],
     "Groups": [ ...ListGroups.Groups... ],
     "GroupMemberships": [ ...ListGroupMemberships.GroupMemberships, for every group... ],
     "Signature": {...}}                                   (a publisher's; see sources/signature.py)

The file source reads it, the Identity Store source builds it, and the agent keeps the last good one as
its snapshot (for session attribution and, in fleet mode, as the object a publisher writes to S3).
Every value in it is treated as hostile: records are checked for shape here, values are checked for
meaning where they are used. `parse_user` is the one reading of a user record, for every source and
for the test endpoint alike, so a document means the same directory whichever way it arrives.

A malformed user record is not a missing person. One that names its UserId holds that person: they
are neither present nor gone, and their account stays as it is. One that names none could be
anyone's: while it is there, nobody missing from the read may be treated as gone
(`sources/admission.py` does both). A group or membership record that cannot be read refuses the
whole document, since whose membership it was cannot be known.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Optional

from runas_agent.core.display import quoted, shown
from runas_agent.errors import SnapshotError

ENTERPRISE_EXTENSION = "aws:identitystore:enterprise"
FORMAT_VERSION = 1
#: The Identity Store's pattern for the keys of a user's Extensions (its API model): nothing else
#: can come from it, so a document with another key was not written from what the API returned.
EXTENSION_KEY = re.compile(r"aws:identitystore:[a-z]{1,20}")
USER_STATUSES = ("ENABLED", "DISABLED")
TOP_LEVEL_KEYS = ("FormatVersion", "IdentityStoreId", "GeneratedAt", "Signature", "Users", "Groups", "GroupMemberships")
#: What happens to the person behind a malformed user record that names its UserId.
HELD = "the record is malformed; the person's account, if any, is kept as it is"
#: ... and behind one that does not.
UNTIED = ("the record cannot be tied to a person; no account of someone missing from this read is disabled "
          "while it is there")


@dataclass(frozen=True)
class User:
    """One Identity Store user. `record` is the ListUsers record, unmodified."""

    user_id: str
    user_name: str
    enabled: bool
    record: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def display_name(self) -> str:
        value = self.record.get("DisplayName")
        return value if isinstance(value, str) else ""

    @property
    def primary_email(self) -> str:
        for email in _list_of_dicts(self.record.get("Emails")):
            if email.get("Primary") is True and isinstance(email.get("Value"), str):
                return email["Value"]
        return ""

    def enterprise(self) -> dict[str, Any]:
        """The enterprise extension (exactly the key the API returns) with its attribute names
        lower-cased (their casing is not documented)."""
        extensions = self.record.get("Extensions")
        value = extensions.get(ENTERPRISE_EXTENSION) if isinstance(extensions, Mapping) else None
        if not isinstance(value, Mapping):
            return {}
        return {str(k).lower(): v for k, v in value.items()}

    @property
    def organization(self) -> str:
        value = self.enterprise().get("organization")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Group:
    group_id: str
    display_name: str


@dataclass(frozen=True)
class Problem:
    """A directory record that was skipped, with the identity it concerns and why."""

    identity: str
    reason: str
    #: the UserId a malformed user record names (None: it names none, or it is no user record)
    user_id: Optional[str] = None
    #: a malformed user record that names no UserId: it could be anyone's
    untied: bool = False


@dataclass(frozen=True)
class Directory:
    """A complete, consistent read of the directory."""

    identity_store_id: str
    users: tuple[User, ...]
    groups: tuple[Group, ...]
    #: group_id -> frozenset of member user_ids
    members: Mapping[str, frozenset[str]]
    #: records that could not be used (wrong shape), reported and skipped
    problems: tuple[Problem, ...] = ()
    #: the document this was parsed from, for snapshots
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: when the publisher read the directory (the document's GeneratedAt; None when it has none)
    generated_at: Optional[datetime.datetime] = None

    def groups_of(self, user_id: str) -> set[str]:
        """Group ids the user is a direct member of."""
        return {gid for gid, members in self.members.items() if user_id in members}

    def group_ids_by_name(self) -> dict[str, str]:
        return {g.display_name: g.group_id for g in self.groups}

    def user_by_name(self, user_name: str) -> User | None:
        for user in self.users:
            if user.user_name == user_name:
                return user
        return None

    @property
    def held_user_ids(self) -> frozenset[str]:
        """UserIds whose records are malformed: those people are neither present nor gone."""
        return frozenset(p.user_id for p in self.problems if p.user_id is not None)

    @property
    def untied(self) -> int:
        """Malformed user records that name no UserId: while there is one, nobody missing from
        this read can be told apart from it."""
        return sum(1 for p in self.problems if p.untied)

    @cached_property
    def _canonical(self) -> bytes:
        return canonical(self.document)

    def canonical_bytes(self) -> bytes:
        """The snapshot serialisation: stable key order, so equal directories give equal bytes
        (serialised once: a Directory and its document are never changed)."""
        return self._canonical

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


def canonical(document: Mapping[str, Any]) -> bytes:
    """A document's canonical bytes: UTF-8 JSON, keys sorted, no insignificant whitespace, one final
    newline. What a publisher signs (without the Signature) and what a snapshot holds."""
    return (json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            + "\n").encode()


def decode(data: bytes, origin: str) -> Any:
    """The JSON value of a directory document's bytes. Strict: UTF-8, JSON only (a YAML or other
    document is refused, so a document cut short is never a valid, shorter one), no key twice in one
    object, no NaN or Infinity, nesting within the interpreter's limits."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{origin}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise SnapshotError(f"{origin}: not a directory document: nested too deeply") from None
    except ValueError as exc:
        raise SnapshotError(f"{origin}: not a JSON directory document: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {quoted(twice)} appears twice in one object")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_timestamp(value: Any, what: str) -> datetime.datetime:
    """An ISO 8601 timestamp with its offset (`2025-01-31T08:00:00Z`), as a UTC datetime."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise ValueError(f"{what} {quoted(value)} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{what} {quoted(value)} has no UTC offset")
    return parsed.astimezone(datetime.timezone.utc)


def format_timestamp(when: datetime.datetime) -> str:
    """A GeneratedAt value: UTC, whole seconds, `Z`."""
    return when.astimezone(datetime.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list_of_dicts(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _kind(value: Any) -> str:
    """What a value that should have been a non-empty string is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string" if value else "empty"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, Mapping) else type(value).__name__


def user_problem(record: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with a user record that names its UserId, in the fields the agent reads; None
    when it is what the Identity Store returns."""
    user_name = record.get("UserName")
    if not isinstance(user_name, str) or not user_name:
        return f"UserName is {_kind(user_name)}"
    if "UserStatus" not in record:
        return "the record has no UserStatus"
    status = record["UserStatus"]
    if status not in USER_STATUSES:
        return f"unknown UserStatus {quoted(status)}"
    extensions = record.get("Extensions")
    if extensions is None:
        return None
    if not isinstance(extensions, Mapping):
        return f"Extensions is {_kind(extensions)}, not an object"
    for key, value in extensions.items():
        if not EXTENSION_KEY.fullmatch(key):
            return f"the Extensions key {quoted(key)} is not one the Identity Store returns ({EXTENSION_KEY.pattern})"
        if not isinstance(value, Mapping):
            return f"Extensions[{quoted(key)}] is {_kind(value)}, not an object"
    return None


def parse_user(record: Any, index: int) -> User | Problem:
    """One ListUsers record: a User, or the Problem that keeps it from being one. The one reading
    of a user record, for the file and S3 sources, the Identity Store source and the test endpoint."""
    if not isinstance(record, Mapping):
        return Problem(f"Users[{index}]", f"the record is {_kind(record)}, not an object: {UNTIED}", untied=True)
    user_id = record.get("UserId")
    if not isinstance(user_id, str) or not user_id:
        return Problem(f"Users[{index}]", f"UserId is {_kind(user_id) if 'UserId' in record else 'missing'}: {UNTIED}",
                       untied=True)
    problem = user_problem(record)
    if problem is not None:
        name = record.get("UserName")
        who = f"user {shown(name)} ({shown(user_id)})" if isinstance(name, str) and name else f"user {shown(user_id)}"
        return Problem(who, f"{problem}: {HELD}", user_id=user_id)
    return User(user_id=user_id, user_name=record["UserName"], enabled=record["UserStatus"] == "ENABLED",
                record=dict(record))


def _header(document: Mapping[str, Any], origin: str) -> tuple[str, Optional[datetime.datetime]]:
    """The document's IdentityStoreId and GeneratedAt, after its top level is checked."""
    _check_top_level(document, origin)
    store_id = document.get("IdentityStoreId", "")
    if not isinstance(store_id, str):
        raise SnapshotError(f"{origin}: IdentityStoreId must be a string")
    generated_at = None
    if "GeneratedAt" in document:
        try:
            generated_at = parse_timestamp(document["GeneratedAt"], "GeneratedAt")
        except ValueError as exc:
            raise SnapshotError(f"{origin}: {exc}") from None
    return store_id, generated_at


def _check_top_level(document: Mapping[str, Any], origin: str) -> None:
    unknown = sorted(set(document) - set(TOP_LEVEL_KEYS), key=str)
    if unknown:
        raise SnapshotError(f"{origin}: unknown top-level key(s): {', '.join(map(str, unknown))}")
    version = document.get("FormatVersion", FORMAT_VERSION)
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise SnapshotError(f"{origin}: FormatVersion {quoted(version)}: this runas-agent reads format {FORMAT_VERSION}")
    for key in ("Users", "Groups", "GroupMemberships"):
        if not isinstance(document.get(key, []), list):
            raise SnapshotError(f"{origin}: {key} must be a list")
    if "Users" not in document:
        raise SnapshotError(f"{origin}: Users is missing")
    if not isinstance(document.get("Signature", {}), Mapping):
        raise SnapshotError(f"{origin}: Signature must be an object")


def _same_store(record: Any, store_id: str, where: str, origin: str) -> None:
    """A record of another Identity Store in this document is not a skipped record: the document
    as a whole is not what one store's listing returns."""
    if store_id and isinstance(record, Mapping) and record.get("IdentityStoreId", store_id) != store_id:
        raise SnapshotError(f"{origin}: {where} is of Identity Store {quoted(record.get('IdentityStoreId'))}, "
                            f"the document of {store_id}")


def _users(document: Mapping[str, Any], store_id: str, origin: str) -> tuple[list[User], list[Problem]]:
    users: list[User] = []
    problems: list[Problem] = []
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    for index, record in enumerate(document.get("Users", [])):
        _same_store(record, store_id, f"Users[{index}]", origin)
        parsed = parse_user(record, index)
        user_id = parsed.user_id
        if user_id is not None:
            if user_id in seen_ids:
                raise SnapshotError(f"{origin}: UserId {shown(user_id)} appears twice")
            seen_ids.add(user_id)
        if isinstance(parsed, Problem):
            problems.append(parsed)
            continue
        if parsed.user_name in seen_names:
            raise SnapshotError(f"{origin}: UserName {quoted(parsed.user_name)} appears twice")
        seen_names.add(parsed.user_name)
        users.append(parsed)
    return users, problems


def _groups(document: Mapping[str, Any], store_id: str, origin: str) -> list[Group]:
    groups: list[Group] = []
    for index, record in enumerate(document.get("Groups", [])):
        _same_store(record, store_id, f"Groups[{index}]", origin)
        if not isinstance(record, Mapping) or not isinstance(record.get("GroupId"), str) or not record["GroupId"]:
            # A group that cannot be named cannot be told from a group that is gone: its members
            # would fall out of scope and out of their sudo rules. The read as a whole is refused.
            raise SnapshotError(f"{origin}: Groups[{index}] has no GroupId")
        name = record.get("DisplayName")
        groups.append(Group(group_id=record["GroupId"], display_name=name if isinstance(name, str) else ""))
    return groups


def _members(document: Mapping[str, Any], groups: list[Group], store_id: str, origin: str) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {g.group_id: set() for g in groups}
    for index, record in enumerate(document.get("GroupMemberships", [])):
        _same_store(record, store_id, f"GroupMemberships[{index}]", origin)
        member = record.get("MemberId") if isinstance(record, Mapping) else None
        group_id = record.get("GroupId") if isinstance(record, Mapping) else None
        user_id = member.get("UserId") if isinstance(member, Mapping) else None
        if not isinstance(group_id, str) or not isinstance(user_id, str):
            # Whose membership it was cannot be known: any person could silently lose a group.
            raise SnapshotError(f"{origin}: GroupMemberships[{index}] has no GroupId or MemberId.UserId")
        members.setdefault(group_id, set()).add(user_id)
    return members


def parse_document(document: Any, origin: str = "directory") -> Directory:
    """Build a Directory from a directory document. Structural damage is a SnapshotError (so is a
    group or membership record that cannot be read: whose it is cannot be known); a malformed user
    record is a Problem, reported, and its person is neither present nor gone (see Problem)."""
    if not isinstance(document, Mapping):
        raise SnapshotError(f"{origin}: the document must be an object with Users, Groups and GroupMemberships")
    store_id, generated_at = _header(document, origin)
    users, problems = _users(document, store_id, origin)
    groups = _groups(document, store_id, origin)
    members = _members(document, groups, store_id, origin)
    return Directory(
        identity_store_id=store_id,
        users=tuple(users),
        groups=tuple(groups),
        members={gid: frozenset(m) for gid, m in members.items()},
        problems=tuple(problems),
        document=document,
        generated_at=generated_at,
    )


def make_document(identity_store_id: str, users: list, groups: list, memberships: list) -> dict[str, Any]:
    return {
        "FormatVersion": FORMAT_VERSION,
        "IdentityStoreId": identity_store_id,
        "Users": users,
        "Groups": groups,
        "GroupMemberships": memberships,
    }
