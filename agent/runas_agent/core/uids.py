"""Stable UIDs (pure): the same identity gets the same UID and GID on every instance.

A per-person account's UID derives from the Identity Store UserId, a shared account's from its name,
so shared EFS/NFS file ownership agrees across a fleet. The derivation hashes the key into the
configured range; a collision with an ID already taken on this host moves to the next probe of the
same key, which every instance with the same accounts computes identically.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterator

MAX_PROBES = 64


def probes(key: str, uid_min: int, uid_max: int) -> Iterator[int]:
    span = uid_max - uid_min + 1
    for attempt in range(MAX_PROBES):
        digest = hashlib.sha256(f"runas-agent\0{key}\0{attempt}".encode()).digest()
        yield uid_min + int.from_bytes(digest[:8], "big") % span


def derive(key: str, uid_min: int, uid_max: int, taken: Callable[[int], bool]) -> tuple[int, int] | None:
    """(uid, attempt) for `key`: the first probe not taken (as UID nor GID). None if all are taken."""
    for attempt, uid in enumerate(probes(key, uid_min, uid_max)):
        if not taken(uid):
            return uid, attempt
    return None


def person_key(user_id: str) -> str:
    return f"user:{user_id}"


def shared_key(name: str) -> str:
    return f"name:{name}"
