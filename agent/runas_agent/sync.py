"""One sync: source -> desired -> observed -> plan -> apply. The orchestration between the pure core
and the host; the daemon and `--once` both call `sync`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from runas_agent.core import naming
from runas_agent.core.desired import Desired, compute
from runas_agent.core.ledger import Ledger
from runas_agent.core.sudoers import RemoveSsmUserBlanket, RemoveSudoers, SudoAction, WriteSudoers
from runas_agent.core.plan import CreateAccount, DisableAccount, EnableAccount, Plan, SetGroupMembers, plan
from runas_agent.directory import Directory
from runas_agent.exitcodes import Exit
from runas_agent.host.accounts import read_host, read_os_release
from runas_agent.host.apply import Applier, Outcome
from runas_agent.host.sudoers import apply_sudo, plan_sudo
from runas_agent.host.files import StateDir
from runas_agent.identitycenter import resolve_run_as
from runas_agent.settings import Config, desired_settings, plan_settings
from runas_agent.sources import Source, make_source
from runas_agent.sources.admission import admit


@dataclass
class SyncResult:
    plan: Plan
    directory: Directory
    outcome: Outcome | None = None
    seconds: float = 0.0
    source_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def exit(self) -> Exit:
        if self.plan.refusals:
            return Exit.REFUSED
        if self.outcome is None:
            return Exit.CHANGES if self.plan.changes else Exit.OK
        if self.outcome.failed or self.plan.skips:
            return Exit.PARTIAL
        return Exit.OK

    def counts(self) -> dict[str, int]:
        done = self.outcome.done if self.outcome else []
        return {
            "created": sum(isinstance(a, CreateAccount) for a in done),
            "disabled": sum(isinstance(a, DisableAccount) for a in done),
            "enabled": sum(isinstance(a, EnableAccount) for a in done),
            "sudoers_written": sum(isinstance(a, WriteSudoers) for a in done),
            "sudoers_removed": sum(isinstance(a, (RemoveSudoers, RemoveSsmUserBlanket)) for a in done),
            "skipped": len(self.plan.skips),
            "failed": len(self.outcome.failed) if self.outcome else 0,
            "actions": len(done),
        }


def name_rules(cfg: Config, etc: str = "/etc") -> naming.NameRules:
    """The configured account name rules, or those of the host's os-release for `auto`."""
    if cfg.accounts.name_rules != "auto":
        return naming.RULES[cfg.accounts.name_rules]
    return naming.rules_for_os_release(read_os_release(f"{etc}/os-release"))


def compute_plan(cfg: Config, directory: Directory, ledger: Ledger, etc: str = "/etc",
                 force: bool = False) -> tuple[Desired, Plan]:
    desired = compute(directory, desired_settings(cfg, name_rules(cfg, etc)))
    host = read_host(etc)
    status = {u.user_id: u.enabled for u in directory.users}
    result = plan(desired, host, ledger, plan_settings(cfg), status, len(directory.users), force)
    plan_sudo(cfg, desired, directory, result)
    return desired, result


def _intent(old: Ledger, new: Ledger) -> Ledger:
    """The ledger to write before applying: every account and group the plan may create is recorded
    first, so a crash half-way can never leave something the agent made but does not know it owns."""
    merged = old
    for name, owned in new.accounts.items():
        if name not in old.accounts:
            merged = merged.with_account(owned)
        else:
            groups = tuple(sorted(set(old.accounts[name].groups_added) | set(owned.groups_added)))
            merged = merged.update(name, groups_added=groups, identities=owned.identities)
    return merged


def _settle(plan_ledger: Ledger, outcome: Outcome) -> Ledger:
    """The ledger after applying: the plan's, corrected for what failed."""
    ledger = plan_ledger
    for action, _ in outcome.failed:
        if isinstance(action, CreateAccount) and action.name in ledger.accounts:
            ledger = ledger.without(action.name)
        elif isinstance(action, SetGroupMembers):
            for name in action.add:
                if name in ledger.accounts:
                    groups = set(ledger.accounts[name].groups_added) - {action.group}
                    ledger = ledger.update(name, groups_added=tuple(sorted(groups)))
            for name in action.remove:
                if name in ledger.accounts:
                    groups = set(ledger.accounts[name].groups_added) | {action.group}
                    ledger = ledger.update(name, groups_added=tuple(sorted(groups)))
    return ledger


def sync(cfg: Config, *, apply: bool = True, force: bool = False, source: Optional[Source[Any]] = None,
         etc: str = "/etc", progress: Callable[[], None] | None = None) -> SyncResult:
    """Read the directory, plan, and (when `apply`) apply. Raises SourceError when the directory
    could not be read completely or cannot be believed; then nothing is changed.

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
    ledger = state.load_ledger()
    _, result = compute_plan(cfg, admitted.directory, ledger, etc, force)
    admitted.judge(result, ledger, force)
    sync_result = SyncResult(result, admitted.directory, source_stats=fetched.stats)
    if apply and not result.refusals:
        if result.changes:
            state.save_ledger(_intent(ledger, result.ledger))
            outcome = Applier(skel=cfg.accounts.skel, etc=etc).apply(
                [a for a in result.actions if not isinstance(a, SudoAction)], progress)
            apply_sudo(cfg, result.actions, outcome)
            state.save_ledger(_settle(result.ledger, outcome))
        else:
            if result.ledger != ledger:
                state.save_ledger(result.ledger)
            outcome = Outcome()
        sync_result.outcome = outcome
        state.save_snapshot(admitted.directory.canonical_bytes())
    sync_result.seconds = time.monotonic() - started
    return sync_result
