"""Run As names (pure): is a value one that Identity Center can send and this distro can hold?

Names are never transformed: Session Manager passes the value verbatim, so an account created under
any other spelling would never be asked for. A value is either usable as it is or refused with a
reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

#: Characters allowed in an STS session tag value, besides Unicode letters and digits.
TAG_PUNCTUATION = frozenset(" _.:/=+-@")
TAG_MAX_CHARS = 256
NAME_MAX_BYTES = 32
#: Prefix of the names disabled accounts are parked under; never accepted as a Run As name.
DISABLED_PREFIX = "runas-off-"
#: Names never managed, whatever the directory says.
RESERVED = frozenset({"root", "ssm-user", "nobody", "nogroup", "daemon", "bin", "sys", "sync", "sudo", "wheel", "admin", "adm", "ALL"})


@dataclass(frozen=True)
class NameRules:
    """Account name rules of one distro family."""

    family: str
    #: one-line reason per rule, shown when a name breaks it
    pattern: re.Pattern[str] | None
    pattern_reason: str
    #: added to the reason when the refused name has an '@' (the way to allow it)
    at_hint: str = ""

    def check(self, name: str) -> str | None:
        if self.pattern is not None and not self.pattern.match(name):
            return self.pattern_reason + (self.at_hint if "@" in name else "")
        return None


# Debian/Ubuntu useradd (relaxed is_valid_user_name patch): no whitespace, ',' or ':', no leading
# '-', '+' or '~'; upper case, '@', '.' and UTF-8 are accepted.
DEBIAN = NameRules("debian", re.compile(r"^[^\s,:\-+~][^\s,:]*\Z"), "Debian/Ubuntu useradd refuses whitespace, ',', ':' and a leading '-', '+' or '~'")
# RHEL / Amazon Linux shadow-utils: no '@'.
RHEL = NameRules("rhel", re.compile(r"^[a-zA-Z0-9_.][a-zA-Z0-9_.-]{0,30}[a-zA-Z0-9_.$-]?\Z"),
                 "RHEL/Amazon Linux useradd accepts only [a-zA-Z0-9_.-] (no '@'), not starting with '-'",
                 " (accounts.name_rules rhel-email allows '@')")
# The RHEL rule with '@' allowed after the first character, for e-mail user names. The account engine
# writes the databases itself, so RHEL's useradd never sees these names; NSS, sudo, sshd, logind and
# the SSM agent's `id <name>` serve them (docs/design.md, "E-mail user names on RHEL-family hosts").
RHEL_EMAIL = NameRules("rhel-email", re.compile(r"^[a-zA-Z0-9_.][a-zA-Z0-9_.@-]{0,30}[a-zA-Z0-9_.$-]?\Z"),
                       "accounts.name_rules rhel-email accepts only [a-zA-Z0-9_.@-], not starting with '-' or '@'")

RULES = {"debian": DEBIAN, "rhel": RHEL, "rhel-email": RHEL_EMAIL}


def rules_for_os_release(os_release: Mapping[str, str]) -> NameRules:
    """debian rules for Debian and Ubuntu, rhel rules for everything else (the stricter set)."""
    ids = {os_release.get("ID", "")} | set(os_release.get("ID_LIKE", "").split())
    return DEBIAN if ids & {"debian", "ubuntu"} else RHEL


_WITHOUT_PUNCTUATION = {ord(ch): None for ch in TAG_PUNCTUATION}


def tag_value_problem(value: str) -> str | None:
    """Why `value` cannot be an STS session tag value (so can never arrive as a Run As user)."""
    if len(value) > TAG_MAX_CHARS:
        return f"longer than the {TAG_MAX_CHARS} characters a session tag value may have"
    rest = value.translate(_WITHOUT_PUNCTUATION)
    if rest and not rest.isalnum():  # every character alphanumeric or allowed punctuation
        bad = sorted({ch for ch in value if not (ch.isalnum() or ch in TAG_PUNCTUATION)})
        shown = ", ".join(repr(ch) for ch in bad)
        return f"not a legal session tag value (Identity Center cannot send {shown})"
    return None


def name_problem(value: str, rules: NameRules) -> str | None:
    """Why `value` cannot be a managed Run As account on a host with these rules; None when it can."""
    if value == "":
        return "the Run As value is empty"
    problem = tag_value_problem(value)
    if problem:
        return problem
    if "/" in value:
        return "contains '/'"
    if len(value.encode("utf-8")) > NAME_MAX_BYTES:
        return f"longer than {NAME_MAX_BYTES} bytes, the limit for account names"
    if value in (".", ".."):
        return "is '.' or '..'"
    if value.startswith("-"):
        return "starts with '-' (would be read as an option)"
    if value.isdigit():
        # `id 1234` resolves a UID, and the SSM agent checks accounts with `id <name>`.
        return "is all digits (would be read as a UID)"
    if value in RESERVED or value.lower() in {"root", "ssm-user"}:
        return f"{value!r} is a reserved account name"
    if value.startswith(DISABLED_PREFIX):
        return f"starts with {DISABLED_PREFIX!r}, the prefix of disabled accounts"
    return rules.check(value)


def disabled_name(uid: int) -> str:
    """The name a disabled account is parked under: unique per UID, legal everywhere, never a tag value
    the agent accepts (so `id <original name>` fails and nobody can ask for it)."""
    return f"{DISABLED_PREFIX}{uid}"
