"""Directory documents from outside the agent (the file and S3 sources): the keys both types share,
and the checks a document must pass before anything is planned with it, in this order:

1. size: at most `source.max_document_bytes` (the reader stops reading past it);
2. JSON only, strictly (`directory.decode`): a document cut short is never a valid, shorter one, and
   no YAML alias can expand inside the root daemon;
3. the signature, with `source.signing_public_key` (`signature.py`), over everything but itself;
4. what the signature covers that must be there: a signed document names its IdentityStoreId and
   its GeneratedAt;
5. the Identity Store: `source.identity_store_id`, when set, must be the document's;
6. the records (`directory.parse_document`).

Freshness (`fresh`) is the S3 source's, checked at every read, a 304 included.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from runas_agent.directory import Directory, decode, format_timestamp, parse_document
from runas_agent.errors import UntrustedError
from runas_agent.schema import INT, OPT_STR, Key, positive
from runas_agent.settings import SourceSettings
from runas_agent.sources.signature import PublicKey, key_problem

#: 16 MiB: about 21,000 people with full records (775 bytes each), more with only the fields a
#: publisher keeps. Read, about 120 MiB; beside the last applied snapshot of the same size, as a sync
#: holds them, about 250 MiB: well under the unit's MemoryMax=512M (bench/bench_document.py).
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
#: How far in the future a GeneratedAt may be (clocks of the publisher and the instance differ).
CLOCK_SKEW = 300.0

#: The keys of `source` that every type reading a document has (the same Key objects in each).
DOCUMENT_KEYS = {
    "signing_public_key": Key(
        OPT_STR, None,
        "type s3 (required) and file: the public key of the publisher's KMS signing key, PEM "
        "(-----BEGIN PUBLIC KEY----- ...), as `aws kms get-public-key` gives it (its base64 DER is "
        "accepted too). A document is believed only with a valid signature of this key; no KMS call is made to check it.",
        check=key_problem),
    "max_document_bytes": Key(INT, MAX_DOCUMENT_BYTES,
                              "type s3 and file: the largest directory document read; a larger one is refused unread.",
                              check=positive),
}


@dataclass(frozen=True)
class DocumentSettings(SourceSettings):
    """`source` of a type that reads a directory document."""

    signing_public_key: Optional[str]
    max_document_bytes: int


@dataclass(frozen=True)
class Trust:
    """What a document read from `origin` must prove, from the settings: built once per source."""

    public_key: Optional[PublicKey]
    identity_store_id: Optional[str]
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: DocumentSettings) -> "Trust":
        key = PublicKey.load(settings.signing_public_key) if settings.signing_public_key else None
        return cls(key, settings.identity_store_id, settings.max_document_bytes)

    def too_large(self, size: int, origin: str) -> UntrustedError:
        return UntrustedError(f"{origin}: {size} bytes, more than source.max_document_bytes ({self.max_bytes}); not read")

    def read(self, data: bytes, origin: str) -> Directory:
        """The directory in `data`, checked in the order of the module's docstring."""
        if len(data) > self.max_bytes:
            raise self.too_large(len(data), origin)
        document = decode(data, origin)
        if self.public_key is not None:
            if not isinstance(document, Mapping):
                raise UntrustedError(f"{origin}: not a signed directory document (a JSON object)")
            self.public_key.verify(document, origin)
        directory = parse_document(document, origin)
        if self.public_key is not None:
            _signed_fields(directory, origin)
        self.pin(directory, origin)
        return directory

    def pin(self, directory: Directory, origin: str) -> None:
        if self.identity_store_id and directory.identity_store_id != self.identity_store_id:
            raise UntrustedError(f"{origin}: the directory of Identity Store {directory.identity_store_id or '(none named)'}, "
                                 f"not of source.identity_store_id {self.identity_store_id}")


def _signed_fields(directory: Directory, origin: str) -> None:
    missing = [name for name, value in (("IdentityStoreId", directory.identity_store_id),
                                        ("GeneratedAt", directory.generated_at)) if not value]
    if missing:
        raise UntrustedError(f"{origin}: the signed document has no {' or '.join(missing)}: "
                             "a snapshot must say which store it is of and when it was read")


def fresh(directory: Directory, origin: str, max_age: float, now: datetime.datetime) -> None:
    """Raise UntrustedError unless the document's GeneratedAt is at most `max_age` seconds before
    `now` (and not more than the allowed clock skew after it)."""
    if directory.generated_at is None:
        raise UntrustedError(f"{origin}: no GeneratedAt, so its age cannot be checked against source.max_age")
    age = (now - directory.generated_at).total_seconds()
    when = format_timestamp(directory.generated_at)
    if age < -CLOCK_SKEW:
        raise UntrustedError(f"{origin}: GeneratedAt {when} is {_span(-age)} in the future: the publisher's clock "
                             "or this host's is wrong")
    if age > max_age:
        raise UntrustedError(f"{origin}: generated at {when}, {_span(age)} ago, more than source.max_age "
                             f"({max_age:g}s): the publisher has not published since; nothing is changed until "
                             "a fresh snapshot arrives")


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def read_capped(stream: Any, limit: int) -> bytes:
    """At most limit + 1 bytes of a file-like object: enough to tell that it is too large."""
    chunks = []
    left = limit + 1
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
