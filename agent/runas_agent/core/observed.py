"""The observed host (pure): everything a plan is made from besides the directory and the config,
as host/observe.py read it once: accounts and groups as /etc/passwd and /etc/group hold them, the
login.defs UID_MIN, os-release, both ledgers, the sudoers drop-ins and the accounts' shell."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Mapping, Optional

from runas_agent.core.ledger import Ledger
from runas_agent.core.sudoers import Observed, SudoLedger


@dataclass(frozen=True)
class HostUser:
    name: str
    uid: int
    gid: int
    comment: str
    home: str
    shell: str


@dataclass(frozen=True)
class HostGroup:
    name: str
    gid: int
    members: tuple[str, ...]


#: `HostState.homes` value of an entry that is not a directory (a symbolic link, a file)
NOT_A_DIRECTORY = -1


@dataclass(frozen=True)
class HostState:
    users: dict[str, HostUser]
    groups: dict[str, HostGroup]
    uid_min: int = 1000
    uids: dict[int, str] = field(default_factory=dict)
    gids: dict[int, str] = field(default_factory=dict)
    #: names the host's sysusers.d files declare -> the file declaring each (accounts and groups a
    #: package owns, whether or not they exist yet)
    sysusers: Mapping[str, str] = field(default_factory=dict)
    #: user names the host's sudoers files (all that visudo reads) mention -> the first file naming
    #: each, the agent's own drop-ins left out
    sudoers: Mapping[str, str] = field(default_factory=dict)
    #: what is in the home base directory: path -> its owner's UID (NOT_A_DIRECTORY for a link or a
    #: file), as lstat sees it
    homes: Mapping[str, int] = field(default_factory=dict)
    #: the UIDs some live process runs with (real, effective or saved) that can be the agent's: in
    #: its UID range or in its ledger (host/observe.py). Such a process keeps an account resolving,
    #: and `usermod -l` refuses to rename an account of one of them
    busy_uids: frozenset[int] = frozenset()

    @classmethod
    def build(cls, users: list[HostUser], groups: list[HostGroup], uid_min: int = 1000) -> "HostState":
        return cls(
            users={u.name: u for u in users},
            groups={g.name: g for g in groups},
            uid_min=uid_min,
            uids={u.uid: u.name for u in users},
            gids={g.gid: g.name for g in groups},
        )

    @cached_property
    def by_home(self) -> dict[str, HostUser]:
        """home (without a trailing '/') -> the first account passwd gives it to"""
        found: dict[str, HostUser] = {}
        for user in self.users.values():
            found.setdefault(user.home.rstrip("/"), user)
        return found

    @cached_property
    def member_of(self) -> dict[str, tuple[str, ...]]:
        """user name -> the groups whose member lists name it"""
        found: dict[str, list[str]] = {}
        for group in self.groups.values():
            for member in group.members:
                found.setdefault(member, []).append(group.name)
        return {name: tuple(sorted(groups)) for name, groups in found.items()}

    def user_by_uid(self, uid: int) -> HostUser | None:
        name = self.uids.get(uid)
        return self.users.get(name) if name is not None else None


@dataclass(frozen=True)
class ShellOnHost:
    """What the host says about one shell path."""

    path: str
    #: a regular file (links followed)
    exists: bool
    #: executable by its owner (what root's exec needs)
    executable: bool
    #: the shells /etc/shells lists; None when the host has no /etc/shells
    listed: Optional[frozenset[str]]


@dataclass(frozen=True)
class Observation:
    """One read of the host, taken before planning; the plan is a function of it."""

    host: HostState
    #: /etc/os-release as key -> value
    os_release: Mapping[str, str]
    #: the accounts the agent owns (`<state_dir>/ledger.json`)
    ledger: Ledger
    #: the drop-ins the agent owns (`<state_dir>/sudoers.json`)
    sudo_ledger: SudoLedger
    #: file name -> content, for the sudoers directory's files a plan can look at: the agent's own
    #: names and the SSM agent's ssm-user drop-in. Not read (empty) while sudo is not in use.
    drop_ins: Mapping[str, Observed] = field(default_factory=dict)
    #: accounts.shell as the host has it (None: not looked at, nothing to refuse)
    shell: Optional[ShellOnHost] = None
