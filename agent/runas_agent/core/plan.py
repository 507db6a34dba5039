"""Planning accounts (pure): desired accounts + the host's accounts + the ledger -> the actions that
make the host match, and the refusals that keep a bad directory from doing harm.

Only owned things are ever changed: an account is owned when the ledger names it AND the host has it
with the ledger's UID AND its comment carries the marker. Anything else with a wanted name is a
conflict, reported and left alone.

Each account name is in one state (`owned_state`, or new), and what the plan does about it is one
small handler per state: `WANTED` for accounts the directory calls for, `LEAVING` for owned accounts
it no longer does. A handler returns a `Decision` (actions, skip, warnings, ledger entry, group
memberships); `plan` folds the decisions into one plan and applies the safety checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Literal, Mapping

from runas_agent.core import naming, uids
from runas_agent.core.action import Action, Outcome
from runas_agent.core.desired import MARKER, Desired, DesiredAccount, Skip
from runas_agent.core.ledger import Bookkeeping, Ledger, Owned
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
    counted_as = "created"

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
    counted_as = "enabled"

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
    counted_as = "disabled"

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

@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    skips: tuple[Skip, ...] = ()
    #: owned things that changed by hand, or other things a person should look at
    warnings: tuple[str, ...] = ()
    #: why the whole plan is refused (empty when it may be applied)
    refusals: tuple[str, ...] = ()
    #: the ledger as it will be once every action succeeds
    ledger: Ledger = field(default_factory=Ledger)
    #: counts for reporting
    managed_active: int = 0

    @property
    def changes(self) -> bool:
        return bool(self.actions)

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def summary(self) -> str:
        """`1 create, 2 sudoers, 1 skipped`: the plan by kind of action (`no changes` without any)."""
        kinds: dict[str, int] = {}
        for action in self.actions:
            kinds[action.verb] = kinds.get(action.verb, 0) + 1
        parts = [f"{n} {verb}" for verb, n in sorted(kinds.items())] or ["no changes"]
        if self.skips:
            parts.append(f"{len(self.skips)} skipped")
        return ", ".join(parts)

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


#: The order actions are applied in: accounts are updated, re-enabled and created before memberships
#: are set (every new member exists by then), and disabled after (out of the agent's groups first).
#: A new action type takes its place here.
ORDER: tuple[type[Action], ...] = (UpdateAccount, EnableAccount, CreateAccount, SetGroupMembers, DisableAccount,
                                   ForgetAccount)


# --- what an owned account is on the host ----------------------------------------------------------

State = Literal["new", "active", "disabled", "missing", "changed"]
#: the account the ledger names is on the host, under its name, with its UID and the marker
ACTIVE: State = "active"
#: it is parked under naming.disabled_name(uid), with its UID and the marker
DISABLED: State = "disabled"
#: neither it nor anything with its UID is on the host (removed by hand)
MISSING: State = "missing"
#: something with its name or UID is there but no longer matches the ledger (changed by hand)
CHANGED: State = "changed"
#: a wanted account the ledger does not name
NEW: State = "new"


def owned_state(owned: Owned, host: HostState) -> tuple[State, HostUser | None]:
    """'active', 'disabled', 'missing' or 'changed' (owned account altered by hand), with the host user."""
    user = host.users.get(owned.name)
    if user is not None:
        if user.uid == owned.uid and user.comment.startswith(MARKER):
            return ACTIVE, user
        if user.uid == owned.uid:
            return CHANGED, user
    parked = host.users.get(naming.disabled_name(owned.uid))
    if parked is not None and parked.uid == owned.uid and parked.comment.startswith(MARKER):
        return DISABLED, parked
    holder = host.user_by_uid(owned.uid)
    if holder is not None:
        return CHANGED, holder
    return MISSING, None


# --- one account, one decision ---------------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    """What every decision may look at besides its own account."""

    host: HostState
    settings: PlanSettings
    #: UserId -> enabled, for every user in the directory (for disable reasons)
    user_status: Mapping[str, bool]
    #: whether a UID is taken (on the host, in the ledger, or by a create planned before)
    taken: Callable[[int], bool]


@dataclass(frozen=True)
class Case:
    """One account name: as the directory wants it (None: no longer wanted), as the ledger owns it
    (None: new) and as the host has it (the user under its name or parked name, or holding its UID)."""

    name: str
    want: DesiredAccount | None
    owned: Owned | None
    user: HostUser | None

    @property
    def wanted(self) -> DesiredAccount:
        assert self.want is not None
        return self.want

    @property
    def ours(self) -> Owned:
        assert self.owned is not None
        return self.owned

    @property
    def found(self) -> HostUser:
        assert self.user is not None
        return self.user


@dataclass(frozen=True)
class Decision:
    """What the plan does about one account."""

    actions: tuple[Action, ...] = ()
    #: why the account is skipped (reported against its identities)
    skip: str | None = None
    warnings: tuple[str, ...] = ()
    #: its ledger entry afterwards (None: unchanged, unless `forget`)
    entry: Owned | None = None
    forget: bool = False
    #: supplementary groups it joins and leaves
    joins: tuple[str, ...] = ()
    leaves: tuple[str, ...] = ()
    #: a UID it takes (a new account)
    uid: int | None = None


Handler = Callable[[Context, Case], Decision]


@dataclass(frozen=True)
class Groups:
    """Membership changes for one account, and the groups the agent owns for it afterwards."""

    owned_after: frozenset[str] = frozenset()
    joins: tuple[str, ...] = ()
    leaves: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def plan_groups(name: str, want: DesiredAccount, added: frozenset[str], host: HostState, creating: bool) -> Groups:
    """Membership changes for one account. A membership an admin made is theirs: never recorded as
    the agent's, never removed."""
    owned_after: set[str] = set()
    joins: list[str] = []
    warnings: list[str] = []
    for group in sorted(want.local_groups):
        if group not in host.groups:
            warnings.append(f"local group {group!r} for {name} does not exist on this host; not added")
            continue
        member = name in host.groups[group].members
        if group in added:
            owned_after.add(group)
            if not member:
                joins.append(group)
        elif not member or creating:
            owned_after.add(group)
            joins.append(group)
        # else: an admin put the account in this group; it is theirs, never recorded as ours
    leaves = [g for g in sorted(added - want.local_groups) if g in host.groups and name in host.groups[g].members]
    return Groups(frozenset(owned_after), tuple(joins), tuple(leaves), tuple(warnings))


def _with_groups(decision: Decision, groups: Groups, entry: Owned) -> Decision:
    return replace(decision, warnings=decision.warnings + groups.warnings, joins=groups.joins, leaves=groups.leaves,
                   entry=replace(entry, groups_added=tuple(sorted(groups.owned_after))))


def _identities(want: DesiredAccount) -> tuple[str, ...]:
    return tuple(i.user_id for i in want.identities)


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


# --- wanted accounts, by state ----------------------------------------------------------------------

def _new(ctx: Context, case: Case) -> Decision:
    want = case.wanted
    conflict = _unowned_conflict(case.name, ctx.host)
    if conflict:
        return Decision(skip=conflict)
    derived = uids.derive(want.uid_key, ctx.settings.uid_min, ctx.settings.uid_max, ctx.taken)
    if derived is None:
        return Decision(skip="no free UID in accounts.uid_min..uid_max")
    uid, probe = derived
    groups = plan_groups(case.name, want, frozenset(), ctx.host, creating=True)
    create = Decision(actions=(_create(want, uid, uid, probe, ctx.settings),), uid=uid)
    return _with_groups(create, groups, Owned(case.name, uid, uid, want.kind, _identities(want)))


def _own_group(name: str, owned: Owned, host: HostState) -> bool:
    """Whether the group called `name` is the owned account's own primary group: its GID is the
    ledger's. An interrupted write leaves it so (groups are written before users): a create killed
    before its user was written, a re-enable killed after its group was renamed back."""
    group = host.groups.get(name)
    return group is not None and group.gid == owned.gid and name not in host.users


def _recreate(ctx: Context, case: Case) -> Decision:
    """Owned, wanted, and not on the host: made (again) with its own UID. Either it was removed by
    hand, or an interrupted sync never finished making it (then its primary group may be there)."""
    want, owned = case.wanted, case.ours
    leftover = _own_group(case.name, owned, ctx.host) and not ctx.host.groups[case.name].members
    if not leftover and _unowned_conflict(case.name, ctx.host):
        return Decision(skip="managed account is gone and the name is now taken on this host")
    if owned.uid in ctx.host.uids or (owned.uid in ctx.host.gids and not leftover):
        return Decision(skip=f"managed account is gone and its UID {owned.uid} is now taken")
    note = (f"finishing {case.name}: an interrupted sync left its group (gid {owned.gid}) without the account" if leftover
            else f"managed account {case.name} is not on the host (removed by hand, or never finished); "
                 f"creating it with uid {owned.uid}")
    create = Decision(actions=(_create(want, owned.uid, owned.gid, 0, ctx.settings),), warnings=(note,))
    groups = plan_groups(case.name, want, frozenset(), ctx.host, creating=True)
    return _with_groups(create, groups, replace(owned, identities=_identities(want)))


def _enable(ctx: Context, case: Case) -> Decision:
    """Owned, wanted, and parked: back under its name."""
    want, owned, parked = case.wanted, case.ours, case.found
    if not _own_group(case.name, owned, ctx.host) and _unowned_conflict(case.name, ctx.host):
        return Decision(skip=f"cannot re-enable: the name is now taken on this host; the account stays parked as {parked.name}")
    enable = Decision(actions=(EnableAccount(case.name, owned.uid, parked.name, ctx.settings.shell, want.comment),))
    groups = plan_groups(case.name, want, frozenset(), ctx.host, creating=True)
    return _with_groups(enable, groups, replace(owned, identities=_identities(want)))


def _keep(ctx: Context, case: Case) -> Decision:
    """Owned, wanted and active: brought in line with the directory and the settings."""
    want, owned, user = case.wanted, case.ours, case.found
    changes: dict[str, list[str]] = {}
    if user.comment != want.comment:
        changes["comment"] = [user.comment, want.comment]
    if user.shell != ctx.settings.shell:
        changes["shell"] = [user.shell, ctx.settings.shell]
    group_name = ctx.host.gids.get(owned.gid)
    if group_name is not None and group_name != case.name and group_name == naming.disabled_name(owned.uid):
        changes["group_name"] = [group_name, case.name]
    update = Decision(actions=(UpdateAccount(case.name, changes),) if changes else ())
    groups = plan_groups(case.name, want, frozenset(owned.groups_added), ctx.host, creating=False)
    return _with_groups(update, groups, replace(owned, identities=_identities(want)))


def _changed_wanted(ctx: Context, case: Case) -> Decision:
    user = case.found
    return Decision(skip=f"managed account was changed by hand (uid or comment no longer match the ledger: "
                         f"{user.name} uid={user.uid}); left alone")


#: Wanted accounts: what the plan does for each state.
WANTED: Mapping[State, Handler] = {NEW: _new, MISSING: _recreate, DISABLED: _enable, ACTIVE: _keep,
                                   CHANGED: _changed_wanted}


# --- accounts no longer wanted, by state ------------------------------------------------------------

def _disable_reason(owned: Owned, user_status: Mapping[str, bool]) -> str:
    ids, one = owned.identities, len(owned.identities) == 1
    if ids and all(user_status.get(uid) is False for uid in ids):
        return "its identity is disabled in the directory" if one else "all its identities are disabled"
    if ids and all(uid not in user_status for uid in ids):
        return "its identity was removed from the directory" if one else "all its identities were removed"
    return "no enabled, in-scope identity maps to it any more"


def _disable(ctx: Context, case: Case) -> Decision:
    """Owned, active, no longer wanted: parked, after leaving the groups the agent put it in."""
    owned = case.ours
    leaves = tuple(g for g in owned.groups_added if g in ctx.host.groups and case.name in ctx.host.groups[g].members)
    disable = DisableAccount(case.name, owned.uid, naming.disabled_name(owned.uid),
                             _disable_reason(owned, ctx.user_status))
    return Decision(actions=(disable,), leaves=leaves, entry=replace(owned, groups_added=()))


def _forget(ctx: Context, case: Case) -> Decision:
    return Decision(actions=(ForgetAccount(case.name, "account removed from the host by hand and no longer wanted"),),
                    forget=True)


def _changed_leaving(ctx: Context, case: Case) -> Decision:
    user = case.found
    return Decision(warnings=(f"managed account {case.name} was changed by hand ({user.name} uid={user.uid}); "
                              "not disabling it",))


def _stay_parked(ctx: Context, case: Case) -> Decision:
    return Decision()


#: Owned accounts no longer wanted: what the plan does for each state.
LEAVING: Mapping[State, Handler] = {ACTIVE: _disable, MISSING: _forget, CHANGED: _changed_leaving,
                                    DISABLED: _stay_parked}


# --- the whole account plan -----------------------------------------------------------------------

def _decisions(desired: Desired, host: HostState, ledger: Ledger, settings: PlanSettings,
               user_status: Mapping[str, bool],
               states: Mapping[str, tuple[State, HostUser | None]]) -> Iterator[tuple[Case, Decision]]:
    """Every wanted account (in the desired order), then every owned one no longer wanted (by name)."""
    reserved = ledger.reserved_ids()
    assigned: set[int] = set()

    def taken(uid: int) -> bool:
        return uid in host.uids or uid in host.gids or uid in reserved or uid in assigned

    ctx = Context(host, settings, user_status, taken)
    for name, want in desired.accounts.items():
        owned = ledger.accounts.get(name)
        state, user = states[name] if owned is not None else (NEW, None)
        case = Case(name, want, owned, user)
        decision = WANTED[state](ctx, case)
        if decision.uid is not None:
            assigned.add(decision.uid)
        yield case, decision
    for name, owned in sorted(ledger.accounts.items()):
        if name not in desired.accounts:
            state, user = states[name]
            case = Case(name, None, owned, user)
            yield case, LEAVING[state](ctx, case)


def _assemble(ledger: Ledger, decided: Iterator[tuple[Case, Decision]]) -> tuple[list[Action], list[Skip], list[str], Ledger]:
    """The decisions folded into one list of actions (memberships one per group), skips, warnings and
    the ledger afterwards."""
    actions: list[Action] = []
    skips: list[Skip] = []
    warnings: list[str] = []
    joins: dict[str, set[str]] = {}
    leaves: dict[str, set[str]] = {}
    accounts = dict(ledger.accounts)
    for case, d in decided:
        actions.extend(d.actions)
        if d.skip is not None:
            skips.append(Skip(", ".join(str(i) for i in case.wanted.identities), case.name, d.skip))
        warnings.extend(d.warnings)
        for group in d.joins:
            joins.setdefault(group, set()).add(case.name)
        for group in d.leaves:
            leaves.setdefault(group, set()).add(case.name)
        if d.forget:
            accounts.pop(case.name, None)
        elif d.entry is not None:
            accounts[case.name] = d.entry
    actions += [SetGroupMembers(g, tuple(sorted(joins.get(g, ()))), tuple(sorted(leaves.get(g, ()))))
                for g in sorted(set(joins) | set(leaves))]
    actions.sort(key=lambda a: ORDER.index(type(a)))
    return actions, skips, warnings, Ledger(accounts)


def plan(desired: Desired, host: HostState, ledger: Ledger, settings: PlanSettings,
         user_status: Mapping[str, bool] | None = None, force: bool = False) -> Plan:
    """The account plan. user_status: UserId -> enabled, for every user in the directory (for
    disable reasons, and its size: an empty directory is refused)."""
    status = user_status or {}
    states = {name: owned_state(owned, host) for name, owned in ledger.accounts.items()}
    actions, skips, warnings, new_ledger = _assemble(ledger, _decisions(desired, host, ledger, settings, status, states))
    managed_active = sum(1 for state, _ in states.values() if state == ACTIVE)
    disables = sum(isinstance(a, DisableAccount) for a in actions)
    refusals = safety(desired, settings, len(status), disables, managed_active)
    if refusals and force:
        warnings += [f"--force overrides: {r}" for r in refusals]
        refusals = []
    return Plan(tuple(actions), tuple(desired.skips) + tuple(skips), tuple(warnings), tuple(refusals), new_ledger,
                managed_active)


def safety(desired: Desired, settings: PlanSettings, directory_size: int, disables: int,
           managed_active: int) -> list[str]:
    """Why a plan must not be applied: a scope group gone, an empty directory, too many disables."""
    refusals: list[str] = []
    if desired.missing_scope_groups:
        refusals.append("scope group(s) not in the directory: " + ", ".join(desired.missing_scope_groups)
                        + " (a renamed or deleted group would disable all its members)")
    if settings.refuse_empty_directory and directory_size == 0:
        refusals.append("the directory has no users at all (safety.refuse_empty_directory)")
    allowed = max(settings.max_disable_count, math.floor(settings.max_disable_fraction * managed_active))
    if disables > allowed:
        refusals.append(f"the plan would disable {disables} of {managed_active} active managed accounts, "
                        f"more than the {allowed} allowed (safety.max_disable_fraction={settings.max_disable_fraction}, "
                        f"safety.max_disable_count={settings.max_disable_count})")
    return refusals


# --- applying --------------------------------------------------------------------------------------

#: Actions whose failure leaves the name without the agent's account: nothing else (a sudoers
#: drop-in) may be written for that name in the same sync.
MAKES_THE_ACCOUNT: tuple[type[Action], ...] = (CreateAccount, EnableAccount)


def blocked_accounts(outcome: Outcome) -> set[str]:
    return {a.account for a, _ in outcome.failed if isinstance(a, MAKES_THE_ACCOUNT)}


# --- keeping the ledger across the apply -------------------------------------------------------------

def _created_failed(ledger: Ledger, action: CreateAccount) -> Ledger:
    return ledger.without(action.name) if action.name in ledger.accounts else ledger


def _membership_failed(ledger: Ledger, action: SetGroupMembers) -> Ledger:
    """The members it did not add are not the agent's in that group; those it did not remove still are."""
    for name in action.add:
        if name in ledger.accounts:
            groups = set(ledger.accounts[name].groups_added) - {action.group}
            ledger = ledger.update(name, groups_added=tuple(sorted(groups)))
    for name in action.remove:
        if name in ledger.accounts:
            groups = set(ledger.accounts[name].groups_added) | {action.group}
            ledger = ledger.update(name, groups_added=tuple(sorted(groups)))
    return ledger


ACCOUNTS: Bookkeeping[Ledger] = Bookkeeping(merge=Ledger.merge,
                                             reverts={CreateAccount: _created_failed, SetGroupMembers: _membership_failed})
