"""The one subprocess seam (host side): argv lists only, never a shell, always a timeout, and a
typed CommandError carrying argv, exit status and stderr."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Sequence

from runas_agent.errors import CommandError

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], *, ok: Sequence[int] = (0,), timeout: float = DEFAULT_TIMEOUT,
        input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run argv. Raise CommandError unless the exit status is in `ok`."""
    argv = [str(a) for a in argv]
    if not argv or any("\0" in a for a in argv):
        raise CommandError(argv, None, "", "invalid argv")
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                              env=env, check=False, close_fds=True)
    except FileNotFoundError:
        raise CommandError(argv, None, "", "command not found") from None
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, str(exc.stderr or ""), f"timed out after {timeout:g}s") from None
    result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if proc.returncode not in ok:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return result
