"""sshd's effective configuration, read only (`sshd -T`), for the checks that compare its user
patterns with account names."""

from __future__ import annotations

import os
from typing import Any, Callable

from runas_agent.errors import CommandError
from runas_agent.host import subp


def effective_config(sshd: str = "/usr/sbin/sshd", run: Callable[..., Any] | None = None) -> str | None:
    """The output of `sshd -T` (the configuration sshd would run with, one `keyword value` a line),
    or None when sshd is not installed or cannot say (it needs root and its host keys)."""
    if not os.path.exists(sshd):
        return None
    try:
        done = (run or subp.run)([sshd, "-T"], ok=tuple(range(256)), timeout=30)
    except CommandError:
        return None
    return str(done.stdout) if done.returncode == 0 else None
