"""Structured journal records (pure): the MESSAGE_ID type, syslog priorities, and a record as a value
with stable UPPER_SNAKE fields. runas_agent/journal.py writes them; every MESSAGE_ID the agent uses is
listed here, so `journalctl MESSAGE_ID=...` finds every record of one kind."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from runas_agent.core.display import field

#: journald's SYSLOG_IDENTIFIER for every record (`journalctl -t runas-agent`).
SYSLOG_IDENTIFIER = "runas-agent"
_FIELD = re.compile(r"[A-Z0-9][A-Z0-9_]*\Z")
#: Fields a record sets itself.
_OWN_FIELDS = frozenset({"MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER"})


class MessageId(str):
    """A fixed journal MESSAGE_ID: 32 lower-case hex digits (`systemd-id128 new`). It is that string
    itself, so it compares equal to what `journalctl -o json` returns."""

    __slots__ = ()

    def __new__(cls, value: str) -> "MessageId":
        if not re.fullmatch(r"[0-9a-f]{32}", value):
            raise ValueError(f"a MESSAGE_ID is 32 lower-case hex digits, not {value!r}")
        return super().__new__(cls, value)

    @property
    def hex(self) -> str:
        return str(self)


class Priority(enum.IntEnum):
    """syslog(3) priorities, as journald's PRIORITY field holds them."""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


#: a sync ran (ok, partial, refused)
SYNC = MessageId("0e6032291cf94883be9c2a9b28aa4889")
#: a sync failed, was postponed (busy) or abandoned
SYNC_FAILED = MessageId("3c5c59abeda54efe88465408b9f48471")
#: a long sync's progress, every few seconds while it applies
SYNC_PROGRESS = MessageId("96a5c843b4aa4938b15764e96e70640f")
#: the configuration was reloaded (or the new one refused)
RELOAD = MessageId("5a92e7e8eb604a3199c154af424f3c59")
#: the service started or stopped
LIFECYCLE = MessageId("c3923360f9784e5e880412fd9d9708dc")
#: the publisher wrote the snapshot, or found the published one current
PUBLISH = MessageId("9114977cecff4b228b611ce815bf4fcc")
#: a publish failed, was postponed (busy) or abandoned
PUBLISH_FAILED = MessageId("48c5f39b919c416d817352b80ed574b2")
#: a Session Manager session started
SESSION_START = MessageId("464551acb08b4c05b513582234ec34e3")
#: a Session Manager session ended
SESSION_END = MessageId("4f05f0a8ba2249d4952fb598f8b82ee5")


@dataclass(frozen=True)
class Record:
    """One journal record. `fields` are (NAME, value) pairs; a name may repeat (one RUNAS_GROUP per
    group), as journald allows."""

    message: str
    message_id: MessageId
    priority: Priority = Priority.INFO
    fields: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name, _ in self.fields:
            if not _FIELD.match(name) or name in _OWN_FIELDS:
                raise ValueError(f"journal field {name!r}: fields are UPPER_SNAKE and not one the record sets itself")

    @classmethod
    def of(cls, message_id: MessageId, priority: Priority, message: str, **fields: Any) -> "Record":
        """A record from keyword fields; None values are left out, others are written as str()."""
        return cls(message, message_id, priority, tuple((k, str(v)) for k, v in fields.items() if v is not None))

    def journal_fields(self) -> list[str]:
        """The record as sd_journal_sendv(3) takes it: FIELD=value strings, each value escaped and
        cut (core/display.py): a directory value never brings control characters or a megabyte
        into the journal. (`as_json`, for the JSON fallback file, stays exact.)"""
        head = [f"MESSAGE={field(self.message)}", f"MESSAGE_ID={self.message_id.hex}", f"PRIORITY={int(self.priority)}",
                f"SYSLOG_IDENTIFIER={SYSLOG_IDENTIFIER}"]
        return head + [f"{k}={field(v)}" for k, v in self.fields]

    def as_json(self, realtime: float) -> dict[str, Any]:
        """The record as `journalctl -o json` shows it (a repeated field is a list), stamped `realtime`."""
        data: dict[str, Any] = {"__REALTIME": realtime, "MESSAGE": self.message, "MESSAGE_ID": self.message_id.hex,
                                "PRIORITY": str(int(self.priority)), "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER}
        for key, value in self.fields:
            if key in data:
                data[key] = (data[key] if isinstance(data[key], list) else [data[key]]) + [value]
            else:
                data[key] = value
        return data
