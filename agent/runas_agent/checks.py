"""What `check-config` says about a valid configuration besides its keys: warnings about this host
(the configuration may be meant for another one, so they do not make it invalid) and about what
the configuration would allow."""

from __future__ import annotations

import os

from runas_agent.core import shells, sudorisk
from runas_agent.host.shells import look
from runas_agent.settings import Config, sudo_rules


def warnings(cfg: Config, etc: str = "/etc") -> list[str]:
    found: list[str] = []
    why = shells.problem(look(cfg.accounts.shell, etc))
    if why:
        found.append(f"accounts.shell: {cfg.accounts.shell} {why}; a sync on this host refuses to give it to "
                     "accounts (if the configuration is for another host, check it there)")
    found += sudorisk.all_risks(sudo_rules(cfg))
    path = getattr(cfg.source, "path", None)
    if path:
        if os.path.isdir(path):
            found.append(f"source.path: {path} is a directory on this host; it must be the directory document, a file")
        elif not os.path.exists(path):
            found.append(f"source.path: {path} does not exist on this host (if the configuration is for another "
                         "host, check it there)")
    return found
