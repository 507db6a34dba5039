"""Directory sources: where the directory comes from. Each returns a complete Directory or raises
SourceError; none ever returns a partial read.

A source is asked for the directory with the version it last returned; it may answer "unchanged"
(None) without reading everything again. The file source compares a digest of the file; a fleet
snapshot in S3 will answer with a conditional GET (If-None-Match on the ETag); the Identity Store has
no such thing and always reads all of it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from runas_agent.directory import Directory
from runas_agent.settings import SourceSettings


@dataclass(frozen=True)
class Fetched:
    directory: Directory
    #: opaque version to hand back to the next fetch (file digest, ETag, ...)
    version: str
    #: what the read cost, e.g. {"calls": {"ListUsers": 3}, "seconds": 0.4}
    stats: dict[str, Any] = field(default_factory=dict)


class Source(abc.ABC):
    #: short name for logs and `plan` output
    kind: str = "source"

    @abc.abstractmethod
    def fetch(self, known_version: str | None = None) -> Fetched | None:
        """Read the whole directory. Return None when `known_version` is still current.
        Raise SourceError when the read did not complete."""

    def describe(self) -> str:
        return self.kind


def make_source(source_cfg: SourceSettings) -> Source:
    """The source a config section names."""
    if source_cfg.type == "file":
        from runas_agent.sources.file import FileSource

        assert source_cfg.path is not None  # the configuration requires it
        return FileSource(source_cfg.path)
    if source_cfg.type == "identitystore":
        from runas_agent.sources.identitystore import IdentityStoreSource

        return IdentityStoreSource.from_config(source_cfg)
    if source_cfg.type == "s3":
        from runas_agent.sources.s3 import S3Source

        return S3Source.from_config(source_cfg)
    raise ValueError(f"unknown source type {source_cfg.type!r}")
