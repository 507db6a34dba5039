"""Configuration (pure apart from `load`): the schema, every key described, and validation that names
the key of each problem and reports all of them at once. The result is a `settings.Config`.

The `source` section is the keys every source type shares plus, for each source type (`sources/`),
the keys only that type has; those checks are the type's own.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping, Optional

import yaml

from runas_agent import settings
from runas_agent.core.allowed import pattern_problem as _allowed_names
from runas_agent.core.projection import field_problem
from runas_agent.core.expression import ExpressionError, parse
from runas_agent.core.sudoers import command_problem, name_problem
from runas_agent.errors import ConfigError
from runas_agent.identitycenter import FROM_IDENTITY_CENTER
from runas_agent.schema import (ABSENT as _ABSENT, BOOL, INT, LIST, NUM, OPT_STR, STR, Key, Section, absolute as _absolute,
                                describe, fraction as _fraction, not_empty, not_negative, positive as _positive,
                                region as _region, uid as _uid, validate_keys)
from runas_agent.settings import Config
from runas_agent.sources import SourceType, source_type, types as source_types
from runas_agent.sources.s3 import split_url

DEFAULT_PATH = "/etc/runas-agent/config.yaml"

_INSTANCE_ARN = re.compile(r"^arn:aws[a-z-]*:sso:::instance/(sso)?ins-[a-zA-Z0-9-.]{16}$")


def _s3_url(value: Any) -> Optional[str]:
    try:
        split_url(value)
    except ValueError as exc:
        return str(exc)
    return None


def _instance_arn(value: Any) -> Optional[str]:
    return None if _INSTANCE_ARN.match(value) else f"{value!r} is not an IAM Identity Center instance ARN"


def _sudo_account(value: Any) -> Optional[str]:
    problem = name_problem(value)
    return f"{value!r} {problem}" if problem else None


def _sudo_target(value: Any) -> Optional[str]:
    return None if value == "ALL" else _sudo_account(value)


def _sudo_command(value: Any) -> Optional[str]:
    problem = command_problem(value)
    return f"{value!r}: {problem}" if problem else None


SOURCE_KEYS = {
    "region": Key(OPT_STR, None, "The Identity Center home region (may differ from the instance's region). With type s3 and no source.bucket_region, also the bucket's region (what configurations written before bucket_region meant by it)."),
    "identity_store_id": Key(OPT_STR, None, "The Identity Store id, e.g. d-1234567890. Type identitystore reads it; "
                                            "types file and s3 refuse a document of any other store."),
    "instance_arn": Key(OPT_STR, None, "The IAM Identity Center instance ARN (arn:aws:sso:::instance/ssoins-...), for reading its attributes for access control; when unset, sso-admin ListInstances finds it.", check=_instance_arn),
    "endpoint_url": Key(OPT_STR, None, "Endpoint override for the source's AWS calls (the Identity Store and sso-admin; S3 for type s3); AWS_ENDPOINT_URL is honoured too."),
    "max_attempts": Key(INT, 8, "Attempts per Identity Store call before the read fails (throttling, 5xx, timeouts).", check=_positive),
    "connect_timeout": Key(NUM, 5, "Seconds to wait for a connection to the Identity Store (or the bucket, for type s3).", check=_positive),
    "read_timeout": Key(NUM, 20, "Seconds to wait for one Identity Store response (or the bucket's, for type s3).", check=_positive),
    "read_deadline": Key(NUM, 600, "Seconds a whole directory read may take, retries included.", check=_positive),
}


class SourceSection:
    """`source`: the keys every source type shares, plus each type's own (`Source.keys`). A type's own
    key is refused under any other type; the section builds the settings class of its type."""

    def __init__(self, common: Mapping[str, Key], types: Mapping[str, SourceType]):
        summary = "; ".join(f"{name}: {cls.summary}" for name, cls in types.items())
        self.types = dict(types)
        self.common: dict[str, Key] = {
            "type": Key(STR, "identitystore", f"Where the directory comes from ({summary}).", choices=tuple(types)),
            **common,
        }
        #: each type's own key -> the types that have it
        self.owned: dict[str, list[SourceType]] = {}
        for cls in types.values():
            for key in cls.keys:
                self.owned.setdefault(key, []).append(cls)
        self.keys: dict[str, Key] = {**self.common, **{k: spec for cls in types.values() for k, spec in cls.keys.items()}}

    def __getitem__(self, name: str) -> Key:
        return self.keys[name]

    def validate(self, data: Any, prefix: str, problems: list[str]) -> settings.SourceSettings:
        values = validate_keys(data, self.keys, prefix, problems)
        chosen = self.types.get(values["type"])
        for key, owners in self.owned.items():
            if chosen not in owners and isinstance(data, Mapping) and data.get(key) is not None:
                problems.append(f"{prefix}{key}: only for type {' or '.join(cls.kind for cls in owners)}")
        if chosen is None:  # an unknown type, reported above: the shared keys are all there is
            return settings.SourceSettings(**{k: values[k] for k in self.common})
        return chosen.settings_class(**{k: values[k] for k in (*self.common, *chosen.keys)})

    def rows(self, prefix: str) -> list[tuple[str, Any, str]]:
        return describe(self.keys, prefix)

    def field_problems(self) -> list[str]:
        out = []
        for cls in self.types.values():
            fields = {f.name for f in dataclasses.fields(cls.settings_class)}
            wanted = set(self.common) | set(cls.keys)
            if fields != wanted:
                out.append(f"{cls.settings_class.__name__}: fields {sorted(fields ^ wanted)} do not match the keys of type {cls.kind}")
        return out


def _group_rule_checks(rule: settings.GroupRule, where: str, problems: list[str]) -> None:
    if (rule.identity_store_group is None) == (rule.run_as is None):
        problems.append(f"{where}: give exactly one of identity_store_group or run_as")


def _sudo_rule_checks(rule: settings.SudoRule, where: str, problems: list[str]) -> None:
    """Who gets the rule (the values themselves are checked by their keys)."""
    given = [k for k in ("identity_store_group", "run_as", "user") if getattr(rule, k) is not None]
    if len(given) != 1:
        problems.append(f"{where}: give exactly one of identity_store_group, run_as or user")
    if rule.shared_accounts != "ignore" and rule.identity_store_group is None:
        problems.append(f"{where}.shared_accounts: only for identity_store_group rules "
                        "(run_as rules name the shared account itself)")


GROUP_RULE = Section(settings.GroupRule, {
    "identity_store_group": Key(OPT_STR, None, "Identity Store group (DisplayName or GroupId) whose members get the local groups. Applies to per-person accounts."),
    "run_as": Key(OPT_STR, None, "A Run As account name (e.g. a shared organization account) that gets the local groups."),
    "local_groups": Key(LIST, _ABSENT, "Local groups to add the account to. They must exist on the host; the agent does not create them.", required=True, item=str),
}, check=_group_rule_checks)

SUDO_RULE = Section(settings.SudoRule, {
    "identity_store_group": Key(OPT_STR, None, "Identity Store group (DisplayName or GroupId) whose members' personal accounts get the rule. Shared accounts only with shared_accounts: all_members."),
    "run_as": Key(OPT_STR, None, "A Run As account name that gets the rule; the way to grant a shared organization account.", check=_sudo_account),
    "user": Key(OPT_STR, None, "An Identity Store UserName whose personal account gets the rule."),
    "commands": Key(LIST, _ABSENT, "Absolute command paths, with arguments if they must match exactly, '\"\"' for no arguments, or ALL (only when written). No wildcards.", required=True, item=str,
                    check=not_empty("command (ALL only when meant)"), item_check=_sudo_command),
    "sudo_as": Key((str, list), ["root"], "Target user(s) the commands may run as, sudo's -u (ALL only when written). The old spelling runas is still accepted (deprecated).", item=str,
                   check=not_empty("target user"), item_check=_sudo_target, old_names=("runas",)),
    "nopasswd": Key(BOOL, False, "NOPASSWD: managed accounts have no password, so without it sudo asks for one that does not exist."),
    "noexec": Key(BOOL, False, "NOEXEC: the commands may not start further programs."),
    "setenv": Key(BOOL, False, "SETENV: the caller may pass environment variables through sudo."),
    "shared_accounts": Key(STR, "ignore", "identity_store_group rules: ignore (shared accounts never get the rule) or all_members (a shared account gets it while every person behind it is in the group).", choices=("ignore", "all_members")),
}, check=_sudo_rule_checks)

SCHEMA = Section(Config, {
    "source": SourceSection(SOURCE_KEYS, source_types()),
    "run_as": Section(settings.RunAs, {
        "expression": Key(STR, _ABSENT, "Exactly the SSMSessionRunAs value configured in Identity Center, e.g. ${path:userName}; or from-identity-center to read it live at every sync (needs sso:DescribeInstanceAccessControlAttributeConfiguration).", required=True),
        "account_kind": Key(STR, "auto", "person: one account per identity (UID from the UserId); shared: several people may share one account (UID from the name); auto: person for ${path:userName}, shared otherwise (plan and doctor warn when auto puts several people in one account).", choices=("auto", "person", "shared")),
    }),
    "scope": Section(settings.Scope, {
        "groups": Key(LIST, [], "Identity Store groups (DisplayName or GroupId) whose members get accounts. Empty: every enabled user.", item=str),
    }),
    "accounts": Section(settings.Accounts, {
        "shell": Key(STR, "/bin/bash", "Login shell of managed accounts. It must exist on the host, be executable and be listed in /etc/shells: a sync refuses to give accounts any other (check-config warns about it on the host it runs on).", check=_absolute),
        "home_base": Key(STR, "/home", "Parent of home directories. The SSM agent sets HOME=/home/<name> whatever passwd says.", check=_absolute),
        "skel": Key(STR, "/etc/skel", "Skeleton directory copied into new home directories.", check=_absolute),
        "uid_min": Key(INT, 1_000_000_000, "Lowest UID/GID the agent derives.", check=_uid),
        "uid_max": Key(INT, 1_799_999_999, "Highest UID/GID the agent derives.", check=_uid),
        "name_rules": Key(STR, "auto", "Account name rules: debian (Debian/Ubuntu useradd), rhel (RHEL/Amazon Linux shadow-utils), auto (from /etc/os-release), rhel-email (the rhel rules with '@' allowed after the first character, for e-mail user names on RHEL-family hosts; pwck -r and grpck -r then report those accounts as invalid names).", choices=("auto", "debian", "rhel", "rhel-email")),
        "allowed_names": Key(OPT_STR, None, "A regular expression every Run As name must match as a whole, e.g. ^[a-z0-9._-]+@corp\\.example$ (recommended: it keeps any name outside the fleet's naming scheme, such as one a package creates later, from becoming an account). Unset: only the built-in checks apply.", check=_allowed_names),
    }),
    "groups": Key(LIST, [], "Local supplementary groups for managed accounts. Only memberships the agent added are ever removed.", item=GROUP_RULE),
    "safety": Section(settings.Safety, {
        "refuse_empty_directory": Key(BOOL, True, "Refuse to sync a directory with no users at all."),
        "max_disable_fraction": Key(NUM, 0.2, "Refuse a plan that disables more than this share of the active managed accounts...", check=_fraction),
        "max_disable_count": Key(INT, 3, "...unless it disables at most this many (small fleets).", check=not_negative),
    }),
    "sessions": Section(settings.Sessions, {
        "state_roots": Key(LIST, ["/var/lib/amazon/ssm"], "Directories holding the SSM agent's <instance-id>/document/state/current/<sessionId> files. The agent's data path is /var/lib/amazon/ssm for deb, rpm and snap (classic confinement) installs alike.", item=str),
        "audit_file": Key(STR, "/var/log/runas-agent/sessions.jsonl", "Session records go here as JSON lines when no journald socket exists.", check=_absolute),
        "reconcile_interval": Key(NUM, 60, "Seconds between full reconciliations of session state files with the process table.", check=_positive),
        "end_sessions_of_disabled_people": Key(BOOL, False, "After a sync, end the live sessions of people now disabled in the directory (by session, never by account)."),
        "s3_tagging": Section(settings.S3Tagging, {
            "enabled": Key(BOOL, False, "Tag each ended session's S3 log object with the identity behind it."),
            "bucket": Key(OPT_STR, None, "The bucket of session logs for sessions whose SSM state file names none; a session's own bucket (its state file's OutputS3BucketName, the preferences' s3BucketName) comes first."),
            "prefix": Key(STR, "", "The key prefix that goes with bucket (s3KeyPrefix); objects are <prefix>/<sessionId>.log."),
            "region": Key(OPT_STR, None, "The bucket's region."),
            "endpoint_url": Key(OPT_STR, None, "S3 endpoint override; AWS_ENDPOINT_URL is honoured too."),
            "max_wait_seconds": Key(NUM, 900, "How long to keep retrying while the log object has not appeared yet.", check=_positive),
        }),
    }),
    "sudo": Section(settings.Sudo, {
        "rules": Key(LIST, [], "Sudo rights of managed accounts; nothing is granted without a rule. Rules by identity_store_group or user are personal: a shared (organization) account gets only rules that name it by run_as, never the union of its members' rights (see docs/sudo.md).", item=SUDO_RULE),
        "sudoers_dir": Key(STR, "/etc/sudoers.d", "The directory /etc/sudoers includes with #includedir; one drop-in per account goes here (root:root 0440).", check=_absolute),
        "remove_ssm_user_blanket": Key(BOOL, False, "Remove the SSM agent's ssm-agent-users drop-in (ssm-user ALL=(ALL) NOPASSWD:ALL), after backing it up under state_dir/sudoers-backup. For fleets where Run As is on."),
        "visudo": Key(STR, "visudo", "The visudo command that checks every drop-in before and the whole tree after it is installed."),
    }),
    "daemon": Section(settings.Daemon, {
        "interval_seconds": Key(NUM, 900, "Seconds between the start of one scheduled sync and the next (plus jitter).", check=lambda v: None if v >= 10 else "must be at least 10"),
        "jitter_seconds": Key(NUM, 120, "Up to this many seconds, drawn at random by each instance for each sync, are added to the interval, so that a fleet started together does not call the Identity Store in the same second.", check=not_negative),
        "backoff_initial_seconds": Key(NUM, 30, "After a failed directory read, the first retry comes after about this long; each further failure doubles it (with jitter). The accounts are left as they are meanwhile.", check=_positive),
        "backoff_max_seconds": Key(NUM, 900, "The longest wait between retries after failed reads.", check=_positive),
        "lock_wait_seconds": Key(NUM, 300, "How long a scheduled sync waits for a manual `runas-agent --once` that holds the lock before it gives up and retries later.", check=not_negative),
    }),
    "publisher": Section(settings.Publisher, {
        "url": Key(OPT_STR, None, "runas-agent publish: s3://bucket/key of the directory snapshot it writes (publisher.yaml's output SnapshotUrl), the source.url of the fleet. Unset: this host publishes nothing.", check=_s3_url),
        "signing_key": Key(OPT_STR, None, "The KMS key (id, ARN or alias; RSA_3072, SIGN_VERIFY) that signs each snapshot, kms:Sign of its SHA-256 digest; the fleet pins its public half (source.signing_public_key). Unset: the snapshot is unsigned, and instances of type s3 refuse it."),
        "fields": Key(LIST, [], "Attribute paths (run_as.expression's vocabulary, e.g. emails[primary eq true].value, enterprise.organization) carried in the snapshot beyond those the fleet needs: every user's ids, UserName, UserStatus, DisplayName and what run_as.expression reads. Session attribution shows the email and organization only when they are carried.", item=str, item_check=field_problem),
        "refresh_seconds": Key(NUM, 21600, "An unchanged directory is written again (a new GeneratedAt) once the published snapshot is this old, so that it stays within the fleet's source.max_age (a quarter of its default).", check=lambda v: None if v >= 60 else "must be at least 60"),
        "interval_seconds": Key(NUM, 300, "runas-agent publish (the service): seconds between two reads of the Identity Store. Directory changes are published at once through Run Command (runas-agent publish --once); this is the safety net.", check=lambda v: None if v >= 10 else "must be at least 10"),
    }),
    "state_dir": Key(STR, "/var/lib/runas-agent", "Where the agent keeps its ledger of owned accounts and its last directory snapshot.", check=_absolute),
}, extra=("path",))


def _cross_checks(cfg: Config, problems: list[str]) -> None:
    if cfg.source.type in source_types():  # an unknown type is reported by its key
        source_type(cfg.source.type).check(cfg.source, problems)
    if cfg.accounts.uid_min >= cfg.accounts.uid_max:
        problems.append("accounts.uid_min: must be lower than accounts.uid_max")
    if cfg.run_as.expression == FROM_IDENTITY_CENTER:
        if not cfg.source.region:
            problems.append("source.region: required with run_as.expression: from-identity-center (the Identity Center home region)")
    else:
        try:
            parse(cfg.run_as.expression)
        except ExpressionError as exc:
            problems.append(f"run_as.expression: {exc}")
    for extra in CROSS_CHECKS:
        extra(cfg, problems)


def _daemon_checks(cfg: Config, problems: list[str]) -> None:
    if cfg.daemon.backoff_initial_seconds > cfg.daemon.backoff_max_seconds:
        problems.append("daemon.backoff_initial_seconds: must not exceed daemon.backoff_max_seconds")


#: Further cross-key checks registered by feature modules: fn(cfg, problems).
CROSS_CHECKS: list[Callable[[Config, list[str]], None]] = []


def _sessions_checks(cfg: Config, problems: list[str]) -> None:
    tagging = cfg.sessions.s3_tagging
    if tagging.region is not None:
        problem = _region(tagging.region)
        if problem:
            problems.append(f"sessions.s3_tagging.region: {problem}")
    for index, root in enumerate(cfg.sessions.state_roots):
        if _absolute(root):
            problems.append(f"sessions.state_roots[{index}]: must be an absolute path")


def _publisher_checks(cfg: Config, problems: list[str]) -> None:
    if cfg.publisher.url and cfg.publisher.url == getattr(cfg.source, "url", None):
        problems.append("publisher.url: is source.url: a publisher reads the Identity Store and writes the snapshot "
                        "its fleet reads, never the object it reads itself")
    if cfg.publisher.refresh_seconds < cfg.publisher.interval_seconds:
        problems.append("publisher.refresh_seconds: must not be less than publisher.interval_seconds")


CROSS_CHECKS.append(_sessions_checks)
CROSS_CHECKS.append(_publisher_checks)
CROSS_CHECKS.append(_daemon_checks)


def validate(data: Any, path: Optional[str] = None) -> Config:
    """Validate a parsed config document. Raises ConfigError listing every problem."""
    problems: list[str] = []
    if data is None:
        data = {}
    cfg: Config = SCHEMA.validate(data, "", problems)
    problems += _new_keys(problems, _checked(_cross_checks, cfg))
    if problems:
        raise ConfigError(problems, path)
    return dataclasses.replace(cfg, path=path)


def _checked(check: Callable[[Config, list[str]], None], cfg: Config) -> list[str]:
    found: list[str] = []
    check(cfg, found)
    return found


def _key(problem: str) -> str:
    return problem.split(":", 1)[0]


def _new_keys(known: list[str], found: list[str]) -> list[str]:
    """The cross-key problems about keys that have no problem yet. The cross-key checks run even when
    some keys are wrong (so that one run lists everything); a wrong key holds its default by then, and
    what a check says about that default would only repeat the key's own problem in other words."""
    bad = {_key(p) for p in known}
    return [p for p in found if not any(_key(p) == k or _key(p).startswith(k + ".") for k in bad)]


def defaults() -> Config:
    """Every key at its default (required keys without one are empty)."""
    cfg: Config = SCHEMA.validate({}, "", [])
    return cfg


#: The largest configuration file read (a configuration is a few kilobytes).
MAX_CONFIG_BYTES = 1024 * 1024


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: no anchors or aliases (a few hundred bytes of nested aliases
    expand to gigabytes in memory), and no key twice in one mapping (YAML keeps the last one
    silently, so a rule could be overridden by a line further down that nobody reads)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise yaml.composer.ComposerError(None, None, f"the {kind}{event.anchor} is refused: the configuration "
                                              "takes no anchors or aliases; write the value out", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise yaml.constructor.ConstructorError(None, None, "the merge key << is refused: write the keys out",
                                                        key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the constructor reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """The configuration file's value, read with StrictLoader (yaml.YAMLError when it is refused)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def load(path: str = DEFAULT_PATH) -> Config:
    """Read, parse and validate the configuration file. Every way it can fail (unreadable, too
    large, not UTF-8, not YAML, a value PyYAML cannot build, invalid keys) is a ConfigError, so that
    the command exits 78 and systemd does not restart the service into the same error."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(["file not found"], path) from None
    except OSError as exc:
        raise ConfigError([f"cannot read: {exc.strerror}"], path) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"larger than {MAX_CONFIG_BYTES} bytes; not read"], path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"not UTF-8: byte 0x{raw[exc.start]:02x} on line {line} ({exc.reason}); "
                           "save the file as UTF-8"], path) from None
    try:
        document = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], path) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. a date like 2024-13-45
        raise ConfigError([f"not valid YAML: {type(exc).__name__}: {exc}"], path) from None
    return validate(document, path)


def describe_schema() -> list[tuple[str, Any, str]]:
    """Every key with its default and description (for documentation and `--help`)."""
    return SCHEMA.rows("")
