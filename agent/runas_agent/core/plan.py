"""Planning accounts (pure): desired accounts + the host's accounts + the ledger -> the actions that
make the host match, and the refusals that keep a bad directory from doing harm.

Only owned things are ever changed: an account is owned when the ledger names it AND the host has it
with the ledger's UID AND its comment carries the marker. Anything else with a wanted name is a
conflict, reported and left alone.

Each account name is in one state (`owned_state`, or new), and what the plan does about it is one
small handler per state: `WANTED` for accounts the directory calls for, `LEAVING` for owned accounts
it no longer does. Two tables take precedence over `WANTED`: `REFUSED` for a name that may never be an
account (core/reserved.py, accounts.allowed_names) and `HANDED_OVER` for a per-person name now wanted
for another UserId than the one its account was made for (the newcomer never gets the leaver's
account). A new per-person name whose UserId owns an account under a name no longer wanted is a
rename (`_rename`). A new account is also refused a name that a host sudoers rule or group member
list mentions (`stale_grant`) and a home that exists and is not its own (`foreign_home`,
`home_holder`). A handler returns a `Decision` (actions, skip, warnings, ledger entries, group
memberships); `plan` folds the decisions into one plan and applies the safety checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Literal, Mapping

from runas_agent.core import naming, uids
from runas_agent.core.action import Action, Outcome
from runas_agent.core.allowed import AllowedNames
from runas_agent.core.display import escaped, shown
from runas_agent.core.desired import MARKER, Desired, DesiredAccount, Skip
from runas_agent.core.ledger import Bookkeeping, Ledger, Owned
from runas_agent.core.observed import NOT_A_DIRECTORY, HostState, HostUser
from runas_agent.core.reserved import reserved_reason

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
    #: accounts.allowed_names: the pattern every Run As name must match (unset: any name)
    allowed_names: AllowedNames = field(default_factory=AllowedNames)


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
        people = ", ".join(shown(i) for i in self.identities)
        return f"uid={self.uid} gid={self.gid} home={self.home} shell={self.shell} {self.kind} for {people}{probe}"


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
    counted_as = "updated"

    def detail(self) -> str:
        return ", ".join(f"{k} '{shown(old)}' -> '{shown(new)}'" for k, (old, new) in sorted(self.changes.items()))


@dataclass(frozen=True)
class RenameAccount(Action):
    """A person's UserName changed (same UserId): the account, its primary group and its home take
    the new name; UID, GID, files and memberships stay (usermod renames the user in member lists).
    From a parked account (`enable`), it is re-enabled under the new name at the same time."""

    name: str
    old: str
    #: the primary group's current name (the old name, or the parked name)
    group: str
    uid: int
    home: str
    old_home: str
    shell: str
    comment: str
    enable: bool = False
    #: the ledger's name for it until now (the old name, or its parked name once its name went to another)
    owned_as: str = ""
    symbol = "~"
    verb = "rename"

    @property
    def account(self) -> str:
        return self.name

    def line(self) -> str:
        return f"{self.symbol} rename {self.old} -> {self.name}: {self.detail()}"

    def detail(self) -> str:
        moved = f"home {self.old_home} -> {self.home}" if self.old_home != self.home else f"home {self.home}"
        return f"uid={self.uid} kept, {moved} with its files, group and memberships follow" + (
            ", enabled" if self.enable else "")


@dataclass(frozen=True)
class EndProcesses(Action):
    """End every process of a per-person account's UID (SIGTERM, a grace period, SIGKILL) before it
    is parked or re-enabled: `usermod -l` refuses to rename an account that runs anything, so a
    process left behind would keep a leaver's account resolving, or lock a returning person out."""

    name: str
    uid: int
    why: str
    symbol = "-"
    verb = "end-processes"

    def detail(self) -> str:
        return f"every process of uid={self.uid} ({self.why})"


@dataclass(frozen=True)
class SetHomeAside(Action):
    """Move a parked account's home away from `/home/<name>` (to `/home/<parked name>`), so the
    account the name goes to next starts in a home of its own: the SSM agent sets HOME=/home/<name>
    whatever passwd says. The files move with the parked account; nothing is deleted."""

    #: the name the home is freed for
    name: str
    parked: str
    uid: int
    home: str
    to: str
    symbol = "~"
    verb = "set-aside"

    def detail(self) -> str:
        return f"home of {self.parked} (uid={self.uid}) moved {self.home} -> {self.to} with its files, mode 0700"


@dataclass(frozen=True)
class SetGroupMembers(Action):
    group: str
    add: tuple[str, ...]
    remove: tuple[str, ...]
    symbol = "~"
    verb = "group"
    counted_as = "groups_set"

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
        """The plan as text, one line per action, skip, warning and refusal; directory values in
        them are escaped and cut (core/display.py), so every line is one line of plain text."""
        out = [a.line() for a in self.actions]
        out += [f"! skip {s}" for s in self.skips]
        out += [f"! warning: {w}" for w in self.warnings]
        out += [f"! refused: {r}" for r in self.refusals]
        return [escaped(line) for line in out]

    def to_json(self) -> dict[str, Any]:
        return {
            "actions": [a.to_json() for a in self.actions],
            "skips": [{"identity": s.identity, "name": s.name, "reason": s.reason} for s in self.skips],
            "warnings": list(self.warnings),
            "refusals": list(self.refusals),
            "changes": self.changes,
        }


#: The order actions are applied in: accounts are updated, re-enabled and created before memberships
#: are set (every new member exists by then), and disabled after (out of the agent's groups first). A
#: parked home is set aside before the account taking its name is created. A per-person account's
#: processes end before it is renamed (parked, re-enabled).
#: A new action type takes its place here.
ORDER: tuple[type[Action], ...] = (UpdateAccount, EndProcesses, RenameAccount, EnableAccount, SetHomeAside,
                                   CreateAccount, SetGroupMembers, DisableAccount, ForgetAccount)


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


def retired(owned: Owned) -> bool:
    """An entry kept under its parked name: the account's name went to another person, so it stays
    parked for good (it is never active, and never under a wanted name)."""
    return owned.name == naming.disabled_name(owned.uid)


def owned_state(owned: Owned, host: HostState) -> tuple[State, HostUser | None]:
    """'active', 'disabled', 'missing' or 'changed' (owned account altered by hand), with the host user."""
    user = host.users.get(owned.name) if not retired(owned) else None
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
    #: the ledger: name -> UID, for every account it owns
    owned_uids: Mapping[str, int] = field(default_factory=dict)


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
    #: an owned entry kept from now on under its parked name (the name went to another person)
    retire: Owned | None = None
    #: the name whose entry this account's replaces (a rename)
    renamed_from: str | None = None


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
                   entry=_entry(entry, entry.identities, groups.owned_after))


def _entry(owned: Owned, identities: tuple[str, ...], groups: frozenset[str]) -> Owned:
    """`owned` with these identities and groups added: `owned` itself when they are already its own
    (every account of a sync that changes nothing)."""
    added = tuple(sorted(groups))
    if owned.identities == identities and owned.groups_added == added:
        return owned
    return replace(owned, identities=identities, groups_added=added)


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


def stale_grant(name: str, host: HostState, members: bool = True) -> str | None:
    """Why a new account may not take `name`: a sudoers rule or a group member list (unless not
    `members`) names it although no account has it, so it would apply to the new account (a grant
    left by an earlier user of the name, or written for someone else)."""
    listing = host.sudoers.get(name)
    if listing is not None:
        return (f"{listing} names {name!r} in a sudoers rule, alias or Defaults, but no account has the name: "
                "the rule would apply to the new account; remove it or the name from it")
    groups = host.member_of.get(name, ()) if members else ()
    if groups:
        listed = ", ".join(repr(g) for g in groups)
        return (f"group {listed} lists {name!r} as a member, but no account has the name: the new account would "
                f"be in it; remove {name!r} from the member list (gpasswd -d)")
    return None


def _end_processes(name: str, kind: str, uid: int, host: HostState, why: str) -> tuple[Action, ...]:
    """The processes of a per-person account's UID to end before it is renamed, if any run. A shared
    account is never emptied: its members' colleagues work in it."""
    return (EndProcesses(name, uid, why),) if kind == "person" and uid in host.busy_uids else ()


def _create(want: DesiredAccount, uid: int, gid: int, probe: int, settings: PlanSettings) -> CreateAccount:
    return CreateAccount(
        name=want.name, uid=uid, gid=gid, home=f"{settings.home_base.rstrip('/')}/{want.name}",
        shell=settings.shell, comment=want.comment, kind=want.kind,
        identities=tuple(i.user_name for i in want.identities), uid_probe=probe)


# --- wanted accounts, by state ----------------------------------------------------------------------

def home_holder(name: str, host: HostState, settings: PlanSettings, moving: str | None = None) -> str | None:
    """Why a new account may not start at /home/<name>: passwd gives that home to another account
    (`moving`: an account whose home the plan sets aside first)."""
    home = f"{settings.home_base.rstrip('/')}/{name}"
    user = host.by_home.get(home)
    others = [u for u in host.users.values() if u.home.rstrip("/") == home and u.name != moving] if user else []
    if others:
        return (f"{home} is the home of {others[0].name} (uid {others[0].uid}) in passwd: the new account would "
                "start in another account's files")
    return None


def foreign_home(home: str, uid: int, host: HostState) -> str | None:
    """Why an account with `uid` may not be given `home`: something is there already that is not its
    own directory (left by an earlier `userdel`, now another user's, or a link)."""
    owner = host.homes.get(home)
    if owner is None or owner == uid:
        return None
    if owner == NOT_A_DIRECTORY:
        return f"{home} exists and is not a directory (a link or a file): it is never made a home"
    return (f"{home} exists and belongs to uid {owner}, not to this account: a session would run the files in it "
            "(.bashrc, .profile) with this account's rights; move it away, or give it to the account's UID")


def _new(ctx: Context, case: Case) -> Decision:
    return _make(ctx, case)


def _make(ctx: Context, case: Case, moving: str | None = None) -> Decision:
    """A new account under a name no account has."""
    want = case.wanted
    conflict = (_unowned_conflict(case.name, ctx.host) or stale_grant(case.name, ctx.host)
                or home_holder(case.name, ctx.host, ctx.settings, moving))
    if conflict:
        return Decision(skip=conflict)
    derived = uids.derive(want.uid_key, ctx.settings.uid_min, ctx.settings.uid_max, ctx.taken)
    if derived is None:
        return Decision(skip="no free UID in accounts.uid_min..uid_max")
    uid, probe = derived
    action = _create(want, uid, uid, probe, ctx.settings)
    set_aside = moving is not None and ctx.host.users[moving].home.rstrip("/") == action.home
    foreign = foreign_home(action.home, uid, ctx.host) if not set_aside else None
    if foreign:
        return Decision(skip=foreign)
    groups = plan_groups(case.name, want, frozenset(), ctx.host, creating=True)
    create = Decision(actions=(action,), uid=uid)
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
    aside = _unfinished_set_aside(ctx, case.name)
    if aside is not None:
        held = home_holder(case.name, ctx.host, ctx.settings, moving=aside.parked)
    else:
        held = (home_holder(case.name, ctx.host, ctx.settings)
                or foreign_home(f"{ctx.settings.home_base.rstrip('/')}/{case.name}", owned.uid, ctx.host))
    if held:
        return Decision(skip=f"managed account is gone and {held}")
    first: tuple[Action, ...] = (aside,) if aside is not None else ()
    note = _recreate_note(case.name, owned, leftover, aside is not None)
    create = Decision(actions=first + (_create(want, owned.uid, owned.gid, 0, ctx.settings),), warnings=(note,))
    groups = plan_groups(case.name, want, frozenset(), ctx.host, creating=True)
    return _with_groups(create, groups, replace(owned, identities=_identities(want)))


def _recreate_note(name: str, owned: Owned, leftover: bool, handed_over: bool) -> str:
    if handed_over:
        return f"{name} changed hands and the sync that made its new account stopped before; making it with uid {owned.uid}"
    if leftover:
        return f"finishing {name}: an interrupted sync left its group (gid {owned.gid}) without the account"
    return (f"managed account {name} is not on the host (removed by hand, or never finished); "
            f"creating it with uid {owned.uid}")


def _unfinished_set_aside(ctx: Context, name: str) -> SetHomeAside | None:
    """The set-aside a hand-over planned and did not get to (the sync stopped first): /home/<name> is
    still the home of the agent's account retired under its parked name."""
    home = f"{ctx.settings.home_base.rstrip('/')}/{name}"
    holder = ctx.host.by_home.get(home)
    if holder is None or holder.name != naming.disabled_name(holder.uid) or ctx.owned_uids.get(holder.name) != holder.uid:
        return None
    return SetHomeAside(name, holder.name, holder.uid, holder.home, f"{ctx.settings.home_base.rstrip('/')}/{holder.name}")


def _enable(ctx: Context, case: Case) -> Decision:
    """Owned, wanted, and parked: back under its name."""
    want, owned, parked = case.wanted, case.ours, case.found
    if not _own_group(case.name, owned, ctx.host) and _unowned_conflict(case.name, ctx.host):
        return Decision(skip=f"cannot re-enable: the name is now taken on this host; the account stays parked as {parked.name}")
    ending = _end_processes(case.name, owned.kind, owned.uid, ctx.host, f"they would keep {parked.name} from being re-enabled")
    enable = Decision(actions=ending + (EnableAccount(case.name, owned.uid, parked.name, ctx.settings.shell, want.comment),))
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
    groups = plan_groups(case.name, want, frozenset(owned.groups_added), ctx.host, creating=False)
    return Decision(actions=(UpdateAccount(case.name, changes),) if changes else (), warnings=groups.warnings,
                    joins=groups.joins, leaves=groups.leaves,
                    entry=_entry(owned, _identities(want), groups.owned_after))


def _changed_wanted(ctx: Context, case: Case) -> Decision:
    user = case.found
    return Decision(skip=f"managed account was changed by hand (uid or comment no longer match the ledger: "
                         f"{user.name} uid={user.uid}); left alone")


#: Wanted accounts: what the plan does for each state.
WANTED: Mapping[State, Handler] = {NEW: _new, MISSING: _recreate, DISABLED: _enable, ACTIVE: _keep,
                                   CHANGED: _changed_wanted}


# --- wanted under a name that may not be an account ------------------------------------------------

def name_refusal(name: str, host: HostState, settings: PlanSettings) -> str | None:
    """Why `name` may never be a managed account on this host: a name a package, an image or this
    host's sysusers.d reserves (core/reserved.py), or one outside accounts.allowed_names. None when
    it may be."""
    return reserved_reason(name, host.sysusers) or settings.allowed_names.problem(name)


def _refuse(ctx: Context, case: Case, refusal: str) -> Decision:
    """Not made, re-made or re-enabled: the identities are skipped with the reason (an account or
    group the name already has on the host is the more specific one)."""
    return Decision(skip=_unowned_conflict(case.name, ctx.host) or refusal)


def _refuse_active(ctx: Context, case: Case, refusal: str) -> Decision:
    """Made before the name was refused (an earlier version, a new pattern): parked, so a package
    installed later does not hand its rights to a directory person; skipped with the reason."""
    return replace(_disable(ctx, case, refusal), skip=refusal)


def _refuse_changed(ctx: Context, case: Case, refusal: str) -> Decision:
    return _changed_wanted(ctx, case)


RefusedHandler = Callable[[Context, Case, str], Decision]

#: Wanted accounts whose name is refused: what the plan does for each state.
REFUSED: Mapping[State, RefusedHandler] = {NEW: _refuse, MISSING: _refuse, DISABLED: _refuse,
                                           ACTIVE: _refuse_active, CHANGED: _refuse_changed}


# --- a per-person name that changed hands -----------------------------------------------------------

def changed_hands(case: Case) -> bool:
    """Whether a per-person account the ledger owns is wanted for a different person: none of the
    UserIds it was made for is behind the name any more. A shared account is the organization's and
    never changes hands; an entry that does not record its UserIds cannot tell."""
    want, owned = case.want, case.owned
    if want is None or owned is None or want.kind != "person" or owned.kind != "person" or not owned.identities:
        return False
    return not set(owned.identities) & set(_identities(want))


def _handed_over_words(case: Case, parked: str) -> str:
    return (f"{case.name} changed hands: the account was made for UserId {', '.join(case.ours.identities)}, "
            f"the name now belongs to UserId {', '.join(_identities(case.wanted))}; the new person gets an "
            f"account of their own and none of the first one's UID, home, files, groups or rules "
            f"(the first one's stays parked as {parked})")


def _hand_over_parked(ctx: Context, case: Case) -> Decision:
    """The leaver's account is parked: its home is set aside if it is still at /home/<name>, its
    ledger entry is kept under the parked name, and the name is made new for the newcomer."""
    owned, parked = case.ours, case.found
    made = _make(ctx, Case(case.name, case.want, None, None), moving=parked.name)
    if made.skip is not None:
        return made
    home = f"{ctx.settings.home_base.rstrip('/')}/{case.name}"
    aside = f"{ctx.settings.home_base.rstrip('/')}/{parked.name}"
    moves = (SetHomeAside(case.name, parked.name, owned.uid, parked.home, aside),) if parked.home == home else ()
    return replace(made, actions=moves + made.actions, retire=replace(owned, name=parked.name, groups_added=()),
                   warnings=made.warnings + (_handed_over_words(case, parked.name),))


def _hand_over_active(ctx: Context, case: Case) -> Decision:
    """The leaver's account is still active under the name: parked now; the newcomer's account is
    made by the next sync, once the name and its home are free."""
    parked = naming.disabled_name(case.ours.uid)
    words = _handed_over_words(case, parked)
    return replace(_disable(ctx, case, f"the name changed hands to UserId {', '.join(_identities(case.wanted))}"),
                   skip=f"{words}; the new account is made on the next sync, once the first one is parked")


def _hand_over_missing(ctx: Context, case: Case) -> Decision:
    """The leaver's account was removed by hand: its entry goes, the newcomer's account is new."""
    return _new(ctx, Case(case.name, case.want, None, None))


#: Wanted per-person accounts whose name changed hands: what the plan does for each state.
HANDED_OVER: Mapping[State, Handler] = {NEW: _new, MISSING: _hand_over_missing, DISABLED: _hand_over_parked,
                                        ACTIVE: _hand_over_active, CHANGED: _changed_wanted}

# --- a person renamed (same UserId, new name) ---------------------------------------------------------

def rename_sources(ledger: Ledger, desired: Desired,
                   states: Mapping[str, tuple[State, HostUser | None]]) -> dict[tuple[str, ...], list[str]]:
    """The owned per-person accounts a new name may rename, by the UserIds they were made for: active
    or parked, and whose own name is no longer wanted."""
    found: dict[tuple[str, ...], list[str]] = {}
    for n, o in ledger.accounts.items():
        if o.kind == "person" and o.identities and n not in desired.accounts and states[n][0] in (ACTIVE, DISABLED):
            found.setdefault(o.identities, []).append(n)
    return found


def rename_source(name: str, want: DesiredAccount, ledger: Ledger,
                  sources: Mapping[tuple[str, ...], list[str]]) -> str | None:
    """The owned account a new per-person name renames: the one made for the same UserId. None when
    there is not exactly one."""
    if want.kind != "person":
        return None
    found = sources.get(_identities(want), [])
    if name in ledger.accounts:  # a rename an earlier sync stopped in: the ledger names both, one UID
        found = [n for n in found if n != name and ledger.accounts[n].uid == ledger.accounts[name].uid]
    return found[0] if len(found) == 1 else None


def _members_renamed(host: HostState, old: str, new: str) -> HostState:
    """The host as it is once `old` is renamed: member lists name `new` instead."""
    named = host.member_of.get(old, ())
    if not named:
        return host
    groups = dict(host.groups)
    for name in named:
        groups[name] = replace(groups[name], members=tuple(new if m == old else m for m in groups[name].members))
    return replace(host, groups=groups)


def _moved_home_owner(ctx: Context, user: HostUser) -> int:
    """The UID whose directory may already be at a rename's new home: the account's own when its old
    home in the home base is gone (a sync that moved the home stopped before it wrote the rename),
    nobody's otherwise (a rename never moves a home onto a directory that is there)."""
    base = ctx.settings.home_base.rstrip("/")
    moved = user.home.rsplit("/", 1)[0] == base and user.home not in ctx.host.homes
    return user.uid if moved else -2


def _rename(ctx: Context, case: Case) -> Decision:
    """Owned under another name, for the same person: renamed, keeping UID, GID, files and the
    memberships; a parked account is enabled under the new name."""
    want, owned, user = case.wanted, case.ours, case.found
    # The ledger naming the new name with this UID: an earlier sync planned this rename and stopped
    # while writing it. The primary group and member lists already under the new name are its own.
    resumed = ctx.owned_uids.get(case.name) == owned.uid
    taken = None if resumed and _own_group(case.name, owned, ctx.host) else _unowned_conflict(case.name, ctx.host)
    conflict = (taken or stale_grant(case.name, ctx.host, members=not resumed)
                or home_holder(case.name, ctx.host, ctx.settings, moving=user.name))
    if conflict:
        return Decision(skip=conflict)
    home = f"{ctx.settings.home_base.rstrip('/')}/{case.name}"
    taken = foreign_home(home, _moved_home_owner(ctx, user), ctx.host) if home != user.home else None
    if taken:
        return Decision(skip=taken)
    group = ctx.host.gids.get(owned.gid, user.name)
    rename = RenameAccount(case.name, user.name, group, owned.uid, home, user.home, ctx.settings.shell, want.comment,
                           enable=user.name == naming.disabled_name(owned.uid), owned_as=owned.name)
    after = _members_renamed(ctx.host, user.name, case.name)
    groups = plan_groups(case.name, want, frozenset(owned.groups_added), after, creating=False)
    ending = _end_processes(case.name, owned.kind, owned.uid, ctx.host,
                            f"they would keep {user.name} from being re-enabled") if rename.enable else ()
    decision = Decision(actions=ending + (rename,), renamed_from=owned.name)
    return _with_groups(decision, groups, replace(owned, name=case.name, identities=_identities(want)))



# --- accounts no longer wanted, by state ------------------------------------------------------------

def _disable_reason(owned: Owned, user_status: Mapping[str, bool]) -> str:
    ids, one = owned.identities, len(owned.identities) == 1
    if ids and all(user_status.get(uid) is False for uid in ids):
        return "its identity is disabled in the directory" if one else "all its identities are disabled"
    if ids and all(uid not in user_status for uid in ids):
        return "its identity was removed from the directory" if one else "all its identities were removed"
    return "no enabled, in-scope identity maps to it any more"


def _disable(ctx: Context, case: Case, reason: str | None = None) -> Decision:
    """Owned, active, no longer wanted: parked, after leaving the groups the agent put it in."""
    owned = case.ours
    leaves = tuple(g for g in owned.groups_added if g in ctx.host.groups and case.name in ctx.host.groups[g].members)
    disable = DisableAccount(case.name, owned.uid, naming.disabled_name(owned.uid),
                             reason or _disable_reason(owned, ctx.user_status))
    ending = _end_processes(case.name, owned.kind, owned.uid, ctx.host, "a process left running would keep the account resolving")
    return Decision(actions=ending + (disable,), leaves=leaves, entry=replace(owned, groups_added=()))


def _forget(ctx: Context, case: Case) -> Decision:
    return Decision(actions=(ForgetAccount(case.name, "account removed from the host by hand and no longer wanted"),),
                    forget=True)


def _changed_leaving(ctx: Context, case: Case) -> Decision:
    user = case.found
    if user.name != case.name and ctx.owned_uids.get(user.name) == case.ours.uid:
        # Its UID is the agent's account under another name: a rename whose old entry was kept (the
        # sync stopped between the rename and recording it).
        return Decision(actions=(ForgetAccount(case.name, f"renamed to {user.name}"),), forget=True)
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

    ctx = Context(host, settings, user_status, taken, {n: o.uid for n, o in ledger.accounts.items()})
    renamed: set[str] = set()
    sources = rename_sources(ledger, desired, states)
    for name, want in desired.accounts.items():
        case, decision = _wanted(ctx, name, want, ledger, sources, states)
        if decision.uid is not None:
            assigned.add(decision.uid)
        if decision.renamed_from is not None:
            renamed.add(decision.renamed_from)
        yield case, decision
    for name, owned in sorted(ledger.accounts.items()):
        if name not in desired.accounts and name not in renamed:
            state, user = states[name]
            case = Case(name, None, owned, user)
            yield case, LEAVING[state](ctx, case)


def _wanted(ctx: Context, name: str, want: DesiredAccount, ledger: Ledger,
            sources: Mapping[tuple[str, ...], list[str]],
            states: Mapping[str, tuple[State, HostUser | None]]) -> tuple[Case, Decision]:
    """One wanted account: refused, handed over, renamed, or by its state."""
    owned = ledger.accounts.get(name)
    state, user = states[name] if owned is not None else (NEW, None)
    case = Case(name, want, owned, user)
    refusal = name_refusal(name, ctx.host, ctx.settings)
    if refusal is not None:
        return case, REFUSED[state](ctx, case, refusal)
    if changed_hands(case):
        return case, HANDED_OVER[state](ctx, case)
    source = rename_source(name, want, ledger, sources)
    if source is not None:
        renaming = Case(name, want, ledger.accounts[source], states[source][1])
        decision = _rename(ctx, renaming)
        if decision.skip is None:
            return renaming, decision
    return case, WANTED[state](ctx, case)


def _record(accounts: dict[str, Owned], name: str, d: Decision) -> None:
    """One decision's ledger entries: its own, one it retires under a parked name, one it renames."""
    if d.retire is not None:
        accounts[d.retire.name] = d.retire
    if d.renamed_from is not None:
        accounts.pop(d.renamed_from, None)
    if d.forget:
        accounts.pop(name, None)
    elif d.entry is not None:
        accounts[name] = d.entry


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
        _record(accounts, case.name, d)
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
MAKES_THE_ACCOUNT: tuple[type[Action], ...] = (CreateAccount, EnableAccount, RenameAccount)


def blocked_accounts(outcome: Outcome) -> set[str]:
    return {a.account for a, _ in outcome.failed if isinstance(a, MAKES_THE_ACCOUNT)}


# --- keeping the ledger across the apply -------------------------------------------------------------

def _created_failed(ledger: Ledger, action: CreateAccount) -> Ledger:
    owned = ledger.accounts.get(action.name)
    return ledger.without(action.name) if owned is not None and owned.uid == action.uid else ledger


def _rename_failed(ledger: Ledger, action: RenameAccount) -> Ledger:
    """The account still has its old name: its entry goes back under it."""
    owned = ledger.accounts.get(action.name)
    if owned is None or owned.uid != action.uid:
        return ledger
    return ledger.without(action.name).with_account(replace(owned, name=action.owned_as))


def _set_aside_failed(ledger: Ledger, action: SetHomeAside) -> Ledger:
    """The home is still at /home/<name>: the parked account's entry goes back under the name, so the
    next sync hands the name over again (and sets the home aside first) instead of making a new
    account in it."""
    retired = ledger.accounts.get(action.parked)
    if retired is None:
        return ledger
    return ledger.without(action.parked).with_account(replace(retired, name=action.name))


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
                                             reverts={CreateAccount: _created_failed, SetHomeAside: _set_aside_failed,
                                                      RenameAccount: _rename_failed,
                                                      SetGroupMembers: _membership_failed})
