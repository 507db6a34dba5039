"""Allowed names (pure): `accounts.allowed_names`, the regular expression every Run As name must
match, whole, before it may become an account.

The reserved lists (core/reserved.py) refuse the names packages and images are known to use; this
pattern refuses everything the fleet's own naming scheme does not produce, e.g.
`^[a-z0-9._-]+@corp\\.example$` when every Run As value is a work e-mail address. It closes what no
list can: a name a package nobody has heard of will create, picked by a person who edits their own
directory attribute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KEY = "accounts.allowed_names"


def compile_pattern(text: str) -> re.Pattern[str]:
    """The compiled pattern; ValueError saying what is wrong with it (without the key)."""
    if text == "":
        raise ValueError("must not be empty (leave it unset to allow every name the other checks allow)")
    try:
        return re.compile(text)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"not a valid regular expression: {exc.msg}{where}") from None


def pattern_problem(text: str) -> str | None:
    """For the configuration schema: what is wrong with the pattern, or None."""
    try:
        compile_pattern(text)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class AllowedNames:
    """The configured pattern (None: every name passes this check)."""

    pattern: re.Pattern[str] | None = None

    @classmethod
    def from_setting(cls, text: str | None) -> "AllowedNames":
        return cls(None if text is None else compile_pattern(text))

    def problem(self, name: str) -> str | None:
        """Why `name` may not be an account under this pattern; None when it may."""
        if self.pattern is None or self.pattern.fullmatch(name):
            return None
        return f"{name!r} does not match {KEY} ({self.pattern.pattern})"
