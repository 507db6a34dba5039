"""The ledgers (pure): what the agent owns, and the protocol that keeps a ledger true across an apply.

The accounts ledger is here; the sudoers ledger is core/sudoers.py's `SudoLedger`. Whether an owned
account is active or disabled is read from the host (its name), never stored, so a crash between two
steps cannot make the two disagree.

Intent, then settle. Before the first action, the ledger records everything the plan may create
(`Bookkeeping.intent`): a crash half-way can then never leave something the agent made but does not
know it owns. After the last action, it records the plan's ledger corrected for each action that
failed (`Bookkeeping.settle`). Each ledger brings its own merge and, per action type, how a failure
of that action corrects it; the protocol itself is the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

LEDGER_VERSION = 1


@dataclass(frozen=True)
class Owned:
    name: str
    uid: int
    gid: int
    kind: str
    #: Identity Store UserIds last seen behind the account
    identities: tuple[str, ...] = ()
    #: supplementary groups the agent added (only these are ever removed)
    groups_added: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "gid": self.gid, "kind": self.kind,
                "identities": list(self.identities), "groups_added": list(self.groups_added)}


@dataclass(frozen=True)
class Ledger:
    accounts: dict[str, Owned] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": LEDGER_VERSION,
                "accounts": {name: self.accounts[name].to_dict() for name in sorted(self.accounts)}}

    @classmethod
    def from_dict(cls, data: Any) -> "Ledger":
        if not isinstance(data, dict) or data.get("version") != LEDGER_VERSION or not isinstance(data.get("accounts"), dict):
            raise ValueError("not a runas-agent ledger (version 1)")
        accounts = {}
        for name, entry in data["accounts"].items():
            try:
                accounts[name] = Owned(
                    name=name, uid=int(entry["uid"]), gid=int(entry["gid"]), kind=str(entry["kind"]),
                    identities=tuple(entry.get("identities", ())), groups_added=tuple(entry.get("groups_added", ())))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"ledger entry {name!r} is malformed: {exc}") from None
        return cls(accounts)

    def with_account(self, owned: Owned) -> "Ledger":
        accounts = dict(self.accounts)
        accounts[owned.name] = owned
        return Ledger(accounts)

    def without(self, name: str) -> "Ledger":
        accounts = dict(self.accounts)
        accounts.pop(name, None)
        return Ledger(accounts)

    def update(self, name: str, **changes: Any) -> "Ledger":
        return self.with_account(replace(self.accounts[name], **changes))

    def merge(self, planned: "Ledger") -> "Ledger":
        """Every account either ledger names; for one in both, the groups either says the agent added
        and the identities the plan found (the intent before applying `planned`). A name the plan
        gives to another account (another UID) is that account's: the one it had is kept by the plan
        under its parked name."""
        accounts = dict(self.accounts)
        for name, owned in planned.accounts.items():
            old = accounts.get(name)
            if old is None or old.uid != owned.uid:  # new, or the name goes to another account
                accounts[name] = owned
            else:
                groups = tuple(sorted(set(old.groups_added) | set(owned.groups_added)))
                accounts[name] = replace(old, groups_added=groups, identities=owned.identities)
        return Ledger(accounts)

    def reserved_ids(self) -> set[int]:
        ids: set[int] = set()
        for owned in self.accounts.values():
            ids.add(owned.uid)
            ids.add(owned.gid)
        return ids


# --- intent, then settle ---------------------------------------------------------------------------

L = TypeVar("L")
#: how a failed action corrects a planned ledger: (ledger, the failed action) -> ledger
Revert = Callable[[L, Any], L]


@dataclass(frozen=True)
class Bookkeeping(Generic[L]):
    """How one ledger is kept across an apply: `merge(before, planned)` is what may exist while the
    plan runs, `reverts` maps an action type to the correction its failure makes."""

    merge: Callable[[L, L], L]
    reverts: Mapping[type, Revert[L]]

    def intent(self, before: L, planned: L) -> L:
        """The ledger to record before applying."""
        return self.merge(before, planned)

    def settle(self, planned: L, failed: Iterable[object]) -> L:
        """The ledger to record after applying: the planned one, corrected for what failed."""
        ledger = planned
        for action in failed:
            revert = self.reverts.get(type(action))
            if revert is not None:
                ledger = revert(ledger, action)
        return ledger


@dataclass(frozen=True)
class Entry(Generic[L]):
    """One ledger across one apply: as it was read, as the plan leaves it, and its bookkeeping."""

    before: L
    planned: L
    book: Bookkeeping[L]

    def intent(self) -> L:
        return self.book.intent(self.before, self.planned)

    def settle(self, failed: Iterable[object]) -> L:
        return self.book.settle(self.planned, failed)
