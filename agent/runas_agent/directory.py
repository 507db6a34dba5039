"""The directory model (pure): users, groups and memberships exactly as the Identity Store returns them.

A directory document is the union of three Identity Store listings, field for field:

    {"IdentityStoreId": "d-1234567890",
     "Users": [ ...ListUsers(Extensions=["aws:identitystore:enterprise"]).Users... ],
     "Groups": [ ...ListGroups.Groups... ],
     "GroupMemberships": [ ...ListGroupMemberships.GroupMemberships, for every group... ]}

The file source reads it, the Identity Store source builds it, and the agent keeps the last good one as
its snapshot (for session attribution and, in fleet mode, as the object a publisher writes to S3).
Every value in it is treated as hostile: records are checked for shape here, values are checked for
meaning where they are used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from runas_agent.core.display import shown
from runas_agent.errors import SnapshotError

ENTERPRISE_EXTENSION = "aws:identitystore:enterprise"
FORMAT_VERSION = 1


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
        """The enterprise extension with keys lower-cased (their casing is not documented)."""
        extensions = self.record.get("Extensions")
        if not isinstance(extensions, Mapping):
            return {}
        for key, value in extensions.items():
            if isinstance(key, str) and key.lower() == ENTERPRISE_EXTENSION and isinstance(value, Mapping):
                return {str(k).lower(): v for k, v in value.items()}
        return {}

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

    def canonical_bytes(self) -> bytes:
        """The snapshot serialisation: stable key order, so equal directories give equal bytes."""
        return (json.dumps(self.document, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()


def _list_of_dicts(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _user(record: Any, index: int) -> User | Problem:
    if not isinstance(record, Mapping):
        return Problem(f"Users[{index}]", "record is not an object")
    user_id = record.get("UserId")
    user_name = record.get("UserName")
    if not isinstance(user_id, str) or not user_id:
        return Problem(f"Users[{index}]", "record has no UserId")
    if not isinstance(user_name, str) or not user_name:
        return Problem(f"user {shown(user_id)}", "record has no UserName")
    status = record.get("UserStatus", "ENABLED")
    if status not in ("ENABLED", "DISABLED"):
        return Problem(f"user {shown(user_name)} ({shown(user_id)})", f"unknown UserStatus '{shown(status)}'")
    return User(user_id=user_id, user_name=user_name, enabled=status == "ENABLED", record=dict(record))


def parse_document(document: Any, origin: str = "directory") -> Directory:
    """Build a Directory from a directory document. Structural damage is a SnapshotError; a single
    malformed record is a Problem, reported and skipped, so one bad record never hides the others."""
    if not isinstance(document, Mapping):
        raise SnapshotError(f"{origin}: the document must be an object with Users, Groups and GroupMemberships")
    unknown = sorted(set(document) - {"IdentityStoreId", "Users", "Groups", "GroupMemberships", "FormatVersion", "GeneratedAt"})
    if unknown:
        raise SnapshotError(f"{origin}: unknown top-level key(s): {', '.join(unknown)}")
    for key in ("Users", "Groups", "GroupMemberships"):
        if not isinstance(document.get(key, []), list):
            raise SnapshotError(f"{origin}: {key} must be a list")
    if "Users" not in document:
        raise SnapshotError(f"{origin}: Users is missing")
    store_id = document.get("IdentityStoreId", "")
    if not isinstance(store_id, str):
        raise SnapshotError(f"{origin}: IdentityStoreId must be a string")

    problems: list[Problem] = []
    users: list[User] = []
    seen_ids: dict[str, str] = {}
    seen_names: dict[str, str] = {}
    for index, record in enumerate(document.get("Users", [])):
        parsed = _user(record, index)
        if isinstance(parsed, Problem):
            problems.append(parsed)
            continue
        if parsed.user_id in seen_ids:
            raise SnapshotError(f"{origin}: UserId {parsed.user_id} appears twice")
        if parsed.user_name in seen_names:
            raise SnapshotError(f"{origin}: UserName {parsed.user_name!r} appears twice")
        seen_ids[parsed.user_id] = parsed.user_name
        seen_names[parsed.user_name] = parsed.user_id
        users.append(parsed)

    groups: list[Group] = []
    for index, record in enumerate(document.get("Groups", [])):
        if not isinstance(record, Mapping) or not isinstance(record.get("GroupId"), str):
            problems.append(Problem(f"Groups[{index}]", "record has no GroupId"))
            continue
        name = record.get("DisplayName")
        groups.append(Group(group_id=record["GroupId"], display_name=name if isinstance(name, str) else ""))

    members: dict[str, set[str]] = {g.group_id: set() for g in groups}
    for index, record in enumerate(document.get("GroupMemberships", [])):
        member = record.get("MemberId") if isinstance(record, Mapping) else None
        group_id = record.get("GroupId") if isinstance(record, Mapping) else None
        user_id = member.get("UserId") if isinstance(member, Mapping) else None
        if not isinstance(group_id, str) or not isinstance(user_id, str):
            problems.append(Problem(f"GroupMemberships[{index}]", "record has no GroupId or MemberId.UserId"))
            continue
        members.setdefault(group_id, set()).add(user_id)

    return Directory(
        identity_store_id=store_id,
        users=tuple(users),
        groups=tuple(groups),
        members={gid: frozenset(m) for gid, m in members.items()},
        problems=tuple(problems),
        document=document,
    )


def make_document(identity_store_id: str, users: list, groups: list, memberships: list) -> dict[str, Any]:
    return {
        "FormatVersion": FORMAT_VERSION,
        "IdentityStoreId": identity_store_id,
        "Users": users,
        "Groups": groups,
        "GroupMemberships": memberships,
    }
