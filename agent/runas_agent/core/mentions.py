"""Who host sudoers files name (pure): every user name a sudoers file grants something to or lets
someone act as, and the files it includes.

sudoers rules name users, not UIDs: a rule left after `userdel ghost` (cloud-init's
`ghost ALL=(ALL) NOPASSWD:ALL`), a `User_Alias` listing a deleted user, `Defaults:ghost
!authenticate` or a Runas list `(ghost)` applies to whichever account is made under that name next.
The planner treats a new account's name that any of them mentions as a conflict; this module finds
the names. host/mentions.py reads the files, following the includes as visudo does.

Read are: user lists of rules (`alice, bob ALL = ...`), `User_Alias` and `Runas_Alias` lists, Runas
lists (`(ghost : grp)`), and the bindings of `Defaults:` and `Defaults>`. Group (`%`), netgroup
(`+`) and UID (`#`) items name no user and are left out; a negated item (`!ghost`) is a mention too.
The reading errs towards finding a name: a name in a line it does not understand is still taken
when it sits where a user list would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: `@include path`, `#include path`, `@includedir dir`, `#includedir dir` (sudoers(5), "Including
#: other files from within sudoers")
_INCLUDE = re.compile(r'^[@#](include|includedir)\s+(?:"((?:[^"\\]|\\.)*)"|(\S+))\s*$')
_DEFAULTS = re.compile(r"^Defaults([:>@!]?)")
_ALIASES = ("User_Alias", "Runas_Alias", "Host_Alias", "Cmnd_Alias", "Cmd_Alias")
_NAMES_ALIASES = ("User_Alias", "Runas_Alias")
_RUNAS = re.compile(r"\(([^()]*)\)")


@dataclass(frozen=True)
class Include:
    """An include directive: a file, or a directory whose files are read (`dir` True)."""

    path: str
    dir: bool


@dataclass(frozen=True)
class Mentions:
    names: frozenset[str]
    includes: tuple[Include, ...]


def parse(text: str) -> Mentions:
    """The user names one sudoers file mentions, and the files it includes, in order."""
    names: set[str] = set()
    includes: list[Include] = []
    for line in logical_lines(text):
        include = _INCLUDE.match(line)
        if include is not None:
            path = include.group(2) if include.group(2) is not None else include.group(3)
            includes.append(Include(_unescape(path), include.group(1) == "includedir"))
            continue
        names |= _line_names(_strip_comment(line).strip())
    return Mentions(frozenset(names), tuple(includes))


def logical_lines(text: str) -> list[str]:
    """Lines with backslash-newline continuations joined, leading whitespace removed."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\") and (len(raw) - len(raw.rstrip("\\"))) % 2 == 1:
            pending += raw[:-1] + " "
            continue
        out.append((pending + raw).strip())
        pending = ""
    if pending:
        out.append(pending.strip())
    return out


def _strip_comment(line: str) -> str:
    """The line without its comment: `#` starts one unless escaped, quoted or a UID (`#1000`)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == "#" and not quoted and (i == 0 or line[i - 1] != "\\"):
            if not line[i + 1:i + 2].isdigit():
                return line[:i]
    return line


def _line_names(line: str) -> set[str]:
    if not line:
        return set()
    first = line.split(None, 1)[0]
    defaults = _DEFAULTS.match(first)
    if defaults is not None:
        return _defaults_names(line, defaults.group(1))
    if first in _ALIASES:
        return _alias_names(line[len(first):]) if first in _NAMES_ALIASES else set()
    return _spec_names(line)


def _defaults_names(line: str, binding: str) -> set[str]:
    """`Defaults:alice,bob opts` and `Defaults>ghost opts` bind users; `@host` and `!cmnd` do not."""
    if binding not in (":", ">"):
        return set()
    items, _ = read_list(line[len("Defaults") + 1:])
    return _users(items)


def _alias_names(rest: str) -> set[str]:
    """`NAME = a, b : OTHER = c`"""
    names: set[str] = set()
    while rest.strip():
        _, eq, after = rest.partition("=")
        if not eq:
            break
        items, rest = read_list(after)
        names |= _users(items)
        rest = rest.lstrip()
        if not rest.startswith(":"):
            break
        rest = rest[1:]
    return names


def _spec_names(line: str) -> set[str]:
    """`users hosts = (runas) cmnds : hosts = ...`: the user list and every Runas user list."""
    items, rest = read_list(line)
    names = _users(items)
    for runas in _RUNAS.findall(rest):
        names |= _users(read_list(runas.split(":", 1)[0])[0])
    return names


def read_list(text: str) -> tuple[list[str], str]:
    """A comma-separated list at the start of `text` (items may be quoted or carry escapes; spaces
    around commas are allowed), and the text after it."""
    items: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        start = i
        i = _item_end(text, i)
        if i > start:
            items.append(text[start:i])
        j = i
        while j < n and text[j].isspace():
            j += 1
        if j < n and text[j] == ",":
            i = j + 1
            continue
        return items, text[i:]


def _item_end(text: str, i: int) -> int:
    quoted = False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and (ch.isspace() or ch in ",=:()"):
            break
        i += 1
    return min(i, len(text))


def _users(items: list[str]) -> set[str]:
    names: set[str] = set()
    for item in items:
        item = item.lstrip("!").strip()
        if not item or item[0] in "%+#":
            continue
        names.add(_unescape(item))
    return names


def _unescape(item: str) -> str:
    if len(item) >= 2 and item[0] == item[-1] == '"':
        item = item[1:-1]
    return re.sub(r"\\(.)", r"\1", item)
