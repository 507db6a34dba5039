"""The ledger (pure): what the agent owns. Whether an owned account is active or disabled is read
from the host (its name), never stored, so a crash between two steps cannot make the two disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

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

    def reserved_ids(self) -> set[int]:
        ids: set[int] = set()
        for owned in self.accounts.values():
            ids.add(owned.uid)
            ids.add(owned.gid)
        return ids
