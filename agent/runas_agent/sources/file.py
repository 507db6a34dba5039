"""File source: a directory document on disk (JSON), as written by `runas-agent export` or copied from
a fleet snapshot. With `source.signing_public_key` it must carry the publisher's signature, as in S3."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from runas_agent.errors import SourceError
from runas_agent.schema import OPT_STR, Key, absolute
from runas_agent.sources import Fetched, Source, register
from runas_agent.sources.document import DOCUMENT_KEYS, DocumentSettings, Trust, read_capped


@dataclass(frozen=True)
class FileSettings(DocumentSettings):
    #: the directory document
    path: Optional[str]


@register
class FileSource(Source[FileSettings]):
    kind = "file"
    listed = 2
    summary = "a directory document on disk"
    keys = {"path": Key(OPT_STR, None, "type: file: the directory document (JSON, as `runas-agent export` writes it).",
                        check=absolute),
            **DOCUMENT_KEYS}
    settings_class = FileSettings

    def __init__(self, path: str, trust: Trust):
        self.path = path
        self.trust = trust

    @classmethod
    def check(cls, settings: FileSettings, problems: list[str]) -> None:
        if not settings.path:
            problems.append("source.path: required for type file")

    @classmethod
    def from_settings(cls, settings: FileSettings, *, session: Any = None, checkpoint: Optional[Callable[[], None]] = None,
                      nap: Optional[Callable[[float], None]] = None) -> "FileSource":
        assert settings.path is not None  # check() requires it
        return cls(settings.path, Trust.from_settings(settings))

    @classmethod
    def origin(cls, settings: FileSettings) -> str:
        return str(settings.path)

    def describe(self) -> str:
        return f"file {self.path}"

    def fetch(self, known_version: Optional[str] = None) -> Optional[Fetched]:
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > self.trust.max_bytes:
                    raise self.trust.too_large(size, self.path)
                data = read_capped(handle, self.trust.max_bytes)
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read the directory file: {exc.strerror}") from None
        version = hashlib.sha256(data).hexdigest()
        if known_version == version:
            return None
        return Fetched(self.trust.read(data, self.path), version, {"bytes": len(data)})
