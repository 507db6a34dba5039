"""Applying account actions with the account engine (host side): the four account databases read
once, one engine edit per planned action, the new accounts' homes made, each changed database
written once.

    load -> edits (one per action; a refused edit fails that action alone; set-asides first, and a
               create whose name's home could not be set aside is not made)
         -> homes of the accounts added (0700, skeleton copied without following links)
         -> the accounts whose home could not be made are left out (and their memberships)
         -> commit (lock, write what changed, unlock, tell the caches)

Three actions also act on the host while the edits are made, before anything is written: ending a
UID's processes (before it is parked, re-enabled or renamed), and moving a home (a rename, a
set-aside; the directory renamed without following links, never over anything). A home moved by a
sync whose commit then fails is found moved by the next one, which finishes the same edit.
An action is done when its edit reached the databases. Accounts are addressed by UID, so the same
actions run again on a half-written host (a sync killed mid-commit) finish the work instead of
failing on it. When the commit itself fails, nobody knows which files reached the disk: every
action fails, and those that may have made an account are reported in doubt, so the ledger keeps
them (core/ledger.py) and the next sync finds them as its own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from runas_agent.core import naming
from runas_agent.core.accountdb import AccountDB, AccountEditError, Edit
from runas_agent.core.action import Action, Outcome
from runas_agent.core.plan import (NOLOGIN, MAKES_THE_ACCOUNT, CreateAccount, DisableAccount, EnableAccount,
                                   EndProcesses, ForgetAccount, RenameAccount, SetGroupMembers, SetHomeAside,
                                   UpdateAccount)
from runas_agent.errors import AgentError
from runas_agent.host import accountdb, homes, processes, subp

Progress = Callable[[], None]
#: told what a long apply is doing: (phase, done, total)
Report = Callable[[str, int, int], None]
#: a report at most this often (seconds)
REPORT_EVERY = 3.0


def _nologin() -> str:
    return NOLOGIN if os.path.exists(NOLOGIN) else "/sbin/nologin"


def _key(edit: Edit) -> str:
    return repr(edit)


@dataclass
class _Run:
    """One apply: the model, which action each edit came from, and the outcome so far."""

    db: AccountDB
    outcome: Outcome = field(default_factory=Outcome)
    #: edit (by _key) -> the action it belongs to
    owner: dict[str, Action] = field(default_factory=dict)
    #: actions that failed already (not to be reported done)
    failed: set[int] = field(default_factory=set)

    def fail(self, action: Action, message: str) -> None:
        if id(action) not in self.failed:
            self.failed.add(id(action))
            self.outcome.failed.append((action, message))

    def failed_names(self) -> set[str]:
        return {a.account for a, _ in self.outcome.failed if isinstance(a, MAKES_THE_ACCOUNT)}


class ProcessesLeft(AgentError):
    """Processes of a UID survived SIGTERM and SIGKILL."""


class _Ticker:
    """Calls `report` at most every REPORT_EVERY seconds (and `progress` at every step)."""

    def __init__(self, report: Report | None, progress: Progress | None, clock: Callable[[], float] = time.monotonic):
        self.report = report
        self.progress = progress
        self.clock = clock
        self.last = clock()

    def tick(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress()
        if self.report is not None and self.clock() - self.last >= REPORT_EVERY:
            self.last = self.clock()
            self.report(phase, done, total)


class EngineApplier:
    """Account actions through the account engine: one handler per action type (`handlers`)."""

    def __init__(self, skel: str = "/etc/skel", etc: str = "/etc", rules: naming.NameRules = naming.DEBIAN,
                 run: Callable[..., Any] = subp.run, report: Report | None = None,
                 end_processes: Callable[[int], list[int]] = processes.end_processes):
        self.skel = skel
        self.end_processes = end_processes
        self.etc = etc
        self.rules = rules
        self.run = run
        self.report = report
        self.handlers: Mapping[type, Callable[[AccountDB, Any], None]] = {
            CreateAccount: self._create, EnableAccount: self._enable, UpdateAccount: self._update,
            SetGroupMembers: self._set_members, DisableAccount: self._disable, ForgetAccount: self._forget,
            SetHomeAside: self._set_home_aside, RenameAccount: self._rename, EndProcesses: self._end}

    # --- the whole apply ------------------------------------------------------------------------

    def apply(self, actions: Sequence[Action], progress: Progress | None = None) -> Outcome:
        """Apply every action. `progress`, when given, is called before each edit and each home:
        points where nothing is written to the databases yet, so it may raise to abandon the rest
        (a home made by then is its account's, and is used by the next sync)."""
        ticker = _Ticker(self.report, progress)
        try:
            run = _Run(accountdb.load(self.etc, rules=self.rules))
        except AgentError as exc:
            return Outcome(failed=[(a, str(exc)) for a in actions])
        self._edit(run, actions, ticker)
        self._make_homes(run, ticker)
        self._commit(run, actions)
        return run.outcome

    def _edit(self, run: _Run, actions: Sequence[Action], ticker: _Ticker) -> None:
        ordered = [a for a in actions if isinstance(a, SetHomeAside)] + \
                  [a for a in actions if not isinstance(a, SetHomeAside)]
        blocked: set[str] = set()
        for index, action in enumerate(ordered):
            ticker.tick("planning edits", index, len(ordered))
            if isinstance(action, CreateAccount) and action.name in blocked:
                run.fail(action, f"not created: the home of the account that had the name is still at {action.home}")
                continue
            before = len(run.db.journal)
            try:
                self.handlers[type(action)](run.db, action)
            except AgentError as exc:
                run.fail(action, str(exc))
                if isinstance(action, SetHomeAside):
                    blocked.add(action.name)
                if len(run.db.journal) > before:  # an action of several edits stopped half-way
                    run.db, _ = run.db.with_edits(run.db.journal[:before])
                continue
            for edit in run.db.journal[before:]:
                run.owner[_key(edit)] = action

    def _make_homes(self, run: _Run, ticker: _Ticker) -> None:
        added = list(run.db.added)
        if not added:
            return
        specs = [homes.HomeSpec(a.name, a.home, a.uid, a.gid) for a in added]
        made = homes.create_homes(self._ticking(specs, ticker), homes.Skeleton.read(self.skel))
        if not made.failed:
            return
        lost = {spec.account for spec, _ in made.failed}
        for spec, exc in made.failed:
            run.fail(self._creator(run, spec.account), str(exc))
        self._drop_accounts(run, lost)

    @staticmethod
    def _ticking(specs: list[homes.HomeSpec], ticker: _Ticker) -> Iterator[homes.HomeSpec]:
        for index, spec in enumerate(specs):
            ticker.tick("making homes", index, len(specs))
            yield spec

    @staticmethod
    def _creator(run: _Run, name: str) -> Action:
        for action in run.owner.values():
            if isinstance(action, CreateAccount) and action.name == name:
                return action
        raise AssertionError(f"no create for {name}")  # every added account came from a create

    def _drop_accounts(self, run: _Run, lost: set[str]) -> None:
        """The model again without the accounts in `lost`, and without them in any member list."""
        journal = []
        for old, new in _without(run.db.journal, lost):
            run.owner[_key(new)] = run.owner[_key(old)]
            journal.append(new)
        run.db, refused = run.db.with_edits(journal)
        for edit, exc in refused:
            run.fail(run.owner[_key(edit)], str(exc))

    def _commit(self, run: _Run, actions: Sequence[Action]) -> None:
        try:
            result = accountdb.commit(run.db, self.etc, run=self.run)
        except AgentError as exc:
            for action in actions:
                run.fail(action, f"the account databases were not written: {exc}")
            run.outcome.in_doubt.extend(a for a in actions if isinstance(a, MAKES_THE_ACCOUNT))
            return
        for edit, refusal in result.refused:
            run.fail(run.owner[_key(edit)], f"{refusal} (the databases changed while the sync ran)")
        run.outcome.done.extend(a for a in actions if id(a) not in run.failed)

    # --- one handler per action -----------------------------------------------------------------

    @staticmethod
    def _uid_of(db: AccountDB, name: str) -> int:
        user = db.user(name)
        if user is None or len(user) < 3 or not user[2].isdigit():
            raise AccountEditError(name, "no such account")
        return int(user[2])

    def _create(self, db: AccountDB, a: CreateAccount) -> None:
        # The planner only creates a name the host does not hold, or whose primary group an
        # interrupted earlier sync left behind (the group of the ledger's GID, without members).
        db.add_account(a.name, a.uid, a.gid, comment=a.comment, home=a.home, shell=a.shell, adopt_group=True)

    def _enable(self, db: AccountDB, a: EnableAccount) -> None:
        db.unpark(a.uid, a.name, shell=a.shell, comment=a.comment)

    def _update(self, db: AccountDB, a: UpdateAccount) -> None:
        uid = self._uid_of(db, a.name)
        if "group_name" in a.changes:
            db.rename_account(uid, a.name)  # finds the primary group under its parked name
        comment = a.changes["comment"][1] if "comment" in a.changes else None
        shell = a.changes["shell"][1] if "shell" in a.changes else None
        if comment is not None or shell is not None:
            db.update_account(uid, comment=comment, shell=shell)

    def _set_members(self, db: AccountDB, a: SetGroupMembers) -> None:
        current = db.group_members(a.group)
        add = [n for n in a.add if n not in current and db.user(n) is not None]
        remove = [n for n in a.remove if n in current]
        if add or remove:
            db.change_group_members(a.group, add=add, remove=remove)

    def _disable(self, db: AccountDB, a: DisableAccount) -> None:
        # Renaming is what stops Run As: the SSM agent only asks `id <name>`. The account keeps its
        # UID, GID and home under the parked name; lock and expiry cover any password-based path.
        # One edit: the user, its group, shadow and gshadow entries and member lists move together.
        db.park(a.uid, shell=_nologin())

    def _forget(self, db: AccountDB, a: ForgetAccount) -> None:
        return None

    def _end(self, db: AccountDB, a: EndProcesses) -> None:
        # Before the commit parks, re-enables or renames the account: nothing a leaver started runs
        # on under the parked name, and a returning person's account holds nothing of before.
        left = self.end_processes(a.uid)
        if left:
            raise ProcessesLeft(f"{a.name}: processes {', '.join(map(str, left))} of uid {a.uid} did not end")

    def _rename(self, db: AccountDB, a: RenameAccount) -> None:
        # One edit: user, primary group, shadow and gshadow entries and member lists take the new
        # name (and a parked account is unlocked and unexpired); then the home directory follows.
        if a.enable:
            db.unpark(a.uid, a.name, shell=a.shell, comment=a.comment, home=a.home)
        else:
            db.rename_account(a.uid, a.name, home=a.home)
            db.update_account(a.uid, comment=a.comment, shell=a.shell)
        _move_home(a.name, a.old_home, a.home, a.uid)

    def _set_home_aside(self, db: AccountDB, a: SetHomeAside) -> None:
        # The parked account's home moves out of /home/<name> and is closed to everyone else (a
        # Debian home is 0755): the leaver's files are nobody's to read, the newcomer's included.
        db.update_account(a.uid, home=a.to)
        if _move_home(a.parked, a.home, a.to, a.uid):
            homes.close_home(a.parked, a.to, a.uid)


def _move_home(account: str, old: str, new: str, uid: int) -> bool:
    """The home directory from `old` to `new`; nothing to move when neither exists (as `usermod -m`).
    Whether there is a home at `new` afterwards."""
    if old == new or not (os.path.lexists(old) or os.path.lexists(new)):
        return old == new
    homes.rename_home(account, old, new, uid)
    return True


def _without(journal: Iterable[Edit], lost: set[str]) -> Iterator[tuple[Edit, Edit]]:
    """The journal without the creates of `lost` accounts, and without them in member additions:
    (edit as made, edit to make instead)."""
    for edit in journal:
        method, args, kwargs = edit
        if method == "add_account" and args[0] in lost:
            continue
        if method == "change_group_members":
            add = tuple(n for n in kwargs.get("add", ()) if n not in lost)
            if not add and not kwargs.get("remove"):
                continue
            kwargs = dict(kwargs, add=add)
        yield edit, (method, args, kwargs)
