"""Files the agent keeps (host side): atomic replace, write-only-if-changed, and the state paths."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, Generic, Iterable, Protocol, TypeVar

from runas_agent.core.ledger import Entry, Ledger
from runas_agent.core.sudoers import SudoLedger
from runas_agent.errors import AgentError

T = TypeVar("T")


def read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> bool:
    """Replace `path` with `data` atomically (temp file, fsync, rename, fsync dir).
    Returns False, writing nothing, when the file already holds exactly `data` with `mode`."""
    try:
        st = os.stat(path)
        if (st.st_mode & 0o7777) == mode and read_bytes(path) == data:
            return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


class StateWriteError(AgentError):
    """A state file (a ledger, the snapshot) could not be written; the message names it."""


def save_state(path: str, data: bytes, mode: int = 0o600) -> bool:
    """write_atomic, with a failure (read-only or full state directory...) as a StateWriteError."""
    try:
        return write_atomic(path, data, mode)
    except OSError as exc:
        raise StateWriteError(f"{path}: cannot write: {exc.strerror or exc}") from None


def load_state(path: str, from_dict: Callable[[Any], T], empty: Callable[[], T], owns: str) -> T:
    """A JSON state file parsed by `from_dict`; `empty()` when there is none yet, or it was emptied (a
    lost ledger is rebuilt from proof, runas_agent.sync.recover_ledger). A damaged file is an error:
    guessing would risk changing what the agent does not own."""
    try:
        data = read_bytes(path)
    except OSError as exc:
        raise AgentError(f"{path}: cannot read: {exc.strerror or exc}; nothing was changed") from None
    if data is None or not data.strip():
        return empty()
    try:
        return from_dict(json.loads(data))
    except ValueError as exc:
        raise AgentError(f"{path}: {exc}; refusing to guess {owns}") from None


def dump_json(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


class Record(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)


class LedgerFile(Generic[R]):
    """One ledger as a JSON file of the state directory."""

    def __init__(self, path: str, from_dict: Callable[[Any], R], empty: Callable[[], R], owns: str):
        self.path = path
        self._from_dict = from_dict
        self._empty = empty
        self._owns = owns

    def load(self) -> R:
        return load_state(self.path, self._from_dict, self._empty, self._owns)

    def save(self, ledger: R) -> bool:
        return save_state(self.path, dump_json(ledger.to_dict()))


class Keeper(Generic[R]):
    """Writes one ledger through one apply, following core.ledger's protocol: the intent before the
    first action, the settled ledger after the last. A write that would change nothing is not made."""

    def __init__(self, file: LedgerFile[R], entry: Entry[R]):
        self.file = file
        self.entry = entry
        self._stored = entry.before

    def intent(self) -> None:
        self._record(self.entry.intent())

    def settle(self, failed: Iterable[object]) -> None:
        self._record(self.entry.settle(failed))

    def _record(self, ledger: R) -> None:
        if ledger != self._stored:
            self.file.save(ledger)
            self._stored = ledger


class StateDir:
    """The agent's persistent state: the ledgers of owned accounts and drop-ins, and the last
    directory snapshot."""

    def __init__(self, path: str):
        self.path = path
        self.ledger = LedgerFile(os.path.join(path, "ledger.json"), Ledger.from_dict, Ledger, "what the agent owns")
        self.sudo_ledger = LedgerFile(os.path.join(path, "sudoers.json"), SudoLedger.from_dict, SudoLedger,
                                      "which drop-ins the agent owns")

    @property
    def ledger_path(self) -> str:
        return self.ledger.path

    @property
    def snapshot_path(self) -> str:
        return os.path.join(self.path, "directory.json")

    @property
    def lock_path(self) -> str:
        return os.path.join(self.path, "sync.lock")

    def load_ledger(self) -> Ledger:
        return self.ledger.load()

    @property
    def memo_path(self) -> str:
        return os.path.join(self.path, "plan-memo.json")

    def load_memo(self) -> Any:
        """The remembered plan of the last sync that had nothing to do (core/memo.py), as JSON; None
        when there is none or it cannot be read (the plan is then made, as without one)."""
        try:
            data = read_bytes(self.memo_path)
            return json.loads(data) if data else None
        except (OSError, ValueError):
            return None

    def save_memo(self, data: Any) -> None:
        """Keep the remembered plan (written only when it differs from the one kept). A failure is
        not an error: without a memo the next sync plans, as it would anyway."""
        try:
            write_atomic(self.memo_path, (json.dumps(data, sort_keys=True) + "\n").encode("ascii"))
        except (OSError, ValueError):
            pass

    def save_snapshot(self, data: bytes) -> bool:
        return save_state(self.snapshot_path, data, mode=0o600)
