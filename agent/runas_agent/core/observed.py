"""The observed host (pure): accounts and groups as /etc/passwd and /etc/group hold them. Read by
host/accounts.py, compared against by the planner."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class HostState:
    users: dict[str, HostUser]
    groups: dict[str, HostGroup]
    uid_min: int = 1000
    uids: dict[int, str] = field(default_factory=dict)
    gids: dict[int, str] = field(default_factory=dict)

    @classmethod
    def build(cls, users: list[HostUser], groups: list[HostGroup], uid_min: int = 1000) -> "HostState":
        return cls(
            users={u.name: u for u in users},
            groups={g.name: g for g in groups},
            uid_min=uid_min,
            uids={u.uid: u.name for u in users},
            gids={g.gid: g.name for g in groups},
        )

    def user_by_uid(self, uid: int) -> HostUser | None:
        name = self.uids.get(uid)
        return self.users.get(name) if name is not None else None
