"""Observing the host (host side): everything a plan is made from besides the directory and the
config, read once before planning into one immutable value (core.observed.Observation)."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import replace

from runas_agent.core.ledger import Ledger
from runas_agent.core.observed import NOT_A_DIRECTORY, HostState, Observation
from runas_agent.core.sudoers import SudoLedger
from runas_agent.host.accounts import read_host, read_os_release
from runas_agent.host.files import StateDir
from runas_agent.host.mentions import read_mentions
from runas_agent.host.processes import running_uids
from runas_agent.host.sudoers import read_drop_ins
from runas_agent.host.shells import look as look_at_shell
from runas_agent.host.sysusers import DIRECTORIES, read_sysusers
from runas_agent.settings import Config, sudo_settings

log = logging.getLogger(__name__)


def observe(cfg: Config, etc: str = "/etc") -> Observation:
    """Both ledgers, /etc/passwd, /etc/group, login.defs, sysusers.d, the names sudoers files mention,
    the home base's entries, the UIDs processes
    run with, os-release, and (while sudo is in use: a policy, ssm-user's blanket to remove, or drop-ins the
    agent owns) the sudoers drop-ins. Raises AgentError when a ledger is damaged or a drop-in cannot be read; nothing has been changed then."""
    state = StateDir(cfg.state_dir)
    ledger = state.ledger.load()
    sudo_ledger = state.sudo_ledger.load()
    sudo_in_use = sudo_settings(cfg).in_use or bool(sudo_ledger.files)
    return Observation(
        host=replace(read_host_names(etc), sudoers=sudoers_mentions(cfg, sudo_ledger, etc),
                     homes=read_homes(cfg.accounts.home_base), busy_uids=busy_uids(cfg, ledger)),
        os_release=read_os_release(f"{etc}/os-release"),
        ledger=ledger,
        sudo_ledger=sudo_ledger,
        drop_ins=read_drop_ins(cfg.sudo.sudoers_dir, sudo_ledger) if sudo_in_use else {},
        shell=look_at_shell(cfg.accounts.shell, etc),
    )


def busy_uids(cfg: Config, ledger: Ledger) -> frozenset[int]:
    """The UIDs live processes run with that can be the agent's: in its UID range or owned by its
    ledger (the plan asks only about owned accounts; the rest of the host's processes come and go
    without bearing on it)."""
    mine = {owned.uid for owned in ledger.accounts.values()}
    low, high = cfg.accounts.uid_min, cfg.accounts.uid_max
    return frozenset(uid for uid in running_uids() if low <= uid <= high or uid in mine)


def sudoers_mentions(cfg: Config, sudo_ledger: SudoLedger, etc: str = "/etc") -> dict[str, str]:
    """The user names the host's sudoers files mention, the agent's own drop-ins left out."""
    own = frozenset(os.path.normpath(os.path.join(cfg.sudo.sudoers_dir, f)) for f in sudo_ledger.files.values())
    found = read_mentions(f"{etc}/sudoers", own)
    for problem in found.problems:
        log.warning("sudoers: %s (names it mentions are not known)", problem)
    return found.names


def read_homes(home_base: str) -> dict[str, int]:
    """Every entry of the home base: path -> owner UID, NOT_A_DIRECTORY for anything but a directory
    (lstat: a link is never followed)."""
    base = home_base.rstrip("/") or "/"
    homes: dict[str, int] = {}
    try:
        entries = list(os.scandir(base))
    except (FileNotFoundError, NotADirectoryError):
        return homes
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        homes[f"{base}/{entry.name}"] = st.st_uid if stat.S_ISDIR(st.st_mode) else NOT_A_DIRECTORY
    return homes


def read_host_names(etc: str = "/etc") -> HostState:
    """The accounts and groups, with the names the host reserves besides them: those its sysusers.d
    files declare (read from `etc`'s sysusers.d in place of /etc's)."""
    directories = tuple(f"{etc}/sysusers.d" if d == "/etc/sysusers.d" else d for d in DIRECTORIES)
    return replace(read_host(etc), sysusers=read_sysusers(directories).names)
