"""Directory sources: where the directory comes from. Each returns a complete Directory or raises
SourceError; none ever returns a partial read.

A source is asked for the directory with the version it last returned; it may answer "unchanged"
(None) without reading everything again. The file source compares a digest of the file; a fleet
snapshot in S3 answers with a conditional GET (If-None-Match on the ETag); the Identity Store has no
such thing and always reads all of it.

A source type is one class, registered with `@register` under its `source.type` value. The class
carries everything about its type: the keys of the `source` section only it has, and their checks;
whether it needs AWS credentials (types that read the same thing may share keys, as the same Key
objects: the file and S3 sources share the document keys of `document.py`); how it is described and the
`doctor` checks that probe it; how it is
built, also for the service loop; and the longest it can block without proving progress (for the
watchdog). The configuration, the service, `doctor` and `export` only ever ask the class. Every
module of this package is imported when the types are first asked for, so a new source type is one
new module here (plus its tests).
"""

from __future__ import annotations

import abc
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Generic, Mapping, Optional, Tuple, Type, TypeVar

from runas_agent.directory import Directory
from runas_agent.schema import Key
from runas_agent.settings import SourceSettings

if TYPE_CHECKING:
    from runas_agent.doctor.check import Check


@dataclass(frozen=True)
class Fetched:
    directory: Directory
    #: opaque version to hand back to the next fetch (file digest, ETag, ...)
    version: str
    #: what the read cost, e.g. {"calls": {"ListUsers": 3}, "seconds": 0.4}
    stats: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """The longest a source can block between two proofs of progress, and what it is made of."""

    seconds: float
    #: the settings it comes from, e.g. "source.connect_timeout + source.read_timeout"
    what: str
    #: the step in words, e.g. "one slow Identity Store response"
    step: str


S = TypeVar("S", bound=SourceSettings)


class Source(abc.ABC, Generic[S]):
    """A directory source. Class attributes and class methods describe the type; an instance reads."""

    #: the `source.type` value of the type (also its short name in logs and `plan` output)
    kind: ClassVar[str] = "source"
    #: where the type is listed (docs, check-config, doctor's probes): lower first, then by kind; the
    #: order never depends on which module happened to be imported first
    listed: ClassVar[int] = 100
    #: what the type is, one line for the documentation of `source.type`
    summary: ClassVar[str] = ""
    #: the keys of the `source` section only this type has (every other type refuses them)
    keys: ClassVar[Mapping[str, Key]] = {}
    #: the settings dataclass: SourceSettings, plus one field per key in `keys`
    settings_class: ClassVar[Type[SourceSettings]] = SourceSettings
    #: whether reading the directory needs AWS credentials
    needs_aws_credentials: ClassVar[bool] = False
    #: the `doctor` checks that probe this type beyond reading the directory (`doctor/check.py`); they
    #: need `doctor.facts.source_is(kind)`, so under another source type they are shown as skipped
    probes: ClassVar[Tuple[Type["Check"], ...]] = ()

    @classmethod
    def check(cls, settings: S, problems: list[str]) -> None:
        """Cross-key checks of a `source` section of this type: append one problem per finding,
        each starting with its key."""

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: S, *, session: Any = None, checkpoint: Optional[Callable[[], None]] = None,
                      nap: Optional[Callable[[float], None]] = None) -> "Source[S]":
        """The source for a validated `source` section. `session` is the boto3 session to use (None:
        the default chain). The service passes `checkpoint`, to be called where the read proves
        progress (it may raise to abandon the read), and `nap`, to sleep through backoffs."""

    @classmethod
    def origin(cls, settings: S) -> str:
        """Where the directory comes from, in words, from the settings alone."""
        return cls.kind

    @classmethod
    def longest_step(cls, settings: S) -> Optional[Step]:
        """The longest the read can block without calling `checkpoint`; None when it cannot block
        for long (a local file)."""
        return None

    @abc.abstractmethod
    def fetch(self, known_version: Optional[str] = None) -> Optional[Fetched]:
        """Read the whole directory. Return None when `known_version` is still current.
        Raise SourceError when the read did not complete."""

    def describe(self) -> str:
        return self.kind


SourceType = Type[Source[Any]]
_TYPES: dict[str, SourceType] = {}
_T = TypeVar("_T", bound=SourceType)
_imported = False


def register(cls: _T) -> _T:
    """Class decorator: make `cls` the source type named by its `kind`."""
    if cls.kind in _TYPES and _TYPES[cls.kind] is not cls:
        raise ValueError(f"source type {cls.kind!r} is registered twice")
    for other in _TYPES.values():
        # Types may share a key only as one Key object (one meaning): e.g. the document keys.
        shared = {k for k in set(other.keys) & set(cls.keys) if other.keys[k] is not cls.keys[k]}
        if other is not cls and shared:
            raise ValueError(f"source types {other.kind} and {cls.kind} both declare {', '.join(sorted(shared))}")
    _TYPES[cls.kind] = cls
    return cls


def types() -> Mapping[str, SourceType]:
    """Every source type, by its `source.type` value."""
    global _imported
    if not _imported:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _imported = True
    return {kind: _TYPES[kind] for kind in sorted(_TYPES, key=lambda kind: (_TYPES[kind].listed, kind))}


def source_type(name: str) -> SourceType:
    """The class of `source.type: name`."""
    found = types().get(name)
    if found is None:
        raise ValueError(f"unknown source type {name!r}")
    return found


def make_source(settings: SourceSettings, **kwargs: Any) -> Source[Any]:
    """The source a validated `source` section names (keyword arguments: see Source.from_settings)."""
    return source_type(settings.type).from_settings(settings, **kwargs)
