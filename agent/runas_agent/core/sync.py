"""One sync's plan (pure): the account plan and the sudo plan, composed.

desired state + directory + the observation -> one plan. Accounts are planned first; sudo rights go
only to accounts that will be active and owned once the account actions are done, so the sudo plan
is made from the account plan. Nothing here reads the host: runas_agent.sync observes it once
(host/observe.py) and applies what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runas_agent.core import sudoers
from runas_agent.core.desired import Desired
from runas_agent.core.ledger import Entry, Ledger
from runas_agent.core.observed import Observation
from runas_agent.core.plan import ACCOUNTS, Plan, PlanSettings
from runas_agent.core.plan import plan as plan_accounts
from runas_agent.core.sudoers import SUDO, Grantee, Rule, SudoLedger, SudoPlan, SudoSettings
from runas_agent.directory import Directory


@dataclass(frozen=True)
class SyncSettings:
    accounts: PlanSettings = field(default_factory=PlanSettings)
    sudo: SudoSettings = field(default_factory=SudoSettings)


@dataclass(frozen=True)
class SyncPlan(Plan):
    """The account actions, then the sudoers actions; skips, warnings and refusals of both."""

    #: the sudoers ledger once every action succeeds
    sudo_ledger: SudoLedger = field(default_factory=SudoLedger)

    def ledgers(self, observation: Observation) -> tuple[Entry[Ledger], Entry[SudoLedger]]:
        """Both ledgers across this plan's apply: as observed, as planned, and how each is kept."""
        return (Entry(observation.ledger, self.ledger, ACCOUNTS),
                Entry(observation.sudo_ledger, self.sudo_ledger, SUDO))


def grantees(desired: Desired, accounts: Plan, rules: tuple[Rule, ...],
             directory: Directory) -> dict[str, tuple[Grantee, list[Rule]]]:
    """Every account that is active and owned once `accounts` is applied, with the rules it gets."""
    skipped = {s.name for s in accounts.skips}
    wanted: dict[str, tuple[Grantee, list[Rule]]] = {}
    for name, account in desired.accounts.items():
        if name in skipped or name not in accounts.ledger.accounts:
            continue
        grantee = Grantee(name, account.kind, tuple(i.user_id for i in account.identities),
                          tuple(i.user_name for i in account.identities))
        wanted[name] = (grantee, sudoers.rules_for(grantee, rules, directory))
    return wanted


def plan_sudo(desired: Desired, directory: Directory, observation: Observation, accounts: Plan,
              settings: SudoSettings) -> SudoPlan:
    if not settings.in_use and not observation.sudo_ledger.files:
        return SudoPlan(ledger=observation.sudo_ledger)
    wanted = grantees(desired, accounts, settings.rules, directory)
    return sudoers.plan(wanted, observation.drop_ins, observation.sudo_ledger, settings.remove_ssm_user_blanket)


def plan(desired: Desired, directory: Directory, observation: Observation, settings: SyncSettings,
         force: bool = False) -> SyncPlan:
    """The whole plan of one sync."""
    status = {u.user_id: u.enabled for u in directory.users}  # UserIds are unique in a Directory
    accounts = plan_accounts(desired, observation.host, observation.ledger, settings.accounts, status, force)
    sudo = plan_sudo(desired, directory, observation, accounts, settings.sudo)
    return SyncPlan(
        actions=accounts.actions + sudo.actions,
        skips=accounts.skips + sudo.skips,
        warnings=(accounts.warnings + tuple(sudoers.policy_warnings(settings.sudo.rules, directory))
                  + sudo.warnings),
        refusals=accounts.refusals,
        ledger=accounts.ledger,
        managed_active=accounts.managed_active,
        sudo_ledger=sudo.ledger,
    )
