"""What a published snapshot carries (pure): a directory document cut down to the fields the fleet needs.

The publisher reads every user with every field the Identity Store returns (names, emails, addresses,
phone numbers, the enterprise extension). Instances need far less: a user's ids, name and status, the
display name (the account's comment), and what `run_as.expression` reads. `publisher.fields` names
more, in the expression's own vocabulary (`emails[primary eq true].value`, `enterprise.organization`:
what session attribution shows, say). Every record stays (users, groups, memberships): instances may
scope and grant by groups the publisher's configuration does not name, so only fields are dropped,
never people or groups.

A projected record is what the Identity Store would have returned for a person with only those
attributes: for every path, `Expression.evaluate` gives the same value on the projected record as on
the original (a test keeps it so). A user record the agent cannot read (`directory.parse_user` finds
a problem) is carried unchanged, so instances see the same malformed record and treat its person as
the read does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterable, Optional

from runas_agent.core.expression import PATHS
from runas_agent.directory import ENTERPRISE_EXTENSION, User, parse_user

#: Fields of every user record the agent reads whatever the configuration.
USER_FIELDS = ("IdentityStoreId", "UserId", "UserName", "UserStatus", "DisplayName")
#: Fields of every group record the agent reads (scopes and rules name groups by id or DisplayName).
GROUP_FIELDS = ("IdentityStoreId", "GroupId", "DisplayName")

#: copies what one path reads from `record` into `out`
Copier = Callable[[Mapping[str, Any], dict[str, Any]], None]


def _plain(field: str) -> Copier:
    def copy(record: Mapping[str, Any], out: dict[str, Any]) -> None:
        if field in record:
            out[field] = record[field]
    return copy


def _nested(outer: str, inner: str) -> Copier:
    def copy(record: Mapping[str, Any], out: dict[str, Any]) -> None:
        value = record.get(outer)
        if isinstance(value, Mapping) and inner in value:
            out.setdefault(outer, {})[inner] = value[inner]
    return copy


def _filtered(list_field: str, match_key: str, match: Callable[[Any], bool], field: str) -> Copier:
    """Every item of the list that the path's filter matches, with the filter's key and `field`:
    the first matching item, which the expression reads, stays the first."""
    def copy(record: Mapping[str, Any], out: dict[str, Any]) -> None:
        items = record.get(list_field)
        if not isinstance(items, list):
            return
        kept = out.setdefault(list_field, {})
        for index, item in enumerate(items):
            if isinstance(item, Mapping) and match(item.get(match_key)):
                slot = kept.setdefault(index, {})
                for key in (match_key, field):
                    if key in item:
                        slot[key] = item[key]
    return copy


def _enterprise(attribute: str) -> Copier:
    """The enterprise extension's attribute, under the key the record spells it with (the agent
    compares these names without case)."""
    def copy(record: Mapping[str, Any], out: dict[str, Any]) -> None:
        extension = _extension(record)
        if extension is None:
            return
        kept = out.setdefault("Extensions", {}).setdefault(ENTERPRISE_EXTENSION, {})
        for key, value in extension.items():
            if isinstance(key, str) and key.lower() == attribute.lower():
                kept[key] = value
    return copy


def _extension(record: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    extensions = record.get("Extensions")
    value = extensions.get(ENTERPRISE_EXTENSION) if isinstance(extensions, Mapping) else None
    return value if isinstance(value, Mapping) else None


def _primary(value: Any) -> bool:
    return value is True


def _work(value: Any) -> bool:
    return isinstance(value, str) and value.lower() == "work"


COPIERS: dict[str, Copier] = {
    "userName": _plain("UserName"),
    "displayName": _plain("DisplayName"),
    "nickName": _plain("NickName"),
    "name.givenName": _nested("Name", "GivenName"),
    "name.familyName": _nested("Name", "FamilyName"),
    "emails[primary eq true].value": _filtered("Emails", "Primary", _primary, "Value"),
    "phoneNumbers[type eq \"work\"].value": _filtered("PhoneNumbers", "Type", _work, "Value"),
    "userType": _plain("UserType"),
    "title": _plain("Title"),
    "locale": _plain("Locale"),
    "timezone": _plain("Timezone"),
    "enterprise.manager.value": _enterprise("manager"),
}
for _attr, _api in (("streetAddress", "StreetAddress"), ("locality", "Locality"), ("region", "Region"),
                    ("postalCode", "PostalCode"), ("country", "Country"), ("formatted", "Formatted")):
    COPIERS[f"addresses[type eq \"work\"].{_attr}"] = _filtered("Addresses", "Type", _work, _api)
for _attr in ("employeeNumber", "costCenter", "organization", "division", "department"):
    COPIERS[f"enterprise.{_attr}"] = _enterprise(_attr)


def field_problem(path: Any) -> Optional[str]:
    """The configuration check of one `publisher.fields` item."""
    if path in COPIERS:
        return None
    return (f"{path!r} is not an attribute path of run_as.expression's vocabulary "
            f"(one of: {', '.join(sorted(PATHS))})")


def project_user(record: Any, index: int, paths: Iterable[str]) -> Any:
    """One ListUsers record with only the fields the agent needs and those `paths` read; a record
    the agent cannot read as it is."""
    if not isinstance(parse_user(record, index), User):
        return record
    out: dict[str, Any] = {field: record[field] for field in USER_FIELDS if field in record}
    wanted = sorted(set(paths))
    if any(path.startswith("enterprise.") for path in wanted) and _extension(record) is not None:
        # The extension stays, empty if need be: an instance refuses a read in which nobody carries it
        # while its expression reads enterprise attributes (the sign of a read that dropped it).
        out["Extensions"] = {ENTERPRISE_EXTENSION: {}}
    for path in wanted:
        COPIERS[path](record, out)
    return _listed(out)


def _listed(out: dict[str, Any]) -> dict[str, Any]:
    """The filtered lists (collected as index -> item) as lists in their order; empty ones left out."""
    for list_field in ("Emails", "PhoneNumbers", "Addresses"):
        kept = out.pop(list_field, None)
        if kept:
            out[list_field] = [kept[i] for i in sorted(kept)]
    return out


def project_group(record: Any) -> Any:
    """One ListGroups record with its ids and DisplayName (its description and external ids go); a
    record without a GroupId as it is (instances refuse the document for it, as the read does)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("GroupId"), str) or not record["GroupId"]:
        return record
    return {field: record[field] for field in GROUP_FIELDS if field in record}


def project(document: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The directory document with every user and group record projected (memberships are ids only
    and stay as they are), without GeneratedAt and Signature: the publisher stamps and signs it."""
    paths = tuple(paths)
    out = {key: value for key, value in document.items() if key not in ("GeneratedAt", "Signature")}
    out["Users"] = [project_user(record, index, paths) for index, record in enumerate(document.get("Users") or [])]
    if "Groups" in document:
        out["Groups"] = [project_group(record) for record in document.get("Groups") or []]
    return out
