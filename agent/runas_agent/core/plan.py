"""Planning (pure): desired accounts + the host's accounts + the ledger -> the actions that make the
host match, and the refusals that keep a bad directory from doing harm.

Only owned things are ever changed: an account is owned when the ledger names it AND the host has it
with the ledger's UID AND its comment carries the marker. Anything else with a wanted name is a
conflict, reported and left alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from runas_agent.core import naming, uids
from runas_agent.core.desired import MARKER, Desired, DesiredAccount, Skip
from runas_agent.core.ledger import Ledger, Owned
from runas_agent.core.observed import HostState, HostUser

NOLOGIN = "/usr/sbin/nologin"


@dataclass(frozen=True)
class PlanSettings:
    shell: str = "/bin/bash"
    home_base: str = "/home"
    skel: str = "/etc/skel"
    uid_min: int = 1_000_000_000
    uid_max: int = 1_799_999_999
    refuse_empty_directory: bool = True
    max_disable_fraction: float = 0.2
    max_disable_count: int = 3


# --- actions -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    symbol = "?"
    verb = "act"

    @property
    def account(self) -> str:
        return getattr(self, "name", "")

    def detail(self) -> str:
        return ""

    def line(self) -> str:
        detail = self.detail()
        return f"{self.symbol} {self.verb} {self.account}" + (f": {detail}" if detail else "")

    def to_json(self) -> dict[str, Any]:
        return {"action": self.verb, **asdict(self)}


@dataclass(frozen=True)
class CreateAccount(Action):
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    comment: str
    kind: str
    identities: tuple[str, ...]
    #: >0 when the derived UID was taken here, so this host's UID differs from the fleet's
    uid_probe: int = 0
    symbol = "+"
    verb = "create"

    def detail(self) -> str:
        probe = f" (UID probe {self.uid_probe}: derived UID was taken)" if self.uid_probe else ""
        return f"uid={self.uid} gid={self.gid} home={self.home} shell={self.shell} {self.kind} for {', '.join(self.identities)}{probe}"


@dataclass(frozen=True)
class EnableAccount(Action):
    name: str
    uid: int
    parked: str
    shell: str
    comment: str
    symbol = "~"
    verb = "enable"

    def detail(self) -> str:
        return f"uid={self.uid}, back from {self.parked}"


@dataclass(frozen=True)
class UpdateAccount(Action):
    name: str
    #: field -> [old, new]; fields: comment, shell, group_name
    changes: dict[str, list[str]]
    symbol = "~"
    verb = "update"

    def detail(self) -> str:
        return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(self.changes.items()))


@dataclass(frozen=True)
class SetGroupMembers(Action):
    group: str
    add: tuple[str, ...]
    remove: tuple[str, ...]
    symbol = "~"
    verb = "group"

    @property
    def account(self) -> str:
        return self.group

    def detail(self) -> str:
        parts = [f"+{n}" for n in self.add] + [f"-{n}" for n in self.remove]
        return " ".join(parts)


@dataclass(frozen=True)
class DisableAccount(Action):
    name: str
    uid: int
    parked: str
    reason: str
    symbol = "-"
    verb = "disable"

    def detail(self) -> str:
        return f"uid={self.uid} parked as {self.parked} ({self.reason}); home and files kept"


@dataclass(frozen=True)
class ForgetAccount(Action):
    """Drop a ledger entry whose account is gone from the host (removed by hand) and not wanted."""

    name: str
    reason: str
    symbol = "."
    verb = "forget"

    def detail(self) -> str:
        return self.reason


# --- the plan ------------------------------------------------------------------------------------

@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    #: owned things that changed by hand, or other things a person should look at
    warnings: list[str] = field(default_factory=list)
    #: why the whole plan is refused (empty when it may be applied)
    refusals: list[str] = field(default_factory=list)
    #: the ledger as it will be once every action succeeds
    ledger: Ledger = field(default_factory=Ledger)
    #: counts for reporting
    managed_active: int = 0

    @property
    def changes(self) -> bool:
        return bool(self.actions)

    def of(self, kind: type) -> list:
        return [a for a in self.actions if isinstance(a, kind)]

    def lines(self) -> list[str]:
        out = [a.line() for a in self.actions]
        out += [f"! skip {s}" for s in self.skips]
        out += [f"! warning: {w}" for w in self.warnings]
        out += [f"! refused: {r}" for r in self.refusals]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "actions": [a.to_json() for a in self.actions],
            "skips": [{"identity": s.identity, "name": s.name, "reason": s.reason} for s in self.skips],
            "warnings": list(self.warnings),
            "refusals": list(self.refusals),
            "changes": self.changes,
        }


def owned_state(owned: Owned, host: HostState) -> tuple[str, HostUser | None]:
    """'active', 'disabled', 'missing' or 'changed' (owned account altered by hand), with the host user."""
    user = host.users.get(owned.name)
    if user is not None:
        if user.uid == owned.uid and user.comment.startswith(MARKER):
            return "active", user
        if user.uid == owned.uid:
            return "changed", user
    parked = host.users.get(naming.disabled_name(owned.uid))
    if parked is not None and parked.uid == owned.uid and parked.comment.startswith(MARKER):
        return "disabled", parked
    holder = host.user_by_uid(owned.uid)
    if holder is not None:
        return "changed", holder
    return "missing", None


def _disable_reason(name: str, owned: Owned, desired: Desired, directory_users: dict[str, Any]) -> str:
    gone = [uid for uid in owned.identities if uid not in directory_users]
    disabled = [uid for uid in owned.identities if uid in directory_users and not directory_users[uid]]
    if disabled and len(disabled) == len(owned.identities):
        return "its identity is disabled in the directory" if len(disabled) == 1 else "all its identities are disabled"
    if gone and len(gone) == len(owned.identities):
        return "its identity was removed from the directory" if len(gone) == 1 else "all its identities were removed"
    return "no enabled, in-scope identity maps to it any more"


def plan(desired: Desired, host: HostState, ledger: Ledger, settings: PlanSettings,
         user_status: dict[str, bool] | None = None, directory_size: int = 0, force: bool = False) -> Plan:
    """user_status: UserId -> enabled, for every user in the directory (for disable reasons)."""
    user_status = user_status or {}
    result = Plan(skips=list(desired.skips))
    new_ledger = ledger
    reserved = ledger.reserved_ids()
    assigned: set[int] = set()
    creates: list[Action] = []
    enables: list[Action] = []
    updates: list[Action] = []
    disables: list[Action] = []
    forgets: list[Action] = []
    group_add: dict[str, set[str]] = {}
    group_remove: dict[str, set[str]] = {}
    #: final supplementary groups the agent owns per account
    added_after: dict[str, set[str]] = {}

    states = {name: owned_state(owned, host) for name, owned in ledger.accounts.items()}
    result.managed_active = sum(1 for state, _ in states.values() if state == "active")

    def taken(uid: int) -> bool:
        return uid in host.uids or uid in host.gids or uid in reserved or uid in assigned

    for name, want in desired.accounts.items():
        owned = ledger.accounts.get(name)
        if owned is None:
            conflict = _unowned_conflict(name, host)
            if conflict:
                result.skips.append(Skip(", ".join(str(i) for i in want.identities), name, conflict))
                continue
            derived = uids.derive(want.uid_key, settings.uid_min, settings.uid_max, taken)
            if derived is None:
                result.skips.append(Skip(", ".join(str(i) for i in want.identities), name, "no free UID in accounts.uid_min..uid_max"))
                continue
            uid, probe = derived
            assigned.add(uid)
            creates.append(_create(want, uid, uid, probe, settings))
            new_ledger = new_ledger.with_account(Owned(name, uid, uid, want.kind, tuple(i.user_id for i in want.identities)))
            added_after[name] = _plan_groups(name, want, set(), host, group_add, group_remove, result.warnings, creating=True)
            new_ledger = new_ledger.update(name, groups_added=tuple(sorted(added_after[name])))
            continue

        state, user = states[name]
        identities = tuple(i.user_id for i in want.identities)
        if state == "changed":
            result.skips.append(Skip(", ".join(str(i) for i in want.identities), name,
                                     f"managed account was changed by hand (uid or comment no longer match the ledger: {user.name} uid={user.uid}); left alone"))
            continue
        if state == "missing":
            if _unowned_conflict(name, host):
                result.skips.append(Skip(", ".join(str(i) for i in want.identities), name, "managed account is gone and the name is now taken on this host"))
                continue
            if owned.uid in host.uids or owned.uid in host.gids:
                result.skips.append(Skip(", ".join(str(i) for i in want.identities), name, f"managed account is gone and its UID {owned.uid} is now taken"))
                continue
            result.warnings.append(f"managed account {name} was removed from the host by hand; re-creating it with uid {owned.uid}")
            creates.append(_create(want, owned.uid, owned.gid, 0, settings))
            added_after[name] = _plan_groups(name, want, set(), host, group_add, group_remove, result.warnings, creating=True)
        elif state == "disabled":
            if _unowned_conflict(name, host):
                result.skips.append(Skip(", ".join(str(i) for i in want.identities), name, f"cannot re-enable: the name is now taken on this host; the account stays parked as {user.name}"))
                continue
            enables.append(EnableAccount(name, owned.uid, user.name, settings.shell, want.comment))
            added_after[name] = _plan_groups(name, want, set(), host, group_add, group_remove, result.warnings, creating=True)
        else:  # active
            changes: dict[str, list[str]] = {}
            if user.comment != want.comment:
                changes["comment"] = [user.comment, want.comment]
            if user.shell != settings.shell:
                changes["shell"] = [user.shell, settings.shell]
            group_name = host.gids.get(owned.gid)
            if group_name != name and group_name == naming.disabled_name(owned.uid):
                changes["group_name"] = [group_name, name]
            if changes:
                updates.append(UpdateAccount(name, changes))
            added_after[name] = _plan_groups(name, want, set(owned.groups_added), host, group_add, group_remove, result.warnings, creating=False)
        new_ledger = new_ledger.update(name, identities=identities, groups_added=tuple(sorted(added_after[name])))

    for name, owned in sorted(ledger.accounts.items()):
        if name in desired.accounts:
            continue
        state, user = states[name]
        if state == "active":
            for group in owned.groups_added:
                if group in host.groups and name in host.groups[group].members:
                    group_remove.setdefault(group, set()).add(name)
            new_ledger = new_ledger.update(name, groups_added=())
            disables.append(DisableAccount(name, owned.uid, naming.disabled_name(owned.uid),
                                           _disable_reason(name, owned, desired, user_status)))
        elif state == "missing":
            forgets.append(ForgetAccount(name, "account removed from the host by hand and no longer wanted"))
            new_ledger = new_ledger.without(name)
        elif state == "changed":
            result.warnings.append(f"managed account {name} was changed by hand ({user.name} uid={user.uid}); not disabling it")

    group_actions = [SetGroupMembers(g, tuple(sorted(group_add.get(g, ()))), tuple(sorted(group_remove.get(g, ()))))
                     for g in sorted(set(group_add) | set(group_remove))]
    result.actions = updates + enables + creates + group_actions + disables + forgets
    result.ledger = new_ledger
    _safety(result, desired, settings, directory_size, force)
    return result


def _unowned_conflict(name: str, host: HostState) -> str | None:
    user = host.users.get(name)
    if user is not None:
        kind = "a system account" if user.uid < host.uid_min else "an existing account"
        return f"{kind} named {name!r} (uid {user.uid}) exists and is not managed by runas-agent; left alone"
    if name in host.groups:
        return f"a group named {name!r} (gid {host.groups[name].gid}) exists and is not managed by runas-agent"
    return None


def _create(want: DesiredAccount, uid: int, gid: int, probe: int, settings: PlanSettings) -> CreateAccount:
    return CreateAccount(
        name=want.name, uid=uid, gid=gid, home=f"{settings.home_base.rstrip('/')}/{want.name}",
        shell=settings.shell, comment=want.comment, kind=want.kind,
        identities=tuple(i.user_name for i in want.identities), uid_probe=probe)


def _plan_groups(name: str, want: DesiredAccount, added: set[str], host: HostState,
                 group_add: dict[str, set[str]], group_remove: dict[str, set[str]], warnings: list[str],
                 creating: bool) -> set[str]:
    """Membership changes for one account; returns the groups the agent will own afterwards."""
    owned_after: set[str] = set()
    for group in sorted(want.local_groups):
        if group not in host.groups:
            warnings.append(f"local group {group!r} for {name} does not exist on this host; not added")
            continue
        member = name in host.groups[group].members
        if group in added:
            owned_after.add(group)
            if not member:
                group_add.setdefault(group, set()).add(name)
        elif not member or creating:
            owned_after.add(group)
            group_add.setdefault(group, set()).add(name)
        # else: an admin put the account in this group; it is theirs, never recorded as ours
    for group in sorted(added - want.local_groups):
        if group in host.groups and name in host.groups[group].members:
            group_remove.setdefault(group, set()).add(name)
    return owned_after


def _safety(result: Plan, desired: Desired, settings: PlanSettings, directory_size: int, force: bool) -> None:
    refusals: list[str] = []
    if desired.missing_scope_groups:
        refusals.append("scope group(s) not in the directory: " + ", ".join(desired.missing_scope_groups)
                        + " (a renamed or deleted group would disable all its members)")
    if settings.refuse_empty_directory and directory_size == 0:
        refusals.append("the directory has no users at all (safety.refuse_empty_directory)")
    disables = len(result.of(DisableAccount))
    allowed = max(settings.max_disable_count, math.floor(settings.max_disable_fraction * result.managed_active))
    if disables > allowed:
        refusals.append(f"the plan would disable {disables} of {result.managed_active} active managed accounts, "
                        f"more than the {allowed} allowed (safety.max_disable_fraction={settings.max_disable_fraction}, "
                        f"safety.max_disable_count={settings.max_disable_count})")
    if refusals and force:
        result.warnings.extend(f"--force overrides: {r}" for r in refusals)
        return
    result.refusals = refusals
