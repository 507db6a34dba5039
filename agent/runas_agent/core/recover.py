"""Rebuilding a lost ledger (pure): which accounts on the host are provably the agent's.

The ledger is the agent's only record of what it owns. When it is gone (deleted, or emptied) while
accounts the agent made are still on the host, nothing would ever disable them. It is rebuilt, but
only from proof: an account is the agent's when it carries the marker in its comment, its UID is
its primary GID, and its UID is one the agent derives (core/uids.py, one of the first
`PROOF_PROBES` probes) from a directory identity: the UserId of a person in the directory or in
the last applied snapshot (a per-person account), or the account's own name (a shared account).
The marker alone proves nothing: anyone can write a comment. An account that fails the proof is
reported and left alone, as any account the agent does not own. The same proof adopts an account of
the agent's that a ledger still in use does not name (`adopt`).

A lost sudoers ledger is rebuilt the same way: a drop-in is the agent's when it is root's, in the
sudoers directory (which only root can write) and named exactly as the agent names the drop-in of
an account the accounts ledger owns.

What cannot be proven is not rebuilt: the supplementary groups the agent had added (a membership
found is then treated as an administrator's, and never removed), and a parked account whose person
is no longer wanted (it stays parked, which is safe).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Mapping

from runas_agent.core import naming, uids
from runas_agent.core.desired import MARKER, DesiredAccount
from runas_agent.core.ledger import Ledger, Owned
from runas_agent.core.observed import HostState, HostUser
from runas_agent.core.sudoers import FILE_PREFIX, Observed, SudoLedger, file_name

#: how many probes of a key count as derived from it (a host needs more only with many collisions)
PROOF_PROBES = 8


@dataclass(frozen=True)
class Recovery:
    ledger: Ledger
    #: what was rebuilt and what was left alone, in words
    notes: tuple[str, ...]


def strays(host: HostState, ledger: Ledger, uid_min: int, uid_max: int) -> list[HostUser]:
    """Accounts that look like the agent's (marker, UID in range and equal to the GID) and whose UID
    the ledger does not name: what a lost ledger, or a ledger entry an older version dropped after a
    failed create, leaves."""
    known = ledger.reserved_ids()
    return [u for u in host.users.values() if _candidate(u, uid_min, uid_max) and u.uid not in known]


def adopt(ledger: Ledger, recovery: Recovery) -> Recovery:
    """Proven accounts the ledger does not name, added to it (a name it names already is left as
    the ledger has it); the notes say which."""
    added = {n: o for n, o in recovery.ledger.accounts.items() if n not in ledger.accounts}
    if not added:
        return Recovery(ledger, ())
    note = (f"accounts of the agent's that the ledger did not name (left by an interrupted or older sync), "
            f"adopted from proof of ownership: {', '.join(sorted(added))}")
    return Recovery(Ledger({**ledger.accounts, **added}), (note,))


def _probes(key: str, uid_min: int, uid_max: int) -> list[int]:
    return list(itertools.islice(uids.probes(key, uid_min, uid_max), PROOF_PROBES))


def _candidate(user: HostUser, uid_min: int, uid_max: int) -> bool:
    return user.comment.startswith(MARKER) and uid_min <= user.uid <= uid_max and user.gid == user.uid


def _wanted_by_person(wanted: Mapping[str, DesiredAccount]) -> dict[str, DesiredAccount]:
    return {i.user_id: want for want in wanted.values() if want.kind == "person" for i in want.identities}


def rebuild(host: HostState, user_ids: Iterable[str], wanted: Mapping[str, DesiredAccount],
            uid_min: int, uid_max: int) -> Recovery:
    """The ledger of the accounts on `host` that are provably the agent's. `user_ids`: every
    UserId of the directory and of the last applied snapshot; `wanted`: the desired accounts."""
    person_of: dict[int, str] = {}
    for user_id in user_ids:
        for uid in _probes(uids.person_key(user_id), uid_min, uid_max):
            person_of.setdefault(uid, user_id)
    by_person = _wanted_by_person(wanted)
    accounts: dict[str, Owned] = {}
    notes: list[str] = []
    for user in sorted(host.users.values(), key=lambda u: u.name):
        if not _candidate(user, uid_min, uid_max):
            continue
        owned = _proven(user, person_of, by_person, uid_min, uid_max)
        if isinstance(owned, str):
            notes.append(owned)
        else:
            accounts[owned.name] = owned
    if accounts:
        notes.insert(0, f"the ledger was lost: rebuilt from proof of ownership (marker, and a UID derived from a "
                        f"directory identity) for {len(accounts)} account(s): {', '.join(sorted(accounts))}")
    return Recovery(Ledger(accounts), tuple(notes))


def _proven(user: HostUser, person_of: Mapping[int, str], by_person: Mapping[str, DesiredAccount],
            uid_min: int, uid_max: int) -> Owned | str:
    """The ledger entry `user` proves, or why it proves none."""
    parked = user.name == naming.disabled_name(user.uid)
    person = person_of.get(user.uid)
    if person is not None:
        if not parked:
            return Owned(user.name, user.uid, user.gid, "person", (person,))
        want = by_person.get(person)
        if want is not None:
            return Owned(want.name, user.uid, user.gid, "person", (person,))
        return f"{user.name} (uid {user.uid}) is a parked account of the agent's whose person is not wanted; it stays parked"
    if not parked and user.uid in _probes(uids.shared_key(user.name), uid_min, uid_max):
        return Owned(user.name, user.uid, user.gid, "shared", ())
    return (f"{user.name} (uid {user.uid}) carries the runas-agent marker, but its UID derives from no directory "
            "identity: not the agent's, left alone")


def rebuild_sudo(ledger: Ledger, drop_ins: Mapping[str, Observed]) -> tuple[SudoLedger, tuple[str, ...]]:
    """The sudoers ledger of the drop-ins that are provably the agent's (see above), and notes."""
    files = {name: file_name(name) for name in ledger.accounts
             if (found := drop_ins.get(file_name(name))) is not None and found.uid == 0}
    ours = set(files.values())
    others = sorted(n for n in drop_ins if n.startswith(FILE_PREFIX) and n not in ours)
    notes = []
    if files:
        notes.append(f"the sudoers ledger was lost: rebuilt for {len(files)} drop-in(s) named for accounts the agent "
                     f"owns: {', '.join(sorted(files))}")
    if others:
        notes.append(f"drop-ins under the agent's prefix that name no account it owns, left alone: {', '.join(others)}")
    return SudoLedger(files), tuple(notes)
