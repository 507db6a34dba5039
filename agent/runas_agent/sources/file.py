"""File source: a directory document on disk (JSON or YAML), as written by `runas-agent export`
or a fleet publisher."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

import yaml

from runas_agent.directory import Directory, parse_document
from runas_agent.errors import SnapshotError, SourceError
from runas_agent.schema import OPT_STR, Key, absolute
from runas_agent.settings import SourceSettings
from runas_agent.sources import Fetched, Source, register


def parse_bytes(data: bytes, origin: str) -> Directory:
    """Parse a directory document from bytes (JSON, or YAML as its superset)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{origin}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        document = json.loads(text)
    except ValueError:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SnapshotError(f"{origin}: neither JSON nor YAML: {exc}") from None
    return parse_document(document, origin)


@dataclass(frozen=True)
class FileSettings(SourceSettings):
    #: the directory document
    path: Optional[str]


@register
class FileSource(Source[FileSettings]):
    kind = "file"
    summary = "a directory document on disk"
    keys = {"path": Key(OPT_STR, None, "type: file: the directory document (JSON or YAML).", check=absolute)}
    settings_class = FileSettings

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def check(cls, settings: FileSettings, problems: list[str]) -> None:
        if not settings.path:
            problems.append("source.path: required for type file")

    @classmethod
    def from_settings(cls, settings: FileSettings, *, session: Any = None, checkpoint: Optional[Callable[[], None]] = None,
                      nap: Optional[Callable[[float], None]] = None) -> "FileSource":
        assert settings.path is not None  # check() requires it
        return cls(settings.path)

    @classmethod
    def origin(cls, settings: FileSettings) -> str:
        return str(settings.path)

    def describe(self) -> str:
        return f"file {self.path}"

    def fetch(self, known_version: Optional[str] = None) -> Optional[Fetched]:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read the directory file: {exc.strerror}") from None
        version = hashlib.sha256(data).hexdigest()
        if known_version == version:
            return None
        return Fetched(parse_bytes(data, self.path), version, {"bytes": len(data)})
