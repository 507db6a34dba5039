"""A systemd unit through systemctl (host side), for commands that stop or query the service."""

from __future__ import annotations

import os
from typing import Any, Callable

from runas_agent.host import subp

#: systemd is PID 1 when this directory exists (sd_booted(3)).
SYSTEMD_RUN_DIR = "/run/systemd/system"
UNIT = "runas-agent.service"


class Service:
    """The unit, through systemctl (only when systemd is PID 1)."""

    def __init__(self, unit: str = UNIT, run: Callable[..., Any] | None = None, booted: Callable[[], bool] | None = None):
        self.unit = unit
        self.run = run or subp.run
        self.booted = booted or (lambda: os.path.isdir(SYSTEMD_RUN_DIR))

    def _query(self, verb: str) -> tuple[int, str]:
        result = self.run(["systemctl", verb, self.unit], ok=tuple(range(256)))
        return result.returncode, result.stdout.strip()

    def active(self) -> bool:
        return self.booted() and self._query("is-active")[0] == 0

    def enabled(self) -> str:
        """`systemctl is-enabled` (enabled, disabled, masked...), or "" without systemd."""
        return self._query("is-enabled")[1] if self.booted() else ""

    def stop(self) -> None:
        self.run(["systemctl", "stop", self.unit], timeout=300)
