"""One sync: source -> desired -> observed -> plan -> apply. The orchestration between the pure core
and the host; the daemon and `--once` both call `sync`."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import time
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from runas_agent import __version__
from runas_agent.core import memo, naming, sharing, shells
from runas_agent.core.action import Outcome
from runas_agent.core.desired import Desired, compute
from runas_agent.core.observed import HostState, Observation
from runas_agent.core.recover import Recovery, adopt, rebuild, rebuild_sudo, strays
from runas_agent.core.sudoers import FILE_PREFIX
from runas_agent.core.sync import SyncPlan, plan
from runas_agent.directory import Directory
from runas_agent.exitcodes import Exit
from runas_agent.host.accounts import read_os_release
from runas_agent.host.apply import AccountApplier, SudoApplier, apply_plan
from runas_agent.host.engine import EngineApplier, Report
from runas_agent.host.files import Keeper, LedgerFile, StateDir, StateWriteError
from runas_agent.host.observe import observe
from runas_agent.host.sudoers import SudoersHost
from runas_agent.identitycenter import resolve_run_as
from runas_agent.settings import Config, desired_settings, sync_settings
from runas_agent.settings import name_rules as rules_for
from runas_agent.sources import Source, make_source
from runas_agent.sources.admission import admit, last_applied
from runas_agent.status import SyncCounts, SyncStatus, status_of


@dataclass
class SyncResult:
    plan: SyncPlan
    directory: Directory
    outcome: Outcome | None = None
    seconds: float = 0.0
    source_stats: dict[str, Any] = field(default_factory=dict)
    #: state files that could not be written after the plan was applied (see run_plan)
    unrecorded: list[str] = field(default_factory=list)
    #: the plan was the one remembered for exactly these inputs (core/memo.py), not made again
    remembered: bool = False

    @property
    def status(self) -> SyncStatus:
        """What the sync came to (a plan that was not applied: as if nothing had failed). Changes
        applied whose ledger or snapshot could not be written afterwards: partial."""
        status = status_of(self.plan, self.outcome or Outcome())
        return SyncStatus.PARTIAL if self.unrecorded and status is SyncStatus.OK else status

    @property
    def counts(self) -> SyncCounts:
        return SyncCounts.of(self.plan, self.outcome)

    @property
    def exit(self) -> Exit:
        """The exit status: the sync's, or for a plan only (`plan`), whether it would change anything,
        and when it would not, whether the sync would still be partial (skipped identities: 3, as
        `--once` exits)."""
        if self.outcome is None and not self.plan.refusals:
            if self.plan.changes:
                return Exit.CHANGES
            return Exit.PARTIAL if self.plan.skips else Exit.OK
        return self.status.exit


def name_rules(cfg: Config, etc: str = "/etc") -> naming.NameRules:
    """The configured account name rules, or those of the host's os-release for `auto`."""
    return rules_for(cfg, read_os_release(f"{etc}/os-release"))


def compute_plan(cfg: Config, directory: Directory, observation: Observation,
                 force: bool = False) -> tuple[Desired, SyncPlan]:
    """The desired state and the whole plan (pure, given the observation)."""
    desired = compute(directory, desired_settings(cfg, rules_for(cfg, observation.os_release)))
    result = plan(desired, directory, observation, sync_settings(cfg), force)
    shared = sharing.warnings(desired, cfg.run_as.expression, cfg.run_as.account_kind)
    if shared:
        result = replace(result, warnings=result.warnings + tuple(shared))
    return desired, shells.judge(result, observation.shell) if observation.shell else result


@dataclass(frozen=True)
class Appliers:
    """What applies a plan: the account actions, and the sudoers actions after them."""

    accounts: AccountApplier
    sudo: SudoApplier


def appliers(cfg: Config, etc: str = "/etc", report: Report | None = None) -> Appliers:
    """The account engine (host/engine.py) for accounts, host/sudoers.py for drop-ins. `report` is
    told, every few seconds, how far a long apply is."""
    rules = name_rules(cfg, etc)
    return Appliers(EngineApplier(skel=cfg.accounts.skel, etc=etc, rules=rules, report=report),
                    SudoersHost(cfg.sudo.sudoers_dir, cfg.state_dir, cfg.sudo.visudo))


def run_plan(result: SyncPlan, observation: Observation, state: StateDir, using: Appliers,
             progress: Callable[[], None] | None = None) -> tuple[Outcome, list[str]]:
    """Apply a plan between the two writes of both ledgers (core/ledger.py): each records what the
    plan may create before the first action, and what really is after the last. Returns the
    outcome, and the ledgers that could not be written after the changes were applied (the sync
    then says so, and its exit status says that changes were made). A ledger that cannot be written
    before the first action is a StateWriteError: nothing was changed."""
    accounts, sudo = result.ledgers(observation)
    keepers = (Keeper(state.ledger, accounts), Keeper(state.sudo_ledger, sudo))
    if result.changes:
        try:
            for keeper in keepers:
                keeper.intent()
        except StateWriteError as exc:
            raise StateWriteError(f"{exc}; nothing was changed") from None
        outcome = apply_plan(result.actions, using.accounts, using.sudo, progress)
    else:
        outcome = Outcome()
    unrecorded = []
    for keeper in keepers:
        try:
            keeper.settle(outcome.undone())
        except StateWriteError as exc:
            unrecorded.append(str(exc))
    return outcome, unrecorded


def recover_ledger(cfg: Config, desired: Desired, directory: Directory, observation: Observation,
                   state: StateDir) -> Recovery | None:
    """The ledger with the accounts proven the agent's (core/recover.py) that it does not name: all
    of them when it was lost (deleted or emptied), said in full; None when there are none."""
    found = strays(observation.host, observation.ledger, cfg.accounts.uid_min, cfg.accounts.uid_max)
    if not found:
        return None
    previous, _ = last_applied(state.snapshot_path)
    user_ids = {u.user_id for u in directory.users} | {u.user_id for u in (previous.users if previous else ())}
    recovery = rebuild(HostState.build(found, []), user_ids, desired.accounts, cfg.accounts.uid_min,
                       cfg.accounts.uid_max)
    if observation.ledger.accounts:
        recovery = adopt(observation.ledger, recovery)
    return recovery if recovery.notes else None


def recover_state(cfg: Config, desired: Desired, directory: Directory, observation: Observation, state: StateDir,
                  apply: bool) -> tuple[Observation, tuple[str, ...]]:
    """The observation with both ledgers rebuilt from proof where they were lost (core/recover.py),
    what was rebuilt and left alone in words, and (when `apply`) the rebuilt ledgers written."""
    notes: tuple[str, ...] = ()
    recovery = recover_ledger(cfg, desired, directory, observation, state)
    if recovery is not None:
        observation, notes = replace(observation, ledger=recovery.ledger), recovery.notes
        if apply and recovery.ledger.accounts:
            _record_recovery(state.ledger, recovery.ledger)
    if not observation.sudo_ledger.files and any(n.startswith(FILE_PREFIX) for n in observation.drop_ins):
        sudo_ledger, sudo_notes = rebuild_sudo(observation.ledger, observation.drop_ins)
        observation, notes = replace(observation, sudo_ledger=sudo_ledger), notes + sudo_notes
        if apply and sudo_ledger.files:
            _record_recovery(state.sudo_ledger, sudo_ledger)
    return observation, notes


def _record_recovery(file: LedgerFile[Any], ledger: Any) -> None:
    try:
        file.save(ledger)
    except StateWriteError as exc:
        raise StateWriteError(f"{exc}; nothing was changed") from None


def _plan_afresh(cfg: Config, directory: Directory, observation: Observation, state: StateDir, apply: bool,
                 force: bool) -> tuple[SyncPlan, Observation, bool]:
    """The plan, made: with the ledgers rebuilt first where they were lost. Also whether it may be
    remembered (core/memo.py): only when there was nothing to recover and no stray account to look
    at, so that a later sync with the same inputs would recover nothing either."""
    desired, result = compute_plan(cfg, directory, observation, force)
    settled = not strays(observation.host, observation.ledger, cfg.accounts.uid_min, cfg.accounts.uid_max)
    recovered, notes = recover_state(cfg, desired, directory, observation, state, apply)
    if notes:
        _, result = compute_plan(cfg, directory, recovered, force)
        result = replace(result, warnings=notes + result.warnings)
    return result, recovered, settled and not notes and recovered is observation


@functools.lru_cache(maxsize=None)
def code_stamp() -> str:
    """Which code is planning (a remembered plan is never taken by other code): see stamp_of."""
    return stamp_of(os.path.dirname(os.path.abspath(__file__)))


def stamp_of(top: str) -> str:
    """The interpreter's version and Unicode data (they decide, e.g., which characters str.isalnum()
    takes in a Run As name), the agent's version, and every module under `top` by path and SHA-256
    of its content (a module rewritten with its size and modification time kept is other code)."""
    parts = [sys.version, unicodedata.unidata_version, __version__]
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                parts.append(f"{os.path.relpath(path, top)}:{digest}")
    return "\n".join(parts)


def sync(cfg: Config, *, apply: bool = True, force: bool = False, source: Optional[Source[Any]] = None,
         etc: str = "/etc", progress: Callable[[], None] | None = None,
         using: Appliers | None = None, report: Report | None = None,
         before_apply: Callable[[SyncPlan, Directory], None] | None = None) -> SyncResult:
    """Read the directory, observe the host, plan, and (when `apply`) apply. Raises SourceError
    when the directory could not be read completely or cannot be believed; then nothing is changed.

    `progress`, when given, is called from this thread at points where nothing is half-written (after
    the read, before each action); it may raise to abandon the sync there. `report`, when given, is
    told every few seconds how far a long apply is (phase, done, total). `before_apply`, when given,
    sees the plan and the directory once the plan may be applied, before its first action."""
    started = time.monotonic()
    cfg = resolve_run_as(cfg)  # run_as.expression: from-identity-center -> the live expression
    source = source or make_source(cfg.source)
    fetched = source.fetch()
    assert fetched is not None  # no known version was given
    if progress is not None:
        progress()
    state = StateDir(cfg.state_dir)
    # What the read must still prove against the configuration and the last applied snapshot
    # (fields dropped, rollback, change of store), with people whose records are malformed kept.
    admitted = admit(cfg, fetched.directory, state.snapshot_path, source.describe())
    observation = observe(cfg, etc)
    memo_key = memo.key(code_stamp(), cfg, admitted.directory, observation, force)
    remembered = memo.recall(state.load_memo(), memo_key, observation) if memo_key else None
    if remembered is not None:
        result = remembered  # these inputs gave a plan with nothing to do, and nothing to recover
    else:
        result, observation, keep = _plan_afresh(cfg, admitted.directory, observation, state, apply, force)
        kept = memo.remember(memo_key, result, observation) if memo_key and keep else None
        if kept is not None and apply:
            state.save_memo(kept)
    result = admitted.judge(result, observation.ledger, force)
    sync_result = SyncResult(result, admitted.directory, source_stats=fetched.stats, remembered=remembered is not None)
    if apply and not result.refusals:
        if before_apply is not None and result.changes:
            before_apply(result, admitted.directory)
        sync_result.outcome, sync_result.unrecorded = run_plan(result, observation, state,
                                                               using or appliers(cfg, etc, report), progress)
        try:
            state.save_snapshot(admitted.directory.canonical_bytes())
        except StateWriteError as exc:
            sync_result.unrecorded.append(str(exc))
    sync_result.seconds = time.monotonic() - started
    return sync_result
