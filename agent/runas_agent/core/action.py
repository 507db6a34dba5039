"""Actions and outcomes (pure): the base every planned change derives from, and what applying a list
of them came to. Account actions live in core/plan.py, sudoers actions in core/sudoers.py."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Action:
    symbol = "?"
    verb = "act"
    #: the count (runas_agent.status.SyncCounts) a done action of this kind adds to, if any
    counted_as = ""

    @property
    def account(self) -> str:
        return str(getattr(self, "name", ""))

    def detail(self) -> str:
        return ""

    def line(self) -> str:
        detail = self.detail()
        return f"{self.symbol} {self.verb} {self.account}" + (f": {detail}" if detail else "")

    def to_json(self) -> dict[str, Any]:
        return {"action": self.verb, **asdict(self)}


@dataclass
class Outcome:
    """What applying actions came to: those done, and those that failed with the error message."""

    done: list[Action] = field(default_factory=list)
    failed: list[tuple[Action, str]] = field(default_factory=list)
    #: failed actions whose effect may nevertheless be on the host (a write that failed half-way):
    #: the ledger keeps what they may have made, so that the next sync finds it as its own
    in_doubt: list[Action] = field(default_factory=list)

    def failed_accounts(self) -> set[str]:
        return {a.account for a, _ in self.failed}

    def failed_actions(self) -> list[Action]:
        return [a for a, _ in self.failed]

    def undone(self) -> list[Action]:
        """The failed actions known to have changed nothing (what the ledgers are corrected for)."""
        doubt = {id(a) for a in self.in_doubt}
        return [a for a, _ in self.failed if id(a) not in doubt]

    def extend(self, other: "Outcome") -> None:
        self.done.extend(other.done)
        self.failed.extend(other.failed)
        self.in_doubt.extend(other.in_doubt)
