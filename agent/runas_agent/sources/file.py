"""File source: a directory document on disk (JSON or YAML), as written by `runas-agent export`
or a fleet publisher."""

from __future__ import annotations

import hashlib
import json

import yaml

from runas_agent.directory import parse_document
from runas_agent.errors import SnapshotError, SourceError
from runas_agent.sources import Fetched, Source


def parse_bytes(data: bytes, origin: str):
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


class FileSource(Source):
    kind = "file"

    def __init__(self, path: str):
        self.path = path

    def describe(self) -> str:
        return f"file {self.path}"

    def fetch(self, known_version: str | None = None) -> Fetched | None:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise SourceError(f"{self.path}: cannot read the directory file: {exc.strerror}") from None
        version = hashlib.sha256(data).hexdigest()
        if known_version == version:
            return None
        return Fetched(parse_bytes(data, self.path), version, {"bytes": len(data)})
