"""The user names the host's sudoers files mention (host side): /etc/sudoers and every file it
includes, read as visudo and sudo read them; the parsing is core/mentions.py's.

Includes (sudoers(5)): `@include`/`#include` name a file, `@includedir`/`#includedir` a directory
whose files are read in lexical order, skipping names that end in `~` or contain a `.`. A relative
path is relative to the including file's directory. `%h` (the host name) is not expanded: such a
file is not read.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from runas_agent.core.mentions import Include, parse

log = logging.getLogger(__name__)

#: sudo stops at this include depth (its own limit is 128); a loop stops here too
MAX_DEPTH = 128


@dataclass(frozen=True)
class HostMentions:
    #: user name -> the first file (in the order sudo reads them) that mentions it
    names: dict[str, str]
    #: files that could not be read, each with why
    problems: tuple[str, ...]


def read_mentions(main: str = "/etc/sudoers", skip: frozenset[str] = frozenset()) -> HostMentions:
    """Every user name `main` and the files it includes mention. `skip`: files left out (the
    agent's own drop-ins: what they grant is the agent's plan)."""
    names: dict[str, str] = {}
    problems: list[str] = []
    _read(main, skip, names, problems, set(), 0)
    return HostMentions(names, tuple(problems))


def _read(path: str, skip: frozenset[str], names: dict[str, str], problems: list[str], seen: set[str],
          depth: int) -> None:
    real = os.path.realpath(path)
    if real in seen or depth > MAX_DEPTH:
        return
    seen.add(real)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except FileNotFoundError:
        return
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror}")
        return
    found = parse(text)
    if os.path.normpath(path) not in skip:
        for name in sorted(found.names):
            names.setdefault(name, path)
    for include in found.includes:
        for child in _included(include, os.path.dirname(path)):
            _read(child, skip, names, problems, seen, depth + 1)


def _included(include: Include, base: str) -> list[str]:
    if "%h" in include.path:
        log.debug("not reading %s: %%h is not expanded", include.path)
        return []
    path = os.path.join(base, include.path)
    if not include.dir:
        return [path]
    try:
        entries = sorted(os.listdir(path))
    except OSError:
        return []
    return [os.path.join(path, e) for e in entries if not e.endswith("~") and "." not in e
            and os.path.isfile(os.path.join(path, e))]
