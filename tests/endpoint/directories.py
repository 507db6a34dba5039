"""Synthetic directory documents (the file source's format) for tests and benchmarks."""

from __future__ import annotations

import uuid
from typing import Any

from runas_agent.directory import ENTERPRISE_EXTENSION


def user_id(index: int) -> str:
    return str(uuid.UUID(int=(0x5EED << 112) | index))


def group_id(index: int) -> str:
    return str(uuid.UUID(int=(0x6A0 << 112) | index))


def make_directory(
    users: int,
    *,
    store_id: str = "d-1234567890",
    users_per_group: int = 50,
    disabled_every: int = 0,
    without_extensions_every: int = 0,
) -> dict[str, Any]:
    """`users` users in ceil(users / users_per_group) groups of consecutive users. Every
    `disabled_every`-th user is DISABLED and every `without_extensions_every`-th has no enterprise
    extension (0: none)."""
    records = []
    for i in range(users):
        record: dict[str, Any] = {
            "IdentityStoreId": store_id,
            "UserId": user_id(i),
            "UserName": f"user{i:05d}",
            "DisplayName": f"User {i}",
            "Name": {"GivenName": "User", "FamilyName": f"N{i}"},
            "Emails": [{"Value": f"user{i:05d}@example.com", "Type": "work", "Primary": True}],
            "UserStatus": "DISABLED" if disabled_every and i % disabled_every == disabled_every - 1 else "ENABLED",
        }
        if not (without_extensions_every and i % without_extensions_every == without_extensions_every - 1):
            record["Extensions"] = {ENTERPRISE_EXTENSION: {"organization": f"Org{i % 7}", "department": "Engineering"}}
        records.append(record)
    groups = []
    memberships = []
    if users_per_group:
        for g in range((users + users_per_group - 1) // users_per_group):
            groups.append({"IdentityStoreId": store_id, "GroupId": group_id(g), "DisplayName": f"group-{g:04d}"})
            for i in range(g * users_per_group, min(users, (g + 1) * users_per_group)):
                memberships.append(
                    {
                        "IdentityStoreId": store_id,
                        "MembershipId": str(uuid.UUID(int=(0x3E3 << 112) | i)),
                        "GroupId": group_id(g),
                        "MemberId": {"UserId": user_id(i)},
                    }
                )
    return {"IdentityStoreId": store_id, "Users": records, "Groups": groups, "GroupMemberships": memberships}
