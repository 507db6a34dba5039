"""Fingerprints of values (pure): one digest that differs whenever any part of the values differs.

The plan is a function of the configuration, the directory and the observation; a sync that finds
nothing to do remembers the fingerprint of those inputs (core/memo.py), and the next sync with the
same fingerprint knows the answer without planning again. So the encoding below must be complete:
every field of every dataclass (read from `dataclasses.fields`, so a field added later is in it),
every item of every mapping, sequence and set, and the exact value of every scalar. A value of a
type it does not know raises TypeError: no fingerprint then, never a partial one.

Mappings and sequences are encoded in their own order (the same inputs read the same way give the
same order); sets are sorted, since their order depends on the process's string hashing.
"""

from __future__ import annotations

import hashlib
import marshal
import re
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from itertools import chain
from operator import attrgetter
from typing import Any, Callable

_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
#: marshal format 2: exact for every scalar, and a function of the value alone (format 3 and later
#: mark an object met twice, and interned strings, so equal values built apart would differ)
_MARSHAL = 2


def fingerprint(*values: Any) -> str:
    """The SHA-256 of the values' encoding. Raises TypeError for a value it cannot encode."""
    out: list[str | bytes] = []
    for value in values:
        _encode(value, out)
        out.append("\n")
    digest = hashlib.sha256()
    for piece in out:
        digest.update(piece if isinstance(piece, bytes) else piece.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _scalars(values: Any) -> bool:
    return set(map(type, values)) <= _SCALARS


def _plain_rows(rows: list[tuple[Any, ...]]) -> bool:
    """Whether every field of every row is a scalar or a tuple of scalars (checked a column at a
    time): such rows have one exact, order-preserving repr."""
    for column in zip(*rows):
        types = set(map(type, column))
        if types <= _SCALARS:
            continue
        if types <= _SCALARS | {tuple} and _scalars(chain.from_iterable(v for v in column if type(v) is tuple)):
            continue
        return False
    return True


def _same_dataclass(values: list[Any]) -> type | None:
    """The one dataclass type of every value, or None."""
    kinds = set(map(type, values))
    if len(kinds) != 1:
        return None
    (kind,) = kinds
    return kind if is_dataclass(kind) else None


def _fields_of(kind: type) -> Callable[[Any], tuple[Any, ...]]:
    getter = _GETTERS.get(kind)
    if getter is None:
        names = [f.name for f in fields(kind)]
        if len(names) == 1:
            only = names[0]
            getter = lambda value: (getattr(value, only),)  # noqa: E731
        else:
            getter = attrgetter(*names) if names else (lambda value: ())
        _GETTERS[kind] = getter
    return getter


def _encode(value: Any, out: list[str | bytes]) -> None:
    kind = type(value)
    if kind in _SCALARS:
        out.append(repr(value))
    elif kind is tuple or kind is list:
        if _scalars(value):
            out.append(repr(tuple(value)))  # one C-level repr for the common case (lists read as tuples)
        else:
            out.append("(")
            for item in value:
                _encode(item, out)
                out.append(",")
            out.append(")")
    elif is_dataclass(value) and not isinstance(value, type):
        out.append(kind.__module__ + "." + kind.__qualname__)
        _encode(tuple(_fields_of(kind)(value)), out)
    elif isinstance(value, Mapping):
        items = list(value.values())
        kind_of_items = _same_dataclass(items) if len(items) > 1 else None
        if _scalars(value.keys()) and _scalars(items):
            out.append("dict")
            _bytes(marshal.dumps(list(value.items()), _MARSHAL), out)
        elif kind_of_items is not None and _scalars(value.keys()) and \
                _plain_rows(rows := list(map(_fields_of(kind_of_items), items))):
            # the common large case (accounts by name, ledger entries): one C-level dump
            out.append(f"rows {kind_of_items.__module__}.{kind_of_items.__qualname__}")
            _bytes(marshal.dumps((list(value.keys()), rows), _MARSHAL), out)
        else:
            out.append("{")
            for key, item in value.items():
                _encode(key, out)
                out.append(":")
                _encode(item, out)
                out.append(",")
            out.append("}")
    elif kind is frozenset or kind is set:
        out.append("set(" + ",".join(sorted(_encoded(item) for item in value)) + ")")
    elif isinstance(value, re.Pattern):
        out.append(f"re({value.pattern!r},{value.flags})")
    else:
        raise TypeError(f"cannot fingerprint a {kind.__module__}.{kind.__qualname__}")


def _bytes(data: bytes, out: list[str | bytes]) -> None:
    """A marshal dump (exact for scalars and tuples of them), with its length in front."""
    out.append(f"<{len(data)}>")
    out.append(data)


def _encoded(value: Any) -> str:
    out: list[str | bytes] = []
    _encode(value, out)
    return "".join(piece if isinstance(piece, str) else piece.hex() for piece in out)
