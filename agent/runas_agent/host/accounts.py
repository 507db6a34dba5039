"""Reading the host's accounts (host side): /etc/passwd and /etc/group as shadow-utils keeps them.

Only the local files are read: they are what shadow-utils changes, and reading them whole is linear
where per-name NSS lookups would be quadratic on large directories.
"""

from __future__ import annotations

from runas_agent.core.observed import HostGroup, HostState, HostUser

__all__ = ["HostGroup", "HostState", "HostUser", "parse_group", "parse_passwd", "read_groups", "read_host", "read_os_release", "read_users"]


def _fields(line: str, count: int) -> list[str] | None:
    line = line.rstrip("\n")
    if not line or line.startswith(("#", "+", "-")):
        return None
    parts = line.split(":")
    return parts if len(parts) >= count else None


def parse_passwd(text: str) -> list[HostUser]:
    users = []
    for line in text.splitlines():
        parts = _fields(line, 7)
        if parts is None:
            continue
        try:
            users.append(HostUser(parts[0], int(parts[2]), int(parts[3]), parts[4], parts[5], parts[6]))
        except ValueError:
            continue
    return users


def parse_group(text: str) -> list[HostGroup]:
    groups = []
    for line in text.splitlines():
        parts = _fields(line, 4)
        if parts is None:
            continue
        try:
            members = tuple(m for m in parts[3].split(",") if m)
            groups.append(HostGroup(parts[0], int(parts[2]), members))
        except ValueError:
            continue
    return groups


def login_defs_uid_min(text: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "UID_MIN":
            try:
                return int(parts[1])
            except ValueError:
                break
    return 1000


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def read_users(etc: str = "/etc") -> dict[str, HostUser]:
    return {u.name: u for u in parse_passwd(_read(f"{etc}/passwd"))}


def read_groups(etc: str = "/etc") -> dict[str, HostGroup]:
    return {g.name: g for g in parse_group(_read(f"{etc}/group"))}


def read_host(etc: str = "/etc") -> HostState:
    return HostState.build(
        list(read_users(etc).values()),
        list(read_groups(etc).values()),
        login_defs_uid_min(_read(f"{etc}/login.defs")),
    )


def read_os_release(path: str = "/etc/os-release") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in _read(path).splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"').strip("'")
    return out
