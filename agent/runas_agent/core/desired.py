"""Desired state (pure): which Run As accounts the directory calls for, and which identities cannot
have one and why.

directory + settings -> DesiredAccounts + Skips. No host access: whether a name is already taken on
this host is the planner's business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from runas_agent.core import naming, uids
from runas_agent.core.display import VALUE_LIMIT, shown
from runas_agent.core.expression import Expression
from runas_agent.directory import Directory, User

#: Every managed account's comment starts with this (the marker in passwd).
MARKER = "runas-agent"
_COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9 ._@+=()-]")


@dataclass(frozen=True)
class Identity:
    user_id: str
    user_name: str

    def __str__(self) -> str:
        """`alice@example.com (UserId)`, exact (JSON output carries it; text output shows it through
        core/display.py)."""
        return f"{self.user_name} ({self.user_id})"


@dataclass(frozen=True)
class DesiredAccount:
    name: str
    kind: str  # "person" or "shared"
    #: the key the UID is derived from
    uid_key: str
    identities: tuple[Identity, ...]
    comment: str
    local_groups: frozenset[str] = frozenset()


#: How much of a skip's identity text output shows (it may name several people).
IDENTITY_LIMIT = 3 * VALUE_LIMIT


@dataclass(frozen=True)
class Skip:
    identity: str
    name: str | None
    reason: str

    def __str__(self) -> str:
        name = f" as '{shown(self.name)}'" if self.name is not None else ""
        return f"{shown(self.identity, IDENTITY_LIMIT)}{name}: {self.reason}"


@dataclass(frozen=True)
class GroupRule:
    identity_store_group: str | None
    run_as: str | None
    local_groups: tuple[str, ...]


@dataclass(frozen=True)
class Settings:
    """What desired-state computation needs from the config."""

    expression: Expression
    account_kind: str  # "person" | "shared" (auto already resolved)
    rules: naming.NameRules
    scope_groups: tuple[str, ...] = ()
    group_rules: tuple[GroupRule, ...] = ()


@dataclass(frozen=True)
class Desired:
    accounts: dict[str, DesiredAccount]
    skips: tuple[Skip, ...]
    #: scope groups named in the config that the directory does not have (the plan must refuse)
    missing_scope_groups: tuple[str, ...] = ()


def resolve_kind(account_kind: str, expression: Expression) -> str:
    if account_kind != "auto":
        return account_kind
    return "person" if expression.is_unique_per_user else "shared"


def sanitize_comment(text: str, limit: int = 96) -> str:
    """A GECOS-safe rendering of directory text: no ':' ',' or control characters."""
    return _COMMENT_UNSAFE.sub("_", text)[:limit]


def _comment(kind: str, name: str, people: Iterable[User]) -> str:
    if kind == "shared":
        return sanitize_comment(f"{MARKER} shared {name}")
    (user,) = people
    label = user.display_name or user.user_name
    return sanitize_comment(f"{MARKER} {label} ({user.user_name})")


def _resolve_groups(directory: Directory, refs: Iterable[str]) -> tuple[set[str], list[str]]:
    by_name = directory.group_ids_by_name()
    ids = {g.group_id for g in directory.groups}
    found: set[str] = set()
    missing: list[str] = []
    for ref in refs:
        if ref in ids:
            found.add(ref)
        elif ref in by_name:
            found.add(by_name[ref])
        else:
            missing.append(ref)
    return found, missing


def compute(directory: Directory, settings: Settings) -> Desired:
    skips: list[Skip] = [Skip(p.identity, None, p.reason) for p in directory.problems]
    scope_ids, missing_scope = _resolve_groups(directory, settings.scope_groups)
    in_scope_users: set[str] | None = None
    if settings.scope_groups:
        in_scope_users = set()
        for gid in scope_ids:
            in_scope_users |= directory.members.get(gid, frozenset())

    by_name: dict[str, list[User]] = {}
    for user in directory.users:
        if in_scope_users is not None and user.user_id not in in_scope_users:
            continue
        if not user.enabled:
            continue
        value = settings.expression.evaluate(user)
        problem = naming.name_problem(value, settings.rules)
        if problem:
            skips.append(Skip(str(Identity(user.user_id, user.user_name)), value, problem))
            continue
        by_name.setdefault(value, []).append(user)

    accounts: dict[str, DesiredAccount] = {}
    for name, people in sorted(by_name.items()):
        people.sort(key=lambda u: u.user_name)
        identities = tuple(Identity(u.user_id, u.user_name) for u in people)
        if settings.account_kind == "person":
            if len(people) > 1:
                others = ", ".join(shown(u.user_name) for u in people)
                for identity in identities:
                    skips.append(Skip(str(identity), name, f"Run As value shared by {len(people)} people ({others}) but accounts are per person"))
                continue
            key = uids.person_key(people[0].user_id)
        else:
            key = uids.shared_key(name)
        accounts[name] = DesiredAccount(
            name=name,
            kind=settings.account_kind,
            uid_key=key,
            identities=identities,
            comment=_comment(settings.account_kind, name, people),
            local_groups=frozenset(_local_groups(directory, settings, name, people)),
        )
    return Desired(accounts, tuple(skips), tuple(missing_scope))


def _local_groups(directory: Directory, settings: Settings, name: str, people: list[User]) -> set[str]:
    """Local groups an account gets. A shared account gets only what rules naming it give: one member's
    personal groups never flow into an account that colleagues share."""
    groups: set[str] = set()
    for rule in settings.group_rules:
        if rule.run_as is not None:
            if rule.run_as == name:
                groups.update(rule.local_groups)
        elif settings.account_kind == "person" and rule.identity_store_group is not None:
            gids, _ = _resolve_groups(directory, [rule.identity_store_group])
            if any(people[0].user_id in directory.members.get(gid, frozenset()) for gid in gids):
                groups.update(rule.local_groups)
    return groups
