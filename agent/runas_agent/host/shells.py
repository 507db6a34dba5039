"""What this host says about a login shell: the file, and /etc/shells."""

from __future__ import annotations

import os
import stat

from runas_agent.core.observed import ShellOnHost


def listed_shells(etc: str = "/etc") -> frozenset[str] | None:
    """The shells /etc/shells lists, or None when there is no such file."""
    try:
        with open(os.path.join(etc, "shells"), encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return None
    return frozenset(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))


def look(shell: str, etc: str = "/etc") -> ShellOnHost:
    try:
        mode = os.stat(shell).st_mode
    except (OSError, ValueError):
        return ShellOnHost(shell, exists=False, executable=False, listed=listed_shells(etc))
    regular = stat.S_ISREG(mode)
    return ShellOnHost(shell, exists=regular, executable=regular and bool(mode & stat.S_IXUSR),
                       listed=listed_shells(etc))
