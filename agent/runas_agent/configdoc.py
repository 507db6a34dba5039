"""Every configuration key explained, generated from the schema in config.py: what
`runas-agent check-config --explain` prints and what docs/config.md holds (a test keeps the file
equal to `markdown()`, so the two never drift apart)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from runas_agent import config
from runas_agent.core.expression import PATHS, UNIQUE_PATHS
from runas_agent.schema import ABSENT, Key, describe_types


@dataclass(frozen=True)
class Entry:
    """One key as documented."""

    key: str
    kind: str
    default: Any
    doc: str
    choices: tuple[Any, ...] = ()
    required: bool = False
    #: the source types the key belongs to ("" for every type)
    only_for: str = ""

    def facts(self) -> str:
        """`a string; default /bin/bash` and the like, on one line."""
        out = [self.kind]
        if self.required:
            out.append("required")
        elif self.default is not None and self.default != [] and self.default != "":
            out.append(f"default {_value(self.default)}")
        if self.choices:
            out.append("one of " + ", ".join(str(c) for c in self.choices))
        if self.only_for:
            out.append(f"only with source.type {self.only_for}")
        return "; ".join(out)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _kind(spec: Key) -> str:
    if spec.item is not None and hasattr(spec.item, "keys"):
        return "a list of mappings (keys below)"
    if spec.item is not None:
        items = {str: "strings", int: "integers"}.get(spec.item, spec.item.__name__)
        return f"{describe_types(spec.types)} of {items}"
    if set(spec.types) == {int, float}:
        return "a number"
    return describe_types(spec.types)


def _walk(keys: Mapping[str, Any], prefix: str, owners: Mapping[str, list[Any]] | None = None) -> Iterator[Entry]:
    for name, spec in keys.items():
        if isinstance(spec, Key):
            only = " or ".join(o.kind for o in (owners or {}).get(name, ()))
            yield Entry(prefix + name, _kind(spec), None if spec.default is ABSENT else spec.default, spec.doc,
                        tuple(spec.choices), spec.required, only)
            if spec.item is not None and hasattr(spec.item, "keys"):
                yield from _walk(spec.item.keys, f"{prefix}{name}[].")
        elif isinstance(spec, config.SourceSection):
            yield from _walk(spec.keys, f"{prefix}{name}.", spec.owned)
        else:
            yield from _walk(spec.keys, f"{prefix}{name}.")


def entries() -> list[Entry]:
    """Every key, in the schema's order; list items as `groups[].local_groups`."""
    return list(_walk(config.SCHEMA.keys, ""))


def paths() -> list[str]:
    """The `${path:…}` attributes a Run As expression may use."""
    return list(PATHS)


def text(prefix: str = "") -> str:
    """The keys (those under `prefix` when given), for a terminal."""
    lines: list[str] = []
    for entry in entries():
        if prefix and not (entry.key == prefix or entry.key.startswith(prefix.rstrip(".") + ".")
                           or entry.key.startswith(prefix.rstrip(".") + "[]")):
            continue
        lines += [f"{entry.key}  ({entry.facts()})", f"    {entry.doc}", ""]
    if not prefix or "run_as.expression".startswith(prefix.rstrip(".")):
        lines.append("run_as.expression may use these ${path:…} attributes (one unique per person: "
                     f"{', '.join(sorted(UNIQUE_PATHS))}):")
        lines += [f"    ${{path:{p}}}" for p in paths()]
    return "\n".join(lines).rstrip() + "\n"


def markdown() -> str:
    """docs/config.md."""
    out = ["# Configuration keys", "",
           "Every key of `/etc/runas-agent/config.yaml`, generated from the schema the agent validates with;",
           "`runas-agent check-config --explain [KEY]` prints the same. `runas-agent check-config` lists",
           "every problem of a file at once, naming its key.", ""]
    section = None
    for entry in entries():
        top = entry.key.split(".")[0].split("[")[0]
        if top != section:
            section = top
            out += [f"## {top}", ""]
        out += [f"### `{entry.key}`", "", f"*{entry.facts()}*", "", entry.doc, ""]
    out += ["## Run As expression attributes", "",
            "`run_as.expression` may use these `${path:…}` attributes, as Identity Center does for",
            f"`SSMSessionRunAs`; only {', '.join(f'`{p}`' for p in sorted(UNIQUE_PATHS))} is unique per person.", ""]
    out += [f"- `${{path:{p}}}`" for p in paths()]
    return "\n".join(out) + "\n"
