"""ABAC expressions (pure): evaluate an Identity Center attribute-for-access-control value such as
`${path:enterprise.organization}` against a ListUsers record, the way Identity Center does.

Only the paths Identity Center documents are accepted; anything else is a config error, because
Identity Center would not accept it either. A path whose attribute is missing evaluates to "".
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Callable

from runas_agent.directory import User


class ExpressionError(ValueError):
    pass


def _plain(field: str) -> Callable[[User], Any]:
    return lambda user: user.record.get(field)


def _nested(outer: str, inner: str) -> Callable[[User], Any]:
    def get(user: User) -> Any:
        value = user.record.get(outer)
        return value.get(inner) if isinstance(value, Mapping) else None

    return get


def _filtered(list_field: str, match: Callable[[Mapping[str, Any]], bool], field: str) -> Callable[[User], Any]:
    """`emails[primary eq true].value`: the first list item matching the filter, then its field."""

    def get(user: User) -> Any:
        items = user.record.get(list_field)
        if not isinstance(items, list):
            return None
        for item in items:
            if isinstance(item, Mapping) and match(item):
                return item.get(field)
        return None

    return get


def _primary(item: Mapping[str, Any]) -> bool:
    return item.get("Primary") is True


def _work(item: Mapping[str, Any]) -> bool:
    # SCIM compares `type` case-insensitively (caseExact is false for it). UNCONFIRMED for
    # Identity Center; the difference only matters for a value typed "Work", which is rare.
    value = item.get("Type")
    return isinstance(value, str) and value.lower() == "work"


def _enterprise(key: str) -> Callable[[User], Any]:
    return lambda user: user.enterprise().get(key.lower())


def _manager(user: User) -> Any:
    manager = user.enterprise().get("manager")
    if isinstance(manager, Mapping):
        for key, value in manager.items():
            if isinstance(key, str) and key.lower() == "value":
                return value
    return None


PATHS: dict[str, Callable[[User], Any]] = {
    "userName": _plain("UserName"),
    "displayName": _plain("DisplayName"),
    "nickName": _plain("NickName"),
    "name.givenName": _nested("Name", "GivenName"),
    "name.familyName": _nested("Name", "FamilyName"),
    "emails[primary eq true].value": _filtered("Emails", _primary, "Value"),
    "phoneNumbers[type eq \"work\"].value": _filtered("PhoneNumbers", _work, "Value"),
    "userType": _plain("UserType"),
    "title": _plain("Title"),
    "locale": _plain("Locale"),
    "timezone": _plain("Timezone"),
    "enterprise.manager.value": _manager,
}
for _attr, _api in (("streetAddress", "StreetAddress"), ("locality", "Locality"), ("region", "Region"),
                    ("postalCode", "PostalCode"), ("country", "Country"), ("formatted", "Formatted")):
    PATHS[f"addresses[type eq \"work\"].{_attr}"] = _filtered("Addresses", _work, _api)
for _attr in ("employeeNumber", "costCenter", "organization", "division", "department"):
    PATHS[f"enterprise.{_attr}"] = _enterprise(_attr)

#: Paths whose value the Identity Store keeps unique per user.
UNIQUE_PATHS = frozenset({"userName"})

_REFERENCE = re.compile(r"\$\{path:([^}]*)\}")


@dataclass(frozen=True)
class Expression:
    source: str
    #: alternating literal text and path names: ("", "userName", "")
    parts: tuple[str, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return self.parts[1::2]

    @property
    def is_unique_per_user(self) -> bool:
        """True when the expression is exactly one path that the Identity Store keeps unique."""
        return self.parts[0] == "" and self.parts[-1] == "" and len(self.paths) == 1 and self.paths[0] in UNIQUE_PATHS

    def evaluate(self, user: User) -> str:
        out: list[str] = []
        for index, part in enumerate(self.parts):
            if index % 2 == 0:
                out.append(part)
                continue
            value = PATHS[part](user)
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                value = ""
            out.append(str(value))
        return "".join(out)


def _suggest(path: str) -> str:
    """` (did you mean ${path:userName}?)`, or where the supported paths are listed."""
    close = difflib.get_close_matches(path, list(PATHS), n=1, cutoff=0.6)
    if close:
        return f" (did you mean ${{path:{close[0]}}}?)"
    return f" (`runas-agent check-config --explain` lists the {len(PATHS)} that are)"


def parse(source: str) -> Expression:
    if not isinstance(source, str) or not source:
        raise ExpressionError("is empty")
    if len(source) > 256:
        raise ExpressionError("is longer than the 256 characters Identity Center allows")
    parts: list[str] = []
    position = 0
    for match in _REFERENCE.finditer(source):
        parts.append(source[position:match.start()])
        path = match.group(1)
        if path not in PATHS:
            raise ExpressionError(f"${{path:{path}}} is not an attribute Identity Center supports{_suggest(path)}")
        parts.append(path)
        position = match.end()
    parts.append(source[position:])
    if any("${" in literal for literal in parts[::2]):
        raise ExpressionError("has an unterminated or unknown ${...} reference")
    if len(parts) == 1:
        raise ExpressionError("contains no ${path:...} reference")
    return Expression(source, tuple(parts))
