"""Session attribution, the pure part: parse an SSM state file and an owner ARN, resolve the person in
the directory, and shape journal records and S3 tags. Takes values, returns values; no files, no
processes, no clock.

Everything read from a state file is hostile: the file belongs to the SSM agent, but its values come
from whoever started the session. Values are type-checked, cut to a bounded length and stripped of
control characters before they are used anywhere.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any, Mapping

from runas_agent import events
from runas_agent.directory import Directory, User
from runas_agent.events import MessageId

#: journald MESSAGE_IDs of the two records (fixed forever: operators filter on them).
MESSAGE_ID_START = events.SESSION_START
MESSAGE_ID_END = events.SESSION_END

#: The SSM agent's DocumentType of a Session Manager session (contracts.StartSession).
SESSION_DOCUMENT_TYPE = "StartSession"

MAX_ROLE_SESSION_NAME = 64

#: A state file bigger than this is not a session state file (real ones are a few KiB).
MAX_STATE_BYTES = 1 << 20
MAX_VALUE_CHARS = 1024

#: Session ids are `<role session name>-<17 hex>`; role session names use [\w+=,.@-]. Anything else in
#: the state directory (temporary files, dot files) is not a session.
SESSION_ID = re.compile(r"^[A-Za-z0-9_+=,.@-]{1,256}\Z")

_STS_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sts::(?P<account>\d{12}):assumed-role/"
    r"(?P<role>[\w+=,.@-]{1,64})/(?P<session>[\w+=,.@-]{1,128})$")
_IAM_USER_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:user/")
_SSO_ROLE = re.compile(r"^AWSReservedSSO_(?P<permset>.+)_[0-9a-f]{16}$")


def valid_session_id(name: str) -> bool:
    return bool(SESSION_ID.match(name)) and not name.startswith(".")


def clean(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A hostile value as a printable string: non-strings become '', control characters '?'."""
    if not isinstance(value, str):
        return ""
    value = value[:limit]
    return "".join("?" if unicodedata.category(ch)[0] == "C" else ch for ch in value)


# --- the SSM agent's state file ---------------------------------------------------------------
#
# The file is the SSM agent's `contracts.DocumentState` marshalled as JSON. The struct has no json
# tags, so the keys are the Go field names. What the session fields hold (amazon-ssm-agent
# `agent/session/contracts/agentmessage.go` buildSessionDocumentInfo, `agent/framework/docparser/
# docparser.go` parsePluginStateForStartSession):
#   DocumentInformation.DocumentID      the session id (also the file's name)
#   DocumentInformation.SessionOwner    the owner's ARN, as the service sent it
#   DocumentInformation.RunAsUser       the Run As user the service sent (the principal's
#                                       SSMSessionRunAs tag); empty when none was sent
#   DocumentInformation.ProcInfo.Pid    the ssm-session-worker's pid, once it runs
#   InstancePluginsInformation[0].Name  the session type: Standard_Stream, InteractiveCommands,
#                                       NonInteractiveCommands or Port
#   ....Configuration.RunAsEnabled      the preferences' runAsEnabled
#   ....Configuration.RunAsUser         the account the shell is started as: RunAsUser above when
#                                       set, else the preferences' runAsDefaultUser
#   ....Configuration.OutputS3BucketName / OutputS3KeyPrefix   where the session log is uploaded
#   ....Configuration.Properties.linux.runAsElevated           commands sessions only: run as root
# DocumentInformation.CreatedDate is not usable (the service's epoch milliseconds read as seconds).

#: Session types (InstancePluginsInformation[0].Name) of the SSM agent's session plugins.
PORT_SESSION = "Port"
#: The session types whose document properties can ask for root (`runAsElevated`); the shell plugin
#: of Standard_Stream sessions is given no properties (amazon-ssm-agent standardstream.go).
COMMAND_SESSIONS = ("InteractiveCommands", "NonInteractiveCommands")
#: The account the SSM agent uses when Run As is disabled in the preferences.
SSM_USER = "ssm-user"
TERMINATE_DOCUMENT_TYPE = "TerminateSession"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")


@dataclass(frozen=True)
class StateInfo:
    """What a state file says about its session."""

    session_owner: str = ""
    run_as_user: str = ""                 # DocumentInformation.RunAsUser: what the service asked for
    document_name: str = ""
    instance_id: str = ""
    document_type: str = ""
    session_type: str = ""                # the plugin: Standard_Stream, InteractiveCommands, Port, ...
    run_as_enabled: bool | None = None    # None: the file does not say
    configured_user: str = ""             # Configuration.RunAsUser: the account the shell is started as
    elevated: bool = False                # a commands session with runAsElevated: root, no Run As check
    s3_bucket: str = ""
    s3_prefix: str = ""
    worker_pid: int | None = None

    @property
    def is_session(self) -> bool:
        """Session Manager keeps its state beside Run Command's and State Manager's (DocumentType
        SendCommand, Association, ...); only StartSession documents are sessions. A state file without
        a DocumentType is taken for one, so that an unexpected layout is recorded rather than missed."""
        return self.document_type in ("", SESSION_DOCUMENT_TYPE)

    @property
    def is_terminate(self) -> bool:
        """A TerminateSession document: the SSM agent writes it under the session's own file name
        (renamed over the live session's state file) while it ends that session."""
        return self.document_type == TERMINATE_DOCUMENT_TYPE

    @property
    def account(self) -> str:
        """The account the SSM agent starts this session's shell as ("" for port forwarding, which
        starts no shell). amazon-ssm-agent shell_unix.go StartCommandExecutor: runAsElevated means
        root with no user check; Run As disabled means ssm-user; otherwise Configuration.RunAsUser."""
        if self.session_type == PORT_SESSION:
            return ""
        if self.elevated:
            return "root"
        if self.run_as_enabled is False:
            return SSM_USER
        return self.configured_user or self.run_as_user


class StateFileError(ValueError):
    """The state file is not (yet) a complete session state document."""


def _mapping(value: Any) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _plugin(document: Mapping) -> Mapping:
    """InstancePluginsInformation[0], or {} when the file has none."""
    plugins = document.get("InstancePluginsInformation")
    return _mapping(plugins[0]) if isinstance(plugins, list) and plugins else {}


def _elevated(session_type: str, configuration: Mapping) -> bool:
    linux = _mapping(_mapping(configuration.get("Properties")).get("linux"))
    return session_type in COMMAND_SESSIONS and linux.get("runAsElevated") is True


def _pid(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 22 else None


def _bucket(value: Any) -> str:
    return value if isinstance(value, str) and _BUCKET.match(value) else ""


def _plugin_fields(document: Mapping) -> dict[str, Any]:
    plugin = _plugin(document)
    configuration = _mapping(plugin.get("Configuration"))
    io_config = _mapping(document.get("IOConfig"))
    session_type = clean(plugin.get("Name") or configuration.get("PluginName"), 64)
    enabled = configuration.get("RunAsEnabled")
    return {
        "session_type": session_type,
        "run_as_enabled": enabled if isinstance(enabled, bool) else None,
        "configured_user": clean(configuration.get("RunAsUser"), 256),
        "elevated": _elevated(session_type, configuration),
        "s3_bucket": _bucket(configuration.get("OutputS3BucketName") or io_config.get("OutputS3BucketName")),
        "s3_prefix": clean(configuration.get("OutputS3KeyPrefix") or io_config.get("OutputS3KeyPrefix"), 512),
    }


def parse_state(data: bytes) -> StateInfo:
    """Parse the SSM agent's document state JSON. Raises StateFileError when it is empty, partial,
    oversized or of the wrong shape (the agent rewrites the file in place, truncating it first: it may
    be caught half-written, and the caller reads it again later)."""
    if len(data) > MAX_STATE_BYTES:
        raise StateFileError(f"larger than {MAX_STATE_BYTES} bytes")
    if not data.strip():
        raise StateFileError("empty")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StateFileError(f"not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise StateFileError("not a JSON object")
    info = document.get("DocumentInformation")
    if not isinstance(info, Mapping):
        raise StateFileError("no DocumentInformation object")
    return StateInfo(
        session_owner=clean(info.get("SessionOwner")),
        run_as_user=clean(info.get("RunAsUser"), 256),
        document_name=clean(info.get("DocumentName"), 256),
        instance_id=clean(info.get("InstanceID"), 64),
        document_type=clean(document.get("DocumentType"), 64),
        worker_pid=_pid(_mapping(info.get("ProcInfo")).get("Pid")),
        **_plugin_fields(document),
    )


def log_object_key(prefix: str, session_id: str) -> str:
    """The S3 key of a session's log: the SSM agent's fileutil.BuildS3Path(prefix, "<id>.log"), which
    is Go's path.Join (cleaned: no doubled or trailing slash, "." and ".." resolved; a leading slash
    stays)."""
    rooted = prefix.startswith("/")
    parts: list[str] = []
    for part in f"{prefix}/{session_id}.log".split("/"):
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
        elif part and part != ".":
            parts.append(part)
    return ("/" if rooted else "") + "/".join(parts)


# --- the owner and the person behind it -------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    """What the owner ARN says. `user_name` is set only for an Identity Center session."""

    arn: str
    aws_account: str = ""
    role: str = ""
    permission_set: str = ""
    user_name: str = ""
    problem: str = ""


def parse_owner(arn: str) -> Owner:
    if not arn:
        return Owner(arn, problem="the state file names no session owner")
    match = _STS_ARN.match(arn)
    if not match:
        if _IAM_USER_ARN.match(arn):
            return Owner(arn, problem="the owner is an IAM user, not an IAM Identity Center user")
        return Owner(arn, problem="the owner is not an assumed-role ARN")
    role, session = match["role"], match["session"]
    sso = _SSO_ROLE.match(role)
    if not sso:
        return Owner(arn, match["account"], role,
                     problem=f"the owner's role {role} is not an IAM Identity Center (AWSReservedSSO_) role")
    return Owner(arn, match["account"], role, sso["permset"], session)


@dataclass(frozen=True)
class Identity:
    """The directory user behind a session."""

    user_name: str
    user_id: str
    display_name: str = ""
    email: str = ""
    organization: str = ""
    groups: tuple[str, ...] = ()
    enabled: bool = True


def _identity(user: User, directory: Directory) -> Identity:
    names = {g.group_id: g.display_name or g.group_id for g in directory.groups}
    groups = tuple(sorted(clean(names.get(gid, gid), 256) for gid in directory.groups_of(user.user_id)))
    return Identity(
        user_name=clean(user.user_name, 256), user_id=clean(user.user_id, 128),
        display_name=clean(user.display_name, 256), email=clean(user.primary_email, 256),
        organization=clean(user.organization, 256), groups=groups, enabled=user.enabled)


def resolve(owner: Owner, directory: Directory | None) -> tuple[Identity | None, str]:
    """The directory user behind `owner`, or None and the reason why not."""
    if owner.problem:
        return None, owner.problem
    if directory is None:
        return None, "no directory snapshot to resolve the owner in (the agent has not synced yet)"
    user = directory.user_by_name(owner.user_name)
    if user is None:
        # Identity Center user names are unique without regard to case; accept an unambiguous match.
        folded = [u for u in directory.users if u.user_name.casefold() == owner.user_name.casefold()]
        user = folded[0] if len(folded) == 1 else None
    if user is None and len(owner.user_name) == MAX_ROLE_SESSION_NAME:
        # STS role session names stop at 64 characters, Identity Center user names at 128: a longer
        # name may arrive cut short (UNCONFIRMED). Accept a prefix match only when it is unambiguous.
        prefixed = [u for u in directory.users if u.user_name.startswith(owner.user_name)]
        user = prefixed[0] if len(prefixed) == 1 else None
    if user is None:
        return None, f"Identity Center user {owner.user_name!r} is not in the directory snapshot"
    return _identity(user, directory), ""


# --- one session --------------------------------------------------------------------------------

@dataclass
class Session:
    """One Session Manager session as the agent knows it. Serialisable (the open-session store)."""

    session_id: str
    owner_arn: str = ""
    requested_account: str = ""          # RunAsUser from the state file
    aws_account: str = ""
    permission_set: str = ""
    identity_user: str = ""              # the Identity Center UserName named by the owner ARN
    identity: Identity | None = None
    unresolved_reason: str = ""
    account: str = ""                    # the account the session runs as (see account_source)
    account_uid: int | None = None
    #: "shell": account and UID are the live shell's; "state-file": the account the SSM agent was told
    #: to start the shell as (the shell itself was not seen); "": unknown
    account_source: str = ""
    session_type: str = ""               # Standard_Stream, InteractiveCommands, Port, ...
    s3_bucket: str = ""                  # where the SSM agent uploads the session's log (state file)
    s3_prefix: str = ""
    worker_pid: int | None = None
    worker_started: float | None = None  # the worker's create_time: tells a reused PID apart
    shell_pid: int | None = None
    started_at: float = 0.0              # epoch seconds
    state_path: str = ""
    detected_by: str = "state-file"      # or "process" (a worker without a state file)
    end_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Session":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if not isinstance(known.get("session_id"), str):
            raise ValueError("session record without session_id")
        identity = known.get("identity")
        if isinstance(identity, Mapping):
            fields = {k: identity[k] for k in Identity.__dataclass_fields__ if k in identity}
            fields["groups"] = tuple(fields.get("groups") or ())
            known["identity"] = Identity(**fields)
        else:
            known["identity"] = None
        return cls(**known)

    @property
    def person(self) -> str:
        """Who, for people: `Display Name <user>`, the user name, or the owner ARN."""
        if self.identity:
            if self.identity.display_name:
                return f"{self.identity.display_name} <{self.identity.user_name}>"
            return self.identity.user_name
        return self.identity_user or self.owner_arn or "unknown"


def attribute(session: Session, info: StateInfo, directory: Directory | None) -> Session:
    """The session with owner and identity filled in from its state file and the directory."""
    owner = parse_owner(info.session_owner)
    identity, reason = resolve(owner, directory)
    return replace(session, owner_arn=owner.arn, requested_account=info.run_as_user,
                   aws_account=owner.aws_account, permission_set=owner.permission_set,
                   identity_user=owner.user_name, identity=identity, unresolved_reason=reason,
                   session_type=info.session_type, s3_bucket=info.s3_bucket, s3_prefix=info.s3_prefix)


def shown_account(s: Session) -> str:
    """The account a record names: the session's; for a session that only knows what the service asked
    for, that (never for port forwarding, which runs as no account)."""
    if s.account or s.session_type == PORT_SESSION:
        return s.account
    return s.requested_account


def _as_whom(s: Session) -> str:
    if s.session_type == PORT_SESSION:
        return "port forwarding (no Run As account)"
    account = shown_account(s) or "?"
    if s.account_source == "state-file":
        return f"as {account} (the account the SSM agent was told to use; its shell was not seen)"
    return f"as {account}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _identity_pairs(s: Session) -> list[tuple[str, Any]]:
    ident = s.identity
    if ident is None:
        return [("RUNAS_IDENTITY_USER", s.identity_user)]
    return [("RUNAS_IDENTITY_USER", ident.user_name), ("RUNAS_IDENTITY_ID", ident.user_id),
            ("RUNAS_IDENTITY_STATUS", "ENABLED" if ident.enabled else "DISABLED"),
            ("RUNAS_DISPLAY_NAME", ident.display_name), ("RUNAS_EMAIL", ident.email),
            ("RUNAS_ORGANIZATION", ident.organization)]


def _end_pairs(s: Session, now: float | None) -> list[tuple[str, Any]]:
    end = now if now is not None else s.started_at
    return [("RUNAS_ENDED_AT", _iso(end)),
            ("RUNAS_DURATION_SEC", max(0, round(end - s.started_at)) if s.started_at else ""),
            ("RUNAS_END_REASON", s.end_reason)]


def record(session: Session, event: str, now: float | None = None) -> tuple[str, MessageId, list[tuple[str, str]]]:
    """The journal record of a session start ("start") or end ("end"): (MESSAGE, MESSAGE_ID, fields).
    Fields with no value are left out; RUNAS_GROUP repeats once per group."""
    s = session
    verb, message_id = ("started", MESSAGE_ID_START) if event == "start" else ("ended", MESSAGE_ID_END)
    message = f"session {s.session_id} {verb}: {s.person} {_as_whom(s)}"
    pairs: list[tuple[str, Any]] = [
        ("RUNAS_EVENT", event),
        ("RUNAS_SESSION_ID", s.session_id),
        ("RUNAS_OWNER_ARN", s.owner_arn),
        ("RUNAS_AWS_ACCOUNT", s.aws_account),
        ("RUNAS_PERMISSION_SET", s.permission_set),
        *_identity_pairs(s),
        ("RUNAS_ACCOUNT", shown_account(s)),
        ("RUNAS_ACCOUNT_UID", s.account_uid),
        ("RUNAS_ACCOUNT_SOURCE", s.account_source),
        ("RUNAS_SESSION_TYPE", s.session_type),
        ("RUNAS_REQUESTED_ACCOUNT", s.requested_account),
        ("RUNAS_WORKER_PID", s.worker_pid),
        ("RUNAS_SHELL_PID", s.shell_pid),
        ("RUNAS_DETECTED_BY", s.detected_by),
        ("RUNAS_STARTED_AT", _iso(s.started_at) if s.started_at else ""),
        ("RUNAS_UNRESOLVED_REASON", s.unresolved_reason),
    ]
    if event == "end":
        pairs += _end_pairs(s, now)
    fields = [(k, str(v)) for k, v in pairs if v is not None and v != ""]
    if s.identity:
        fields += [("RUNAS_GROUP", g) for g in s.identity.groups]
    return message, message_id, fields


# --- S3 object tags ---------------------------------------------------------------------------

MAX_TAGS = 10
MAX_TAG_VALUE = 256
_TAG_ILLEGAL = re.compile(r"[^\w +\-=.:/@]")


def tag_value(value: str) -> str:
    """A value S3 accepts: letters, digits, spaces and + - = . _ : / @ only, at most 256 characters."""
    value = re.sub(r"\s", " ", value)
    return _TAG_ILLEGAL.sub("_", value)[:MAX_TAG_VALUE].strip()


def s3_tags(session: Session) -> list[dict[str, str]]:
    """The identity as S3 object tags, most important first (a full tag set drops from the end)."""
    ident = session.identity
    pairs = [
        ("runas:identity-user", ident.user_name if ident else session.identity_user),
        ("runas:identity-id", ident.user_id if ident else ""),
        ("runas:account", shown_account(session)),
        ("runas:organization", ident.organization if ident else ""),
        ("runas:display-name", ident.display_name if ident else ""),
        ("runas:email", ident.email if ident else ""),
        ("runas:account-uid", "" if session.account_uid is None else str(session.account_uid)),
        ("runas:owner-arn", session.owner_arn),
        ("runas:unresolved", session.unresolved_reason),
    ]
    tags = []
    for key, value in pairs:
        value = tag_value(value or "")
        if value:
            tags.append({"Key": key, "Value": value})
    return tags[:MAX_TAGS]


def merge_tags(existing: list[Mapping[str, str]], ours: list[dict[str, str]]) -> list[dict[str, str]]:
    """Our tags over an object's existing ones: ours replace same-named keys, others' tags are kept,
    and when the total would pass 10 our least important tags give way."""
    keys = {t["Key"] for t in ours}
    kept = [{"Key": t["Key"], "Value": t["Value"]} for t in existing if t.get("Key") not in keys]
    room = max(0, MAX_TAGS - len(kept))
    return kept + ours[:room]
