"""Configuration schema machinery (pure): a key's type, default, meaning and checks, a section of keys
that validates a mapping into one frozen dataclass, and the value checks several sections share.

Validation never stops at the first problem: every problem is appended to a list, each starting with
the dotted key it is about (`sudo.rules[2].commands[0]: ...`), so one run names all of them. A value
of the wrong type is replaced by the key's default, so the rest can still be checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Tuple

#: The default of a required key: it has none.
ABSENT: Any = object()

STR = (str,)
OPT_STR = (str, type(None))
INT = (int,)
NUM = (int, float)
BOOL = (bool,)
LIST = (list,)

REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")

#: A value check: None when the value is fine, else what is wrong with it (without the key).
Check = Callable[[Any], Optional[str]]


def absolute(value: Any) -> str | None:
    return None if os.path.isabs(value) else "must be an absolute path"


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be greater than 0"


def not_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def fraction(value: Any) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def uid(value: Any) -> str | None:
    return None if 1000 <= value <= 2**31 - 2 else "must be between 1000 and 2147483646"


def region(value: Any) -> str | None:
    return None if REGION.match(value) else f"{value!r} is not an AWS region name"


def not_empty(what: str) -> Check:
    """For list keys: at least one item."""
    return lambda value: None if value else f"list at least one {what}"


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default and meaning, and the checks of its value."""

    types: Tuple[type, ...]
    default: Any
    doc: str
    choices: Tuple[Any, ...] = ()
    check: Optional[Check] = None
    required: bool = False
    #: for list keys: the Section of each item, or the type of each item
    item: Any = None
    #: for list keys: the check of each item (its problems are reported at `key[index]`)
    item_check: Optional[Check] = None
    #: older spellings still accepted; a config that gives two spellings of one key is refused
    old_names: Tuple[str, ...] = ()

    @property
    def one_or_many(self) -> bool:
        """A key that takes one string or a list of them: its value is always a tuple."""
        return str in self.types and list in self.types

    def placeholder(self) -> Any:
        """The value of a key that is missing or wrong: its default, or an empty value of its type."""
        if self.default is not ABSENT:
            return tuple(self.default) if isinstance(self.default, list) else self.default
        if list in self.types:
            return ()
        return self.types[0]() if self.types[0] is not type(None) else None

    def validate(self, value: Any, dotted: str, problems: list[str]) -> Any:
        """The checked value (lists as tuples), or the placeholder when its type is wrong."""
        wrong = self._type_problem(value)
        if wrong:
            problems.append(f"{dotted}: {wrong}")
            return self.placeholder()
        if self.choices and value not in self.choices:
            problems.append(f"{dotted}: must be one of {', '.join(self.choices)}, not {value!r}{did_you_mean(value, self.choices)}")
        if self.one_or_many and isinstance(value, str):
            value = [value]
        if self.check is not None and value is not None:
            message = self.check(value)
            if message:
                problems.append(f"{dotted}: {message}")
        if isinstance(value, list):
            return tuple(self._items(value, dotted, problems))
        return value

    def _type_problem(self, value: Any) -> Optional[str]:
        """What is wrong with the type of `value` (an infinite or NaN number is wrong too)."""
        if not _type_ok(value, self.types):
            return f"must be {describe_types(self.types)}, not {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, not {value}"
        return None

    def _items(self, value: list[Any], dotted: str, problems: list[str]) -> Iterator[Any]:
        for index, item in enumerate(value):
            where = f"{dotted}[{index}]"
            if isinstance(self.item, Section):
                yield self.item.validate(item, where + ".", problems)
            elif self.item is not None and not _type_ok(item, (self.item,)):
                problems.append(f"{where}: must be {describe_types((self.item,))}")
            else:
                if self.item_check is not None:
                    message = self.item_check(item)
                    if message:
                        problems.append(f"{where}: {message}")
                yield item


@dataclass(frozen=True)
class Section:
    """A mapping of keys that validates into one frozen dataclass (`build`), whose fields are exactly
    the keys (plus, for the top level, `extra` fields filled by the caller). A value of `keys` is a
    Key or a nested section: anything with validate(data, prefix, problems) and rows(prefix)."""

    build: type
    keys: Mapping[str, Any]
    extra: Tuple[str, ...] = ()
    #: cross-key checks of one built section: check(value, where, problems), `where` its dotted key
    check: Optional[Callable[[Any, str, list[str]], None]] = None

    def __getitem__(self, name: str) -> Any:
        return self.keys[name]

    def validate(self, data: Any, prefix: str, problems: list[str]) -> Any:
        values = validate_keys(data, self.keys, prefix, problems)
        value = self.build(**values)
        if self.check is not None:
            self.check(value, prefix.rstrip("."), problems)
        return value

    def rows(self, prefix: str) -> list[tuple[str, Any, str]]:
        return describe(self.keys, prefix)

    def field_problems(self) -> list[str]:
        """Where the dataclass and the keys disagree (a test keeps this empty)."""
        fields = {f.name for f in dataclasses.fields(self.build)} - set(self.extra)
        out = [f"{self.build.__name__}: no field for key {k}" for k in sorted(set(self.keys) - fields)]
        out += [f"{self.build.__name__}.{f}: no key" for f in sorted(fields - set(self.keys))]
        for key in self.keys.values():
            nested = key.item if isinstance(key, Key) else key
            if hasattr(nested, "field_problems"):
                out += nested.field_problems()
        return out


def validate_keys(data: Any, keys: Mapping[str, Any], prefix: str, problems: list[str]) -> dict[str, Any]:
    """The value of every key in `keys` (nested sections validated too). Keys of `data` that are
    neither in `keys` nor an old spelling of one are reported as unknown."""
    if not isinstance(data, Mapping):
        problems.append(f"{prefix.rstrip('.') or 'config'}: must be a mapping")
        data = {}
    spellings = {old for spec in keys.values() if isinstance(spec, Key) for old in spec.old_names}
    for name in sorted(set(data) - set(keys) - spellings, key=str):
        problems.append(f"{prefix}{name}: unknown key{did_you_mean(name, keys)}")
    return {name: _value(data, name, spec, prefix, problems) for name, spec in keys.items()}


def _value(data: Mapping[str, Any], name: str, spec: Any, prefix: str, problems: list[str]) -> Any:
    """The validated value of one key (or nested section) of `data`."""
    if not isinstance(spec, Key):
        section = data.get(name)
        return spec.validate(section if section is not None else {}, f"{prefix}{name}.", problems)
    given = [n for n in (name, *spec.old_names) if n in data]
    for old in given[1:]:
        problems.append(f"{prefix}{old}: the old spelling of {prefix}{given[0]}, which is given too; keep only {given[0]}")
    if not given:
        if spec.required:
            problems.append(f"{prefix}{name}: required")
        return spec.placeholder()
    return spec.validate(data[given[0]], f"{prefix}{given[0]}", problems)


def did_you_mean(given: Any, known: Iterable[str]) -> str:
    """` (did you mean shell?)` when `given` is close to one of `known`, else ""."""
    if not isinstance(given, str):
        return ""
    close = difflib.get_close_matches(given, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def describe(keys: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every key with its default and description (for documentation and tests)."""
    rows: list[tuple[str, Any, str]] = []
    for name, spec in keys.items():
        if isinstance(spec, Key):
            rows.append((prefix + name, None if spec.default is ABSENT else spec.default, spec.doc))
        else:
            rows.extend(spec.rows(f"{prefix}{name}."))
    return rows


def describe_types(types: Tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _type_ok(value: Any, types: Tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)
