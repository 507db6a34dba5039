"""The host's sysusers.d declarations (host side): every account and group name the installed
packages declare, whether or not `systemd-sysusers` has created it yet.

The files are read as systemd-sysusers reads them (sysusers.d(5)): `*.conf` in /etc/sysusers.d,
/run/sysusers.d, /usr/local/lib/sysusers.d and /usr/lib/sysusers.d; a file in an earlier directory
replaces one of the same name in a later directory, and a file that is a link to /dev/null (or
empty) masks it. Parsing is core/reserved.py's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from runas_agent.core.reserved import parse_sysusers

DIRECTORIES = ("/etc/sysusers.d", "/run/sysusers.d", "/usr/local/lib/sysusers.d", "/usr/lib/sysusers.d")


@dataclass(frozen=True)
class HostSysusers:
    #: name -> the file that declares it (the first file, in the order systemd-sysusers reads them)
    names: dict[str, str]
    #: files or lines that could not be read, each naming the file
    problems: tuple[str, ...]


def effective_files(directories: tuple[str, ...] = DIRECTORIES) -> list[str]:
    """The files systemd-sysusers would read, sorted by file name, masked ones left out."""
    chosen: dict[str, str] = {}
    for directory in directories:
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = os.path.join(directory, name)
    return [chosen[name] for name in sorted(chosen) if os.path.realpath(chosen[name]) != os.devnull]


def read_sysusers(directories: tuple[str, ...] = DIRECTORIES) -> HostSysusers:
    names: dict[str, str] = {}
    problems: list[str] = []
    for path in effective_files(directories):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror}")
            continue
        parsed = parse_sysusers(text)
        problems.extend(f"{path}: {p}" for p in parsed.problems)
        for entry in parsed.entries:
            for name in entry.names():
                names.setdefault(name, path)
    return HostSysusers(names, tuple(problems))
