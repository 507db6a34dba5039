"""What a sync came to (pure), in one vocabulary for the command line, the service and doctor: its
status, the exit status and journal priority that go with it, and its counts."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields
from typing import Iterable

from runas_agent.core.action import Action, Outcome
from runas_agent.core.plan import Plan
from runas_agent import events
from runas_agent.events import MessageId, Priority
from runas_agent.exitcodes import Exit


class SyncStatus(str, enum.Enum):
    """The SYNC_RESULT of a sync."""

    #: applied; nothing skipped, nothing failed
    OK = "ok"
    #: applied, but some identities were skipped or some actions failed
    PARTIAL = "partial"
    #: the safety checks refused the plan; nothing changed
    REFUSED = "refused"
    #: an error (the directory could not be read, a damaged ledger...); nothing further changed
    FAILED = "failed"
    #: another sync held the lock; nothing changed
    BUSY = "busy"
    #: stopped at a safe point because the service was stopping
    ABANDONED = "abandoned"

    def __str__(self) -> str:
        return self.value

    @property
    def exit(self) -> Exit:
        return _EXITS[self]

    @property
    def priority(self) -> Priority:
        return _PRIORITIES[self]

    @property
    def message_id(self) -> MessageId:
        """The kind of record a sync of this status is: a sync that ran its plan (or refused it), or
        one that could not run it."""
        return events.SYNC if self.applied or self is SyncStatus.REFUSED else events.SYNC_FAILED

    @property
    def applied(self) -> bool:
        """Whether the sync ran its plan (its counts mean something)."""
        return self in (SyncStatus.OK, SyncStatus.PARTIAL)


_EXITS = {SyncStatus.OK: Exit.OK, SyncStatus.PARTIAL: Exit.PARTIAL, SyncStatus.REFUSED: Exit.REFUSED,
          SyncStatus.FAILED: Exit.ERROR, SyncStatus.BUSY: Exit.BUSY, SyncStatus.ABANDONED: Exit.ERROR}
_PRIORITIES = {SyncStatus.OK: Priority.INFO, SyncStatus.PARTIAL: Priority.WARNING,
               SyncStatus.REFUSED: Priority.WARNING, SyncStatus.FAILED: Priority.ERR,
               SyncStatus.BUSY: Priority.WARNING, SyncStatus.ABANDONED: Priority.NOTICE}


def status_of(plan: Plan, outcome: Outcome) -> SyncStatus:
    """The status of a plan that was applied (or refused) with this outcome."""
    if plan.refusals:
        return SyncStatus.REFUSED
    if outcome.failed or plan.skips:
        return SyncStatus.PARTIAL
    return SyncStatus.OK


@dataclass(frozen=True)
class SyncCounts:
    """What one sync did: each action counted by its `counted_as`, identities skipped, actions failed."""

    created: int = 0
    enabled: int = 0
    disabled: int = 0
    #: accounts whose shell, comment or group name changed
    updated: int = 0
    #: local groups whose managed members changed
    groups_set: int = 0
    sudoers_written: int = 0
    sudoers_removed: int = 0
    skipped: int = 0
    failed: int = 0
    #: every action done
    actions: int = 0

    @classmethod
    def of(cls, plan: Plan, outcome: Outcome | None) -> "SyncCounts":
        done: Iterable[Action] = outcome.done if outcome else ()
        tally = {f.name: 0 for f in fields(cls)}
        for action in done:
            if action.counted_as:
                tally[action.counted_as] += 1
            tally["actions"] += 1
        tally["skipped"] = len(plan.skips)
        tally["failed"] = len(outcome.failed) if outcome else 0
        return cls(**tally)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def journal_fields(self) -> dict[str, str]:
        """SYNC_CREATED, SYNC_DISABLED, SYNC_ENABLED, SYNC_UPDATED, SYNC_SKIPPED, SYNC_FAILED, SYNC_ACTIONS."""
        return {f"SYNC_{k.upper()}": str(getattr(self, k))
                for k in ("created", "disabled", "enabled", "updated", "skipped", "failed", "actions")}

    def summary(self) -> str:
        """`2 created, 0 re-enabled, 1 disabled, 0 skipped, 0 failed`, with updates, group changes and
        sudoers counts when there are any: every action done is in it."""
        other = "".join(f"{n} {what}, " for n, what in ((self.updated, "updated"), (self.groups_set, "groups set"))
                        if n)
        sudo = (f"{self.sudoers_written} sudoers written, {self.sudoers_removed} removed, "
                if self.sudoers_written or self.sudoers_removed else "")
        return (f"{self.created} created, {self.enabled} re-enabled, {self.disabled} disabled, {other}{sudo}"
                f"{self.skipped} skipped, {self.failed} failed")
