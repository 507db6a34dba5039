"""Sudo policy (pure): which rules each managed account gets, the sudoers drop-in that grants exactly
those, its file name, and the actions that bring /etc/sudoers.d in line.

policy + desired accounts + directory + observed drop-ins + sudo ledger -> actions, skips, warnings.
No files or processes here; host/sudoers.py validates with visudo and installs.

Three facts of sudoers(5) shape everything below (checked against sudo 1.9.13):
- `#includedir` skips files whose name contains '.' or ends in '~'. A drop-in named after `john.doe`
  would silently do nothing, so file names are an encoding of the account name plus a hash.
- An unquoted all-capitals name (`OPS`) is read as an alias, and visudo only warns about it: every
  name is therefore written in double quotes.
- Quoting does not neutralise everything: `"#0"` still matches uid 0, `ALL` is a keyword. Names
  starting with '%', '#', '+' or '!', the word ALL, and names holding sudoers metacharacters,
  whitespace or control characters are refused, never escaped.

Shared accounts. An account that several people share (one per organization) gets only rules that
name it with `run_as`. Rules by Identity Store group or user are personal: giving a shared account the
union of its members' personal rights would hand every colleague the rights of the most privileged
one. A group rule may opt in with `shared_accounts: all_members`: a shared account then gets it only
while every person behind it is a member of that group, so nobody gains a right they do not hold
personally. This is the rule core/desired.py applies to local groups.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from runas_agent.core import sudorisk
from runas_agent.core.action import Action
from runas_agent.core.desired import Skip
from runas_agent.core.ledger import Bookkeeping
from runas_agent.directory import Directory

#: First line of every drop-in the agent writes; with the sudo ledger, what makes a file ours.
MARKER = "# runas-agent: managed sudo rights"
FILE_PREFIX = "runas-agent-"
#: Temporary files: the leading '.' makes `#includedir` skip them, so a crash before the rename
#: leaves a file sudo never reads.
TEMP_PREFIX = ".runas-agent-"
TEMP_SUFFIX = ".tmp"
MODE = 0o440
#: The drop-in the SSM agent writes for ssm-user.
SSM_USER_FILE = "ssm-agent-users"
SSM_USER = "ssm-user"

_NAME_PUNCTUATION = frozenset("_.@-+")
_PATH = re.compile(r"^/[A-Za-z0-9_.+@/-]*[A-Za-z0-9_.+@-]\Z")
#: In command arguments these are written escaped (`\=`, `\:`), which sudo matches literally.
_ESCAPED = {"=": "\\=", ":": "\\:"}
#: In command arguments these would change what sudo matches (list separators, wildcards, regular
#: expressions, comments, quotes, negation, escapes), so they are refused.
_ARG_REFUSED = {
    ",": "',' would split the command in two",
    "\\": "'\\' is sudoers' escape character",
    "*": "'*' is a wildcard: sudo would allow more than the command written",
    "?": "'?' is a wildcard: sudo would allow more than the command written",
    "[": "'[' starts a wildcard: sudo would allow more than the command written",
    "]": "']' ends a wildcard",
    "#": "'#' would start a comment",
    "!": "'!' is sudoers' negation",
    '"': "'\"' is only allowed as the whole argument list \"\" (no arguments)",
    "'": "quotes are not shell quotes in sudoers; they would be matched literally",
    "^": "'^' starts a regular expression in sudo 1.9.10+",
    "$": "'$' ends a regular expression in sudo 1.9.10+",
}


# --- policy --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """One rule of the sudo policy (`sudo.rules[index]`)."""

    index: int
    commands: tuple[str, ...]
    #: the target users the commands may run as (sudoers' Runas_List)
    sudo_as: tuple[str, ...] = ("root",)
    identity_store_group: str | None = None
    run_as: str | None = None
    user: str | None = None
    nopasswd: bool = False
    noexec: bool = False
    setenv: bool = False
    shared_accounts: str = "ignore"  # or "all_members"

    @property
    def key(self) -> str:
        return f"sudo.rules[{self.index}]"

    def selector(self) -> str:
        if self.identity_store_group is not None:
            return f"identity_store_group {self.identity_store_group}"
        if self.run_as is not None:
            return f"run_as {self.run_as}"
        return f"user {self.user}"

    def spec(self) -> str:
        """The rule's rights in sudoers syntax, without the user: `(root) NOPASSWD: ... /usr/bin/x`."""
        targets = ", ".join(_runas_token(t) for t in self.sudo_as)
        tags = ("NOPASSWD:" if self.nopasswd else "PASSWD:",
                "NOEXEC:" if self.noexec else "EXEC:",
                "SETENV:" if self.setenv else "NOSETENV:")
        return f"({targets}) {' '.join(tags)} {', '.join(render_command(c) for c in self.commands)}"


# --- names and commands --------------------------------------------------------------------------

def name_problem(name: str) -> str | None:
    """Why `name` cannot be written into sudoers as a user name; None when it can (quoted)."""
    if not name:
        return "is empty"
    if name.upper() == "ALL":
        return "is the sudoers keyword ALL (it would match every user)"
    lead = {"%": "a group", "#": "a numeric uid", "+": "a netgroup", "!": "a negation"}
    if name[0] in lead:
        return f"starts with {name[0]!r}: sudoers would read it as {lead[name[0]]}"
    bad = sorted({ch for ch in name if not (ch.isalnum() or ch in _NAME_PUNCTUATION)})
    if bad:
        shown = ", ".join(repr(ch) for ch in bad)
        return f"contains {shown}, which sudoers would misread"
    if not (name[0].isalnum() or name[0] == "_"):
        return f"starts with {name[0]!r}; a sudoers user name must start with a letter, digit or '_'"
    return None


def quote_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise ValueError(f"{name!r} {problem}")
    return f'"{name}"'


def _runas_token(target: str) -> str:
    return "ALL" if target == "ALL" else quote_name(target)


def command_problem(command: str) -> str | None:
    """Why `command` cannot be a sudoers command of the policy; None when it can."""
    if command == "ALL":
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in command):
        return "contains a control character (newline, tab, ...)"
    words = command.split()
    if not words:
        return "is empty"
    path, args = words[0], words[1:]
    if path == "ALL":
        return "ALL takes no arguments"
    if not path.startswith("/"):
        return "must be an absolute path, or exactly ALL"
    if path.endswith("/"):
        return "names a directory: sudo would allow every command in it"
    if any(part in (".", "..") for part in path.split("/")) or "//" in path:
        return "must be a normalised path (no '.', '..' or '//')"
    for ch, why in _ARG_REFUSED.items():
        if ch in path:
            return why
    if not _PATH.match(path):
        return "the path may only hold letters, digits and _ . + @ - /"
    if args == ['""']:
        return None
    for arg in args:
        for ch, why in _ARG_REFUSED.items():
            if ch in arg:
                return why
    return None


def render_command(command: str) -> str:
    if command == "ALL":
        return "ALL"
    words = command.split()
    if words[1:] == ['""']:
        return " ".join(words)
    return " ".join([words[0]] + ["".join(_ESCAPED.get(ch, ch) for ch in w) for w in words[1:]])


def file_name(account: str) -> str:
    """The drop-in's name: sudo reads it (no '.', no trailing '~') and no two accounts share it
    (`john.doe` and `john_doe` both read `john_doe` but differ in the hash)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", account)[:32]
    digest = hashlib.sha256(account.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{FILE_PREFIX}{safe}-{digest}"


def _comment(text: str) -> str:
    """Directory or config text made safe for a one-line sudoers comment."""
    return re.sub(r"[^\x20-\x7e]", "?", text)


def rule_line(account: str, rule: Rule) -> str:
    return f"{quote_name(account)} ALL={rule.spec()}"


def render(account: str, rules: Iterable[Rule]) -> str:
    """The whole drop-in for one account. Raises ValueError for a name sudoers would misread."""
    quote_name(account)
    lines = [MARKER,
             f'# account "{account}": written by runas-agent on every sync; change the policy, not this file.']
    for rule in rules:
        lines.append(f"# {rule.key} ({_comment(rule.selector())})")
        lines.append(rule_line(account, rule))
    return "\n".join(lines) + "\n"


def rule_lines(content: str) -> list[str]:
    """The rule (non-comment) lines of a drop-in."""
    return [line for line in content.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def rule_at(content: str, line_no: int) -> str | None:
    """The policy key (`sudo.rules[N]`) of the rule at 1-based `line_no` of a rendered drop-in."""
    lines = content.splitlines()
    for line in reversed(lines[:max(0, line_no)]):
        match = re.match(r"# (sudo\.rules\[\d+\])", line)
        if match:
            return match.group(1)
    return None


# --- who gets which rules ------------------------------------------------------------------------

@dataclass(frozen=True)
class Grantee:
    """A managed account as far as sudo cares: its name, kind and the people behind it."""

    name: str
    kind: str  # "person" or "shared"
    user_ids: tuple[str, ...]
    user_names: tuple[str, ...]


def _group_ids(directory: Directory, ref: str) -> set[str]:
    ids = {g.group_id for g in directory.groups}
    if ref in ids:
        return {ref}
    return {g.group_id for g in directory.groups if g.display_name == ref}


def rules_for(grantee: Grantee, rules: Iterable[Rule], directory: Directory) -> list[Rule]:
    """The rules that apply to one account (see the module docstring for shared accounts)."""
    out = []
    for rule in rules:
        if rule.run_as is not None:
            applies = rule.run_as == grantee.name
        elif rule.user is not None:
            applies = grantee.kind == "person" and rule.user in grantee.user_names
        else:
            gids = _group_ids(directory, rule.identity_store_group or "")
            members = set().union(*(directory.members.get(g, frozenset()) for g in gids)) if gids else set()
            if grantee.kind == "person":
                applies = any(uid in members for uid in grantee.user_ids)
            else:
                applies = (rule.shared_accounts == "all_members" and bool(grantee.user_ids)
                           and all(uid in members for uid in grantee.user_ids))
        if applies:
            out.append(rule)
    return out


def policy_warnings(rules: Iterable[Rule], directory: Directory) -> list[str]:
    """Rules that name something the directory does not have (they grant nothing), and rules that
    grant more than they say (core/sudorisk.py)."""
    rules = tuple(rules)
    warnings = sudorisk.all_risks(rules)
    names = {u.user_name for u in directory.users}
    for rule in rules:
        if rule.identity_store_group is not None and not _group_ids(directory, rule.identity_store_group):
            warnings.append(f"{rule.key}: Identity Store group {rule.identity_store_group!r} is not in the directory; the rule grants nothing")
        if rule.user is not None and rule.user not in names:
            warnings.append(f"{rule.key}: Identity Store user {rule.user!r} is not in the directory; the rule grants nothing")
    return warnings


# --- what is on the host, what the agent owns ----------------------------------------------------

@dataclass(frozen=True)
class Observed:
    """One file in the sudoers directory."""

    content: str
    mode: int
    uid: int = 0
    gid: int = 0

    @property
    def marked(self) -> bool:
        return self.content.startswith(MARKER + "\n")


SUDO_LEDGER_VERSION = 1


@dataclass(frozen=True)
class SudoLedger:
    """Drop-ins the agent wrote: account name -> file name in the sudoers directory."""

    files: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": SUDO_LEDGER_VERSION, "files": dict(sorted(self.files.items()))}

    @classmethod
    def from_dict(cls, data: Any) -> "SudoLedger":
        if (not isinstance(data, dict) or data.get("version") != SUDO_LEDGER_VERSION
                or not isinstance(data.get("files"), dict)
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in data["files"].items())):
            raise ValueError("not a runas-agent sudoers ledger (version 1)")
        for name in data["files"].values():
            if not name.startswith(FILE_PREFIX) or "/" in name:
                raise ValueError(f"sudoers ledger names {name!r}, which is not a runas-agent drop-in")
        return cls(dict(data["files"]))

    def merge(self, planned: "SudoLedger") -> "SudoLedger":
        """Every drop-in either ledger names, the planned file winning for an account in both (the
        intent before applying `planned`)."""
        return SudoLedger({**self.files, **planned.files})


# --- actions -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SudoAction(Action):
    """Base of the sudoers actions, applied after every account action."""


@dataclass(frozen=True)
class WriteSudoers(SudoAction):
    name: str
    file: str
    content: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: what else changed: "new", "mode 0644 -> 0440", "owner", "comments"
    why: str = ""
    verb = "sudoers"
    counted_as = "sudoers_written"

    @property
    def symbol(self) -> str:  # type: ignore[override]
        return "+" if self.why == "new" else "~"

    def detail(self) -> str:
        parts = [f"+ {r}" for r in self.added] + [f"- {r}" for r in self.removed]
        if self.why and self.why != "new":
            parts.append(self.why)
        return f"{self.file}: " + "; ".join(parts)


@dataclass(frozen=True)
class RemoveSudoers(SudoAction):
    name: str
    file: str
    removed: tuple[str, ...]
    reason: str
    symbol = "-"
    verb = "sudoers-remove"
    counted_as = "sudoers_removed"

    def detail(self) -> str:
        rules = "; ".join(f"- {r}" for r in self.removed)
        return f"{self.file} ({self.reason})" + (f": {rules}" if rules else "")


@dataclass(frozen=True)
class RemoveSsmUserBlanket(SudoAction):
    file: str
    #: file name of the backup under <state_dir>/sudoers-backup
    backup: str
    removed: tuple[str, ...]
    name: str = SSM_USER
    symbol = "-"
    verb = "sudoers-remove"
    counted_as = "sudoers_removed"

    def detail(self) -> str:
        return (f"{self.file}, the SSM agent's blanket drop-in (sudo.remove_ssm_user_blanket), backed up as "
                f"{self.backup}: " + "; ".join(f"- {r}" for r in self.removed))


def backup_name(content: str) -> str:
    """Content-addressed, so a re-created file is backed up once per distinct content, never overwritten."""
    return f"{SSM_USER_FILE}.{hashlib.sha256(content.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


def is_ssm_blanket(content: str) -> bool:
    """True when every rule line of the file grants to ssm-user (what the SSM agent writes)."""
    lines = rule_lines(content)
    return bool(lines) and all(re.match(r"^ssm-user[ \t]", line) for line in lines)


# --- planning ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SudoSettings:
    """What sudo planning needs from the config: the policy and whether ssm-user's blanket goes."""

    rules: tuple[Rule, ...] = ()
    remove_ssm_user_blanket: bool = False

    @property
    def in_use(self) -> bool:
        """Whether the policy can ask for anything (with the ledger, whether the drop-ins matter)."""
        return bool(self.rules) or self.remove_ssm_user_blanket


@dataclass(frozen=True)
class SudoPlan:
    actions: tuple[SudoAction, ...] = ()
    skips: tuple[Skip, ...] = ()
    warnings: tuple[str, ...] = ()
    #: the ledger once every action succeeds
    ledger: SudoLedger = field(default_factory=SudoLedger)


@dataclass(frozen=True)
class SudoDecision:
    """What the plan does about one account's drop-in."""

    actions: tuple[SudoAction, ...] = ()
    #: why the account gets no drop-in (reported against its identities)
    skip: str | None = None
    warnings: tuple[str, ...] = ()
    #: the drop-in file name this account takes (no other account may take it after)
    claim: str | None = None
    #: the account's drop-in in the ledger afterwards (None: unchanged, unless `forget`)
    file: str | None = None
    forget: bool = False


@dataclass(frozen=True)
class DropIn:
    """One account's drop-in: as the policy renders it, and as the sudoers directory holds it."""

    account: str
    file: str
    content: str
    rules: tuple[Rule, ...]
    current: Observed | None


#: absent: no such file; ours: the ledger names it and the marker is there; foreign: not in the
#: ledger; edited: in the ledger but the marker is gone (changed by hand).
DropInState = Literal["absent", "ours", "foreign", "edited"]


def drop_in_state(current: Observed | None, owned: bool) -> DropInState:
    if current is None:
        return "absent"
    if not owned:
        return "foreign"
    return "ours" if current.marked else "edited"


def _write_new(d: DropIn) -> SudoDecision:
    write = WriteSudoers(d.account, d.file, d.content, tuple(r.spec() for r in d.rules), (), "new")
    return SudoDecision(actions=(write,), claim=d.file, file=d.file)


def _differences(current: Observed, content: str) -> list[str]:
    """What differs besides the rules: mode, owner, comments."""
    why = []
    if current.mode & 0o7777 != MODE:
        why.append(f"mode {current.mode & 0o7777:04o} -> {MODE:04o}")
    if (current.uid, current.gid) != (0, 0):
        why.append(f"owner {current.uid}:{current.gid} -> 0:0")
    if current.content != content and rule_lines(current.content) == rule_lines(content):
        why.append("comments")
    return why


def _rewrite(d: DropIn) -> SudoDecision:
    """Rewritten when its rules, comments, mode or owner differ from what the policy renders."""
    assert d.current is not None
    why = _differences(d.current, d.content)
    if not why and d.current.content == d.content:
        return SudoDecision(claim=d.file, file=d.file)
    old_lines, new_lines = rule_lines(d.current.content), rule_lines(d.content)
    write = WriteSudoers(d.account, d.file, d.content,
                         tuple(_spec_of(line) for line in new_lines if line not in old_lines),
                         tuple(_spec_of(line) for line in old_lines if line not in new_lines), ", ".join(why))
    return SudoDecision(actions=(write,), claim=d.file, file=d.file)


def _foreign(d: DropIn) -> SudoDecision:
    return SudoDecision(skip=f"{d.file} exists in the sudoers directory and was not written by runas-agent; left alone",
                        claim=d.file)


def _edited(d: DropIn) -> SudoDecision:
    return SudoDecision(warnings=(f"{d.file} (sudo rights of {d.account}) was changed by hand (runas-agent marker gone); "
                                  "left alone",), claim=d.file)


#: Accounts with rules: what the plan does for each state of their drop-in.
WRITING: Mapping[DropInState, Callable[[DropIn], SudoDecision]] = {
    "absent": _write_new, "ours": _rewrite, "foreign": _foreign, "edited": _edited}


def _wanted(account: str, rules: Sequence[Rule], observed: Mapping[str, Observed | None], ledger: SudoLedger,
            claimed: Mapping[str, str]) -> SudoDecision:
    problem = name_problem(account)
    if problem:
        return SudoDecision(skip=f"no sudo rights written: the account name {problem}")
    fname = file_name(account)
    if claimed.get(fname, account) != account:
        return SudoDecision(skip=f"drop-in name {fname} collides with account {claimed[fname]!r}")
    drop_in = DropIn(account, fname, render(account, rules), tuple(rules), observed.get(fname))
    decision = WRITING[drop_in_state(drop_in.current, ledger.files.get(account) == fname)](drop_in)
    old = ledger.files.get(account)
    if decision.file is not None and old is not None and old != fname:
        renamed = _remove_owned(account, old, observed.get(old), "drop-in renamed to " + fname)
        decision = dataclasses.replace(decision, actions=decision.actions + renamed.actions,
                                       warnings=decision.warnings + renamed.warnings)
    return decision


def _leaving_reason(entry: tuple[Grantee, Sequence[Rule]] | None) -> str | None:
    """Why an account the ledger names loses its drop-in (None: it keeps one)."""
    if entry is None:
        return "account no longer active"
    if not entry[1]:
        return "no rule of the policy applies any more"
    return None


def _remove_owned(account: str, fname: str, current: Observed | None, reason: str) -> SudoDecision:
    """Removing an owned drop-in; the ledger entry goes with it (or at once when the file is gone)."""
    if current is None:
        return SudoDecision(forget=True)
    if not current.marked:
        return SudoDecision(warnings=(f"{fname} (sudo rights of {account}) was changed by hand (runas-agent marker gone); "
                                      f"not removing it although {reason}",))
    removed = tuple(_spec_of(line) for line in rule_lines(current.content))
    return SudoDecision(actions=(RemoveSudoers(account, fname, removed, reason),), forget=True)


def _blanket(current: Observed | None) -> SudoDecision:
    """ssm-user's blanket drop-in, when sudo.remove_ssm_user_blanket is set."""
    if current is None:
        return SudoDecision()
    if not is_ssm_blanket(current.content):
        return SudoDecision(warnings=(f"{SSM_USER_FILE} grants more than ssm-user's blanket rule (edited by hand?); "
                                      "sudo.remove_ssm_user_blanket leaves it alone",))
    remove = RemoveSsmUserBlanket(SSM_USER_FILE, backup_name(current.content), tuple(rule_lines(current.content)))
    return SudoDecision(actions=(remove,))


def plan(wanted: Mapping[str, tuple[Grantee, Sequence[Rule]]], observed: Mapping[str, Observed | None],
         ledger: SudoLedger, remove_ssm_blanket: bool = False) -> SudoPlan:
    """wanted: account -> (grantee, its rules) for every account that will be active after the account
    actions (accounts with no rules included: they need no drop-in). observed: file name -> what the
    sudoers directory holds (absent or None: no such file)."""
    decided: list[tuple[str, str, SudoDecision]] = []
    claimed: dict[str, str] = {}
    for account in sorted(wanted):
        grantee, rules = wanted[account]
        if rules:
            decision = _wanted(account, rules, observed, ledger, claimed)
            if decision.claim is not None:
                claimed[decision.claim] = account
            decided.append((account, ", ".join(grantee.user_names) or account, decision))
    for account, fname in sorted(ledger.files.items()):
        reason = _leaving_reason(wanted.get(account))
        if reason is not None:
            decided.append((account, account, _remove_owned(account, fname, observed.get(fname), reason)))
    if remove_ssm_blanket:
        decided.append((SSM_USER, SSM_USER, _blanket(observed.get(SSM_USER_FILE))))
    return _assemble(ledger, decided)


def _assemble(ledger: SudoLedger, decided: Iterable[tuple[str, str, SudoDecision]]) -> SudoPlan:
    actions: list[SudoAction] = []
    skips: list[Skip] = []
    warnings: list[str] = []
    files = dict(ledger.files)
    for account, identity, d in decided:
        actions.extend(d.actions)
        if d.skip is not None:
            skips.append(Skip(identity, account, d.skip))
        warnings.extend(d.warnings)
        if d.forget:
            files.pop(account, None)
        elif d.file is not None:
            files[account] = d.file
    return SudoPlan(tuple(actions), tuple(skips), tuple(warnings), SudoLedger(files))


def _spec_of(line: str) -> str:
    """`"john.doe" ALL=(root) ... ` -> `(root) ...` for display."""
    _, sep, rest = line.partition(" ALL=")
    return rest if sep else line


# --- keeping the ledger across the apply -------------------------------------------------------------

def _write_failed(ledger: SudoLedger, action: WriteSudoers) -> SudoLedger:
    """A failed write put the previous file back: a new drop-in is not there, so not owned."""
    if action.why != "new" or ledger.files.get(action.name) != action.file:
        return ledger
    return SudoLedger({a: f for a, f in ledger.files.items() if a != action.name})


def _remove_failed(ledger: SudoLedger, action: RemoveSudoers) -> SudoLedger:
    """A failed removal left the file there: still owned (unless the account owns another by now)."""
    if action.name in ledger.files:
        return ledger
    return SudoLedger({**ledger.files, action.name: action.file})


SUDO: Bookkeeping[SudoLedger] = Bookkeeping(merge=SudoLedger.merge,
                                            reverts={WriteSudoers: _write_failed, RemoveSudoers: _remove_failed})
