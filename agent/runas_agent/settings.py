"""Typed settings (pure): the validated configuration as frozen dataclasses, and its translation into
the values the core works with.

`config.load()` / `config.validate()` / `config.defaults()` build a `Config`; nothing else does, so every
value here has passed the schema in `config` (which holds each key's type, default and meaning). A
changed copy is made with `dataclasses.replace`, e.g. `replace(cfg, run_as=replace(cfg.run_as,
expression=live))`. Lists of the configuration file are tuples here.

The source section's class depends on `source.type`: `SourceSettings` holds the keys every source type
shares, and a source type with keys of its own (`sources/`) subclasses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from runas_agent.core import naming
from runas_agent.core.allowed import AllowedNames
from runas_agent.core.desired import GroupRule as DesiredGroupRule
from runas_agent.core.desired import Settings as DesiredSettings
from runas_agent.core.desired import resolve_kind
from runas_agent.core.expression import parse
from runas_agent.core.plan import PlanSettings
from runas_agent.core.sudoers import Rule, SudoSettings
from runas_agent.core.sync import SyncSettings


@dataclass(frozen=True)
class SourceSettings:
    """`source`: the keys every source type has."""

    type: str
    #: the Identity Center home region
    region: Optional[str]
    identity_store_id: Optional[str]
    instance_arn: Optional[str]
    endpoint_url: Optional[str]
    max_attempts: int
    connect_timeout: float
    read_timeout: float
    read_deadline: float


@dataclass(frozen=True)
class RunAs:
    expression: str
    account_kind: str


@dataclass(frozen=True)
class Scope:
    groups: Tuple[str, ...]


@dataclass(frozen=True)
class Accounts:
    shell: str
    home_base: str
    skel: str
    uid_min: int
    uid_max: int
    name_rules: str
    #: the regular expression every Run As name must match whole (core/allowed.py); None: no such rule
    allowed_names: Optional[str]


@dataclass(frozen=True)
class GroupRule:
    """`groups[i]`: local groups for the members of an Identity Store group, or for one Run As account."""

    identity_store_group: Optional[str]
    run_as: Optional[str]
    local_groups: Tuple[str, ...]


@dataclass(frozen=True)
class Safety:
    refuse_empty_directory: bool
    max_disable_fraction: float
    max_disable_count: int


@dataclass(frozen=True)
class S3Tagging:
    enabled: bool
    bucket: Optional[str]
    prefix: str
    region: Optional[str]
    endpoint_url: Optional[str]
    max_wait_seconds: float


@dataclass(frozen=True)
class Sessions:
    state_roots: Tuple[str, ...]
    audit_file: str
    reconcile_interval: float
    end_sessions_of_disabled_people: bool
    s3_tagging: S3Tagging


@dataclass(frozen=True)
class SudoRule:
    """`sudo.rules[i]`: who gets the rule (exactly one of identity_store_group, run_as, user), the
    commands, and the target users they may run as (`sudo_as`)."""

    identity_store_group: Optional[str]
    #: the Run As account that gets the rule
    run_as: Optional[str]
    user: Optional[str]
    commands: Tuple[str, ...]
    #: the users the commands may run as (sudoers' Runas_List); formerly the key `runas`
    sudo_as: Tuple[str, ...]
    nopasswd: bool
    noexec: bool
    setenv: bool
    shared_accounts: str


@dataclass(frozen=True)
class Sudo:
    rules: Tuple[SudoRule, ...]
    sudoers_dir: str
    remove_ssm_user_blanket: bool
    visudo: str


@dataclass(frozen=True)
class Daemon:
    interval_seconds: float
    jitter_seconds: float
    backoff_initial_seconds: float
    backoff_max_seconds: float
    lock_wait_seconds: float


@dataclass(frozen=True)
class Publisher:
    """`publisher`: where `runas-agent publish` writes the fleet's snapshot, and what it carries."""

    #: s3://bucket/key of the snapshot (None: this host publishes nothing)
    url: Optional[str]
    #: the KMS key that signs it (id, ARN or alias); None: unsigned
    signing_key: Optional[str]
    #: attribute paths carried beyond what the configuration needs
    fields: Tuple[str, ...]
    #: seconds after which an unchanged snapshot is written again (a new GeneratedAt)
    refresh_seconds: float
    #: seconds between two publishes of the service
    interval_seconds: float


@dataclass(frozen=True)
class Config:
    source: SourceSettings
    run_as: RunAs
    scope: Scope
    accounts: Accounts
    groups: Tuple[GroupRule, ...]
    safety: Safety
    sessions: Sessions
    sudo: Sudo
    daemon: Daemon
    publisher: Publisher
    state_dir: str
    #: the file the configuration was read from (None: not from a file)
    path: Optional[str] = None


# --- what the core needs ---------------------------------------------------------------------------

def desired_settings(cfg: Config, rules: naming.NameRules) -> DesiredSettings:
    """core.desired's settings: the parsed expression, the account kind it implies, scope and groups."""
    expression = parse(cfg.run_as.expression)
    return DesiredSettings(
        expression=expression,
        account_kind=resolve_kind(cfg.run_as.account_kind, expression),
        rules=rules,
        scope_groups=tuple(cfg.scope.groups),
        group_rules=tuple(DesiredGroupRule(r.identity_store_group, r.run_as, tuple(r.local_groups)) for r in cfg.groups),
    )


def plan_settings(cfg: Config) -> PlanSettings:
    """core.plan's settings: the accounts and safety sections."""
    a, s = cfg.accounts, cfg.safety
    return PlanSettings(shell=a.shell, home_base=a.home_base, skel=a.skel, uid_min=a.uid_min, uid_max=a.uid_max,
                        refuse_empty_directory=s.refuse_empty_directory,
                        max_disable_fraction=s.max_disable_fraction, max_disable_count=s.max_disable_count,
                        allowed_names=AllowedNames.from_setting(a.allowed_names))


def sudo_rules(cfg: Config) -> Tuple[Rule, ...]:
    """core.sudoers' policy: the sudo rules, commands with their whitespace collapsed."""
    return tuple(
        Rule(index=index, commands=tuple(" ".join(c.split()) for c in r.commands), sudo_as=tuple(r.sudo_as),
             identity_store_group=r.identity_store_group, run_as=r.run_as, user=r.user,
             nopasswd=r.nopasswd, noexec=r.noexec, setenv=r.setenv, shared_accounts=r.shared_accounts)
        for index, r in enumerate(cfg.sudo.rules))


def sudo_settings(cfg: Config) -> SudoSettings:
    """core.sudoers' settings: the policy, and whether ssm-user's blanket drop-in goes."""
    return SudoSettings(sudo_rules(cfg), cfg.sudo.remove_ssm_user_blanket)


def sync_settings(cfg: Config) -> SyncSettings:
    """core.sync's settings: those of the account plan and of the sudo plan."""
    return SyncSettings(plan_settings(cfg), sudo_settings(cfg))


def name_rules(cfg: Config, os_release: Mapping[str, str]) -> naming.NameRules:
    """The configured account name rules, or those of the host's os-release for `auto`."""
    if cfg.accounts.name_rules != "auto":
        return naming.RULES[cfg.accounts.name_rules]
    return naming.rules_for_os_release(os_release)
