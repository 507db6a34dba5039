"""Files the agent keeps (host side): atomic replace, write-only-if-changed, and the state paths."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, TypeVar

from runas_agent.core.ledger import Ledger
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


def load_state(path: str, from_dict: Callable[[Any], T], empty: Callable[[], T], owns: str) -> T:
    """A JSON state file parsed by `from_dict`; `empty()` when there is none yet. A damaged file is an
    error: guessing would risk changing what the agent does not own."""
    data = read_bytes(path)
    if data is None:
        return empty()
    try:
        return from_dict(json.loads(data))
    except ValueError as exc:
        raise AgentError(f"{path}: {exc}; refusing to guess {owns}") from None


def dump_json(data: Any) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


class StateDir:
    """The agent's persistent state: the ledger of owned accounts and the last directory snapshot."""

    def __init__(self, path: str):
        self.path = path

    @property
    def ledger_path(self) -> str:
        return os.path.join(self.path, "ledger.json")

    @property
    def snapshot_path(self) -> str:
        return os.path.join(self.path, "directory.json")

    @property
    def lock_path(self) -> str:
        return os.path.join(self.path, "sync.lock")

    def load_ledger(self) -> Ledger:
        return load_state(self.ledger_path, Ledger.from_dict, Ledger, "what the agent owns")

    def save_ledger(self, ledger: Ledger) -> bool:
        return write_atomic(self.ledger_path, dump_json(ledger.to_dict()))

    def save_snapshot(self, data: bytes) -> bool:
        return write_atomic(self.snapshot_path, data, mode=0o600)
