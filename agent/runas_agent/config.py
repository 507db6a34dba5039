"""Configuration (pure apart from `load`): the schema, every key described, and validation that names
the key of each problem and reports all of them at once."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Mapping

import yaml

from runas_agent.errors import ConfigError

DEFAULT_PATH = "/etc/runas-agent/config.yaml"
_ABSENT = object()


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default and meaning."""

    types: tuple
    default: Any
    doc: str
    choices: tuple = ()
    check: Callable[[Any], str | None] | None = None
    required: bool = False
    #: for list keys: the schema of each item (a dict of Keys) or the type of each item
    item: Any = None


def _absolute(value: Any) -> str | None:
    return None if os.path.isabs(value) else "must be an absolute path"


def _positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _fraction(value: Any) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def _uid(value: Any) -> str | None:
    return None if 1000 <= value <= 2**31 - 2 else "must be between 1000 and 2147483646"


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_INSTANCE_ARN = re.compile(r"^arn:aws[a-z-]*:sso:::instance/(sso)?ins-[a-zA-Z0-9-.]{16}$")
_STORE_ID = re.compile(r"^d-[0-9a-f]{10}$|^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

STR = (str,)
OPT_STR = (str, type(None))
INT = (int,)
NUM = (int, float)
BOOL = (bool,)
LIST = (list,)

GROUP_RULE = {
    "identity_store_group": Key(OPT_STR, None, "Identity Store group (DisplayName or GroupId) whose members get the local groups. Applies to per-person accounts."),
    "run_as": Key(OPT_STR, None, "A Run As account name (e.g. a shared organization account) that gets the local groups."),
    "local_groups": Key(LIST, _ABSENT, "Local groups to add the account to. They must exist on the host; the agent does not create them.", required=True, item=str),
}

SUDO_RULE = {
    "identity_store_group": Key(OPT_STR, None, "Identity Store group (DisplayName or GroupId) whose members' personal accounts get the rule. Shared accounts only with shared_accounts: all_members."),
    "run_as": Key(OPT_STR, None, "A Run As account name that gets the rule; the way to grant a shared organization account."),
    "user": Key(OPT_STR, None, "An Identity Store UserName whose personal account gets the rule."),
    "commands": Key(LIST, _ABSENT, "Absolute command paths, with arguments if they must match exactly, '\"\"' for no arguments, or ALL (only when written). No wildcards.", required=True, item=str),
    "runas": Key((str, list), ["root"], "Target user(s) the commands may run as (ALL only when written).", item=str),
    "nopasswd": Key(BOOL, False, "NOPASSWD: managed accounts have no password, so without it sudo asks for one that does not exist."),
    "noexec": Key(BOOL, False, "NOEXEC: the commands may not start further programs."),
    "setenv": Key(BOOL, False, "SETENV: the caller may pass environment variables through sudo."),
    "shared_accounts": Key(STR, "ignore", "identity_store_group rules: ignore (shared accounts never get the rule) or all_members (a shared account gets it while every person behind it is in the group).", choices=("ignore", "all_members")),
}

SCHEMA: dict[str, Any] = {
    "source": {
        "type": Key(STR, "identitystore", "Where the directory comes from: the Identity Store, a directory document on disk, or one in S3 that a publisher writes with `runas-agent export --output s3://...`.", choices=("identitystore", "file", "s3")),
        "region": Key(OPT_STR, None, "The Identity Center home region (may differ from the instance's region)."),
        "identity_store_id": Key(OPT_STR, None, "The Identity Store id, e.g. d-1234567890."),
        "instance_arn": Key(OPT_STR, None, "The IAM Identity Center instance ARN (arn:aws:sso:::instance/ssoins-...), for reading its attributes for access control; when unset, sso-admin ListInstances finds it."),
        "endpoint_url": Key(OPT_STR, None, "Identity Store endpoint override; AWS_ENDPOINT_URL is honoured too."),
        "path": Key(OPT_STR, None, "type: file: the directory document (JSON or YAML)."),
        "url": Key(OPT_STR, None, "type: s3: s3://bucket/key of the directory document; read with conditional GETs (region: the bucket's region)."),
        "max_attempts": Key(INT, 8, "Attempts per Identity Store call before the read fails (throttling, 5xx, timeouts).", check=_positive),
        "connect_timeout": Key(NUM, 5, "Seconds to wait for a connection to the Identity Store.", check=_positive),
        "read_timeout": Key(NUM, 20, "Seconds to wait for one Identity Store response.", check=_positive),
        "read_deadline": Key(NUM, 600, "Seconds a whole directory read may take, retries included.", check=_positive),
    },
    "run_as": {
        "expression": Key(STR, _ABSENT, "Exactly the SSMSessionRunAs value configured in Identity Center, e.g. ${path:userName}; or from-identity-center to read it live at every sync (needs sso:DescribeInstanceAccessControlAttributeConfiguration).", required=True),
        "account_kind": Key(STR, "auto", "person: one account per identity (UID from the UserId); shared: several people may share one account (UID from the name); auto: person for ${path:userName}, shared otherwise.", choices=("auto", "person", "shared")),
    },
    "scope": {
        "groups": Key(LIST, [], "Identity Store groups (DisplayName or GroupId) whose members get accounts. Empty: every enabled user.", item=str),
    },
    "accounts": {
        "shell": Key(STR, "/bin/bash", "Login shell of managed accounts.", check=_absolute),
        "home_base": Key(STR, "/home", "Parent of home directories. The SSM agent sets HOME=/home/<name> whatever passwd says.", check=_absolute),
        "skel": Key(STR, "/etc/skel", "Skeleton directory copied into new home directories.", check=_absolute),
        "uid_min": Key(INT, 1_000_000_000, "Lowest UID/GID the agent derives.", check=_uid),
        "uid_max": Key(INT, 1_799_999_999, "Highest UID/GID the agent derives.", check=_uid),
        "name_rules": Key(STR, "auto", "Account name rules: debian (Debian/Ubuntu useradd), rhel (RHEL/Amazon Linux shadow-utils), auto (from /etc/os-release).", choices=("auto", "debian", "rhel")),
    },
    "groups": Key(LIST, [], "Local supplementary groups for managed accounts. Only memberships the agent added are ever removed.", item=GROUP_RULE),
    "safety": {
        "refuse_empty_directory": Key(BOOL, True, "Refuse to sync a directory with no users at all."),
        "max_disable_fraction": Key(NUM, 0.2, "Refuse a plan that disables more than this share of the active managed accounts...", check=_fraction),
        "max_disable_count": Key(INT, 3, "...unless it disables at most this many (small fleets).", check=lambda v: None if v >= 0 else "must be 0 or more"),
    },
    "sessions": {
        "state_roots": Key(LIST, ["/var/lib/amazon/ssm"], "Directories holding the SSM agent's <instance-id>/document/state/current/<sessionId> files. The agent's data path is /var/lib/amazon/ssm for deb, rpm and snap (classic confinement) installs alike.", item=str),
        "audit_file": Key(STR, "/var/log/runas-agent/sessions.jsonl", "Session records go here as JSON lines when no journald socket exists.", check=_absolute),
        "reconcile_interval": Key(NUM, 60, "Seconds between full reconciliations of session state files with the process table.", check=_positive),
        "end_sessions_of_disabled_people": Key(BOOL, False, "After a sync, end the live sessions of people now disabled in the directory (by session, never by account)."),
        "s3_tagging": {
            "enabled": Key(BOOL, False, "Tag each ended session's S3 log object with the identity behind it."),
            "bucket": Key(OPT_STR, None, "The bucket of session logs for sessions whose SSM state file names none; a session's own bucket (its state file's OutputS3BucketName, the preferences' s3BucketName) comes first."),
            "prefix": Key(STR, "", "The key prefix that goes with bucket (s3KeyPrefix); objects are <prefix>/<sessionId>.log."),
            "region": Key(OPT_STR, None, "The bucket's region."),
            "endpoint_url": Key(OPT_STR, None, "S3 endpoint override; AWS_ENDPOINT_URL is honoured too."),
            "max_wait_seconds": Key(NUM, 900, "How long to keep retrying while the log object has not appeared yet.", check=_positive),
        },
    },
    "sudo": {
        "rules": Key(LIST, [], "Sudo rights of managed accounts; nothing is granted without a rule. Rules by identity_store_group or user are personal: a shared (organization) account gets only rules that name it by run_as, never the union of its members' rights (see docs/sudo.md).", item=SUDO_RULE),
        "sudoers_dir": Key(STR, "/etc/sudoers.d", "The directory /etc/sudoers includes with #includedir; one drop-in per account goes here (root:root 0440).", check=_absolute),
        "remove_ssm_user_blanket": Key(BOOL, False, "Remove the SSM agent's ssm-agent-users drop-in (ssm-user ALL=(ALL) NOPASSWD:ALL), after backing it up under state_dir/sudoers-backup. For fleets where Run As is on."),
        "visudo": Key(STR, "visudo", "The visudo command that checks every drop-in before and the whole tree after it is installed."),
    },
    "daemon": {
        "interval_seconds": Key(NUM, 900, "Seconds between the start of one scheduled sync and the next (plus jitter).", check=lambda v: None if v >= 10 else "must be at least 10"),
        "jitter_seconds": Key(NUM, 120, "Up to this many seconds, drawn at random by each instance for each sync, are added to the interval, so that a fleet started together does not call the Identity Store in the same second.", check=lambda v: None if v >= 0 else "must be 0 or more"),
        "backoff_initial_seconds": Key(NUM, 30, "After a failed directory read, the first retry comes after about this long; each further failure doubles it (with jitter). The accounts are left as they are meanwhile.", check=_positive),
        "backoff_max_seconds": Key(NUM, 900, "The longest wait between retries after failed reads.", check=_positive),
        "lock_wait_seconds": Key(NUM, 300, "How long a scheduled sync waits for a manual `runas-agent --once` that holds the lock before it gives up and retries later.", check=lambda v: None if v >= 0 else "must be 0 or more"),
    },
    "state_dir": Key(STR, "/var/lib/runas-agent", "Where the agent keeps its ledger of owned accounts and its last directory snapshot.", check=_absolute),
}


def _describe(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _type_ok(value: Any, types: tuple) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _validate_section(data: Any, schema: Mapping[str, Any], prefix: str, problems: list[str]) -> SimpleNamespace:
    if not isinstance(data, Mapping):
        problems.append(f"{prefix.rstrip('.') or 'config'}: must be a mapping")
        data = {}
    for key in sorted(set(data) - set(schema), key=str):
        problems.append(f"{prefix}{key}: unknown key")
    out = SimpleNamespace()
    for name, spec in schema.items():
        dotted = f"{prefix}{name}"
        if isinstance(spec, dict):
            setattr(out, name, _validate_section(data.get(name, {}) if data.get(name) is not None else {}, spec, dotted + ".", problems))
            continue
        value = data.get(name, _ABSENT)
        if value is _ABSENT:
            if spec.required:
                problems.append(f"{dotted}: required")
            setattr(out, name, None if spec.default is _ABSENT else spec.default)
            continue
        setattr(out, name, _check_value(value, spec, dotted, problems))
    return out


def _check_value(value: Any, spec: Key, dotted: str, problems: list[str]) -> Any:
    if not _type_ok(value, spec.types):
        problems.append(f"{dotted}: must be {_describe(spec.types)}, not {type(value).__name__}")
        return None if spec.default is _ABSENT else spec.default
    if spec.choices and value not in spec.choices:
        problems.append(f"{dotted}: must be one of {', '.join(spec.choices)}, not {value!r}")
    if spec.check and value is not None:
        message = spec.check(value)
        if message:
            problems.append(f"{dotted}: {message}")
    if isinstance(value, list) and spec.item is not None:
        items = []
        for index, item in enumerate(value):
            where = f"{dotted}[{index}]"
            if isinstance(spec.item, dict):
                items.append(_validate_section(item, spec.item, where + ".", problems))
            elif not _type_ok(item, (spec.item,)):
                problems.append(f"{where}: must be {_describe((spec.item,))}")
            else:
                items.append(item)
        return items
    return value


def _cross_checks(cfg: SimpleNamespace, problems: list[str]) -> None:
    source = cfg.source
    if source.type == "identitystore":
        if not source.region:
            problems.append("source.region: required for type identitystore (the Identity Center home region)")
        elif not _REGION.match(source.region):
            problems.append(f"source.region: {source.region!r} is not an AWS region name")
        if source.identity_store_id is not None and not _STORE_ID.match(source.identity_store_id):
            problems.append(f"source.identity_store_id: {source.identity_store_id!r} is not an Identity Store id (d-xxxxxxxxxx)")
        if source.path is not None:
            problems.append("source.path: only for type file")
    elif source.type == "file":
        if not source.path:
            problems.append("source.path: required for type file")
        elif not os.path.isabs(source.path):
            problems.append("source.path: must be an absolute path")
    elif source.type == "s3":
        from runas_agent.sources.s3 import split_url

        try:
            split_url(source.url or "")
        except ValueError as exc:
            problems.append(f"source.url: required for type s3: {exc}")
    if source.url is not None and source.type != "s3":
        problems.append("source.url: only for type s3")
    if cfg.accounts.uid_min >= cfg.accounts.uid_max:
        problems.append("accounts.uid_min: must be lower than accounts.uid_max")
    if source.instance_arn is not None and not _INSTANCE_ARN.match(source.instance_arn):
        problems.append(f"source.instance_arn: {source.instance_arn!r} is not an IAM Identity Center instance ARN")
    if cfg.run_as.expression == "from-identity-center":
        if not source.region and source.type != "identitystore":
            problems.append("source.region: required with run_as.expression: from-identity-center (the Identity Center home region)")
    elif cfg.run_as.expression is not None:
        from runas_agent.core.expression import ExpressionError, parse

        try:
            parse(cfg.run_as.expression)
        except ExpressionError as exc:
            problems.append(f"run_as.expression: {exc}")
    for index, rule in enumerate(cfg.groups):
        if (rule.identity_store_group is None) == (rule.run_as is None):
            problems.append(f"groups[{index}]: give exactly one of identity_store_group or run_as")
    for extra in CROSS_CHECKS:
        extra(cfg, problems)


def _daemon_checks(cfg: SimpleNamespace, problems: list[str]) -> None:
    if cfg.daemon.backoff_initial_seconds > cfg.daemon.backoff_max_seconds:
        problems.append("daemon.backoff_initial_seconds: must not exceed daemon.backoff_max_seconds")


#: Further cross-key checks registered by feature modules: fn(cfg, problems).
CROSS_CHECKS: list[Callable[[SimpleNamespace, list[str]], None]] = []


def _sessions_checks(cfg: SimpleNamespace, problems: list[str]) -> None:
    tagging = cfg.sessions.s3_tagging
    if tagging.region is not None and not _REGION.match(tagging.region):
        problems.append(f"sessions.s3_tagging.region: {tagging.region!r} is not an AWS region name")
    for index, root in enumerate(cfg.sessions.state_roots):
        if not os.path.isabs(root):
            problems.append(f"sessions.state_roots[{index}]: must be an absolute path")


CROSS_CHECKS.append(_sessions_checks)
CROSS_CHECKS.append(_daemon_checks)


def _sudo_checks(cfg: SimpleNamespace, problems: list[str]) -> None:
    from runas_agent.core.sudoers import check_config

    check_config(cfg, problems)


CROSS_CHECKS.append(_sudo_checks)


def validate(data: Any, path: str | None = None) -> SimpleNamespace:
    """Validate a parsed config document. Raises ConfigError listing every problem."""
    problems: list[str] = []
    if data is None:
        data = {}
    cfg = _validate_section(data, SCHEMA, "", problems)
    if not problems:
        _cross_checks(cfg, problems)
    if problems:
        raise ConfigError(problems, path)
    cfg.path = path
    return cfg


def defaults() -> SimpleNamespace:
    """Every key at its default (required keys without one are None)."""
    return _validate_section({}, SCHEMA, "", [])


def load(path: str = DEFAULT_PATH) -> SimpleNamespace:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(["file not found"], path) from None
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], path) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], path) from None
    return validate(data, path)


def describe_schema(schema: Mapping[str, Any] = SCHEMA, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every key with its default and description (for documentation and `--help`)."""
    rows: list[tuple[str, Any, str]] = []
    for name, spec in schema.items():
        if isinstance(spec, dict):
            rows.extend(describe_schema(spec, f"{prefix}{name}."))
        else:
            rows.append((prefix + name, None if spec.default is _ABSENT else spec.default, spec.doc))
    return rows
