"""One sync: source -> desired -> observed -> plan -> apply. The orchestration between the pure core
and the host; the daemon and `--once` both call `sync`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from runas_agent.core import naming
from runas_agent.core.action import Outcome
from runas_agent.core.desired import Desired, compute
from runas_agent.core.observed import Observation
from runas_agent.core.sync import SyncPlan, plan
from runas_agent.directory import Directory
from runas_agent.exitcodes import Exit
from runas_agent.host.accounts import read_os_release
from runas_agent.host.apply import AccountApplier, SudoApplier, apply_plan
from runas_agent.host.engine import EngineApplier
from runas_agent.host.files import Keeper, StateDir
from runas_agent.host.observe import observe
from runas_agent.host.sudoers import SudoersHost
from runas_agent.identitycenter import resolve_run_as
from runas_agent.settings import Config, desired_settings, sync_settings
from runas_agent.settings import name_rules as rules_for
from runas_agent.sources import Source, make_source
from runas_agent.sources.admission import admit
from runas_agent.status import SyncCounts, SyncStatus, status_of


@dataclass
class SyncResult:
    plan: SyncPlan
    directory: Directory
    outcome: Outcome | None = None
    seconds: float = 0.0
    source_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> SyncStatus:
        """What the sync came to (a plan that was not applied: as if nothing had failed)."""
        return status_of(self.plan, self.outcome or Outcome())

    @property
    def counts(self) -> SyncCounts:
        return SyncCounts.of(self.plan, self.outcome)

    @property
    def exit(self) -> Exit:
        """The exit status: the sync's, or for a plan only (`plan`), whether it would change anything."""
        if self.outcome is None and not self.plan.refusals:
            return Exit.CHANGES if self.plan.changes else Exit.OK
        return self.status.exit


def name_rules(cfg: Config, etc: str = "/etc") -> naming.NameRules:
    """The configured account name rules, or those of the host's os-release for `auto`."""
    return rules_for(cfg, read_os_release(f"{etc}/os-release"))


def compute_plan(cfg: Config, directory: Directory, observation: Observation,
                 force: bool = False) -> tuple[Desired, SyncPlan]:
    """The desired state and the whole plan (pure, given the observation)."""
    desired = compute(directory, desired_settings(cfg, rules_for(cfg, observation.os_release)))
    return desired, plan(desired, directory, observation, sync_settings(cfg), force)


@dataclass(frozen=True)
class Appliers:
    """What applies a plan: the account actions, and the sudoers actions after them."""

    accounts: AccountApplier
    sudo: SudoApplier


def appliers(cfg: Config, etc: str = "/etc") -> Appliers:
    """The account engine (host/engine.py) for accounts, host/sudoers.py for drop-ins."""
    return Appliers(EngineApplier(skel=cfg.accounts.skel, etc=etc, rules=name_rules(cfg, etc)),
                    SudoersHost(cfg.sudo.sudoers_dir, cfg.state_dir, cfg.sudo.visudo))


def run_plan(result: SyncPlan, observation: Observation, state: StateDir, using: Appliers,
          progress: Callable[[], None] | None = None) -> Outcome:
    """Apply a plan between the two writes of both ledgers (core/ledger.py): each records what the
    plan may create before the first action, and what really is after the last."""
    accounts, sudo = result.ledgers(observation)
    keepers = (Keeper(state.ledger, accounts), Keeper(state.sudo_ledger, sudo))
    if result.changes:
        for keeper in keepers:
            keeper.intent()
        outcome = apply_plan(result.actions, using.accounts, using.sudo, progress)
    else:
        outcome = Outcome()
    for keeper in keepers:
        keeper.settle(outcome.undone())
    return outcome


def sync(cfg: Config, *, apply: bool = True, force: bool = False, source: Optional[Source[Any]] = None,
         etc: str = "/etc", progress: Callable[[], None] | None = None,
         using: Appliers | None = None) -> SyncResult:
    """Read the directory, observe the host, plan, and (when `apply`) apply. Raises SourceError
    when the directory could not be read completely or cannot be believed; then nothing is changed.

    `progress`, when given, is called from this thread at points where nothing is half-written (after
    the read, before each action); it may raise to abandon the sync there."""
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
    _, result = compute_plan(cfg, admitted.directory, observation, force)
    result = admitted.judge(result, observation.ledger, force)
    sync_result = SyncResult(result, admitted.directory, source_stats=fetched.stats)
    if apply and not result.refusals:
        sync_result.outcome = run_plan(result, observation, state, using or appliers(cfg, etc), progress)
        state.save_snapshot(admitted.directory.canonical_bytes())
    sync_result.seconds = time.monotonic() - started
    return sync_result
