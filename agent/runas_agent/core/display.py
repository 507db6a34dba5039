"""Showing hostile text (pure): directory values in text output and journal fields, escaped and cut
to a readable length. JSON output stays exact; this is only for what a person reads.

A value from the directory can hold anything JSON can: NUL, ESC and OSC sequences that retitle or
repaint a terminal, bidirectional overrides that reorder what is shown, lone surrogates that cannot
even be encoded, and a megabyte of any of them. `shown` makes one value safe to print; `escaped`
makes a whole line safe without cutting it (the last guard before a terminal or the journal).
"""

from __future__ import annotations

import unicodedata

#: The longest a directory value is shown, in characters after escaping (an Identity Store UserName
#: is at most 128 characters; a DisplayName may be 1024).
VALUE_LIMIT = 160
#: The longest a journal field is, in characters after escaping.
FIELD_LIMIT = 4096
#: Unicode categories never shown as they are: controls (C0, DEL, C1), format characters
#: (bidirectional overrides, zero-width characters), surrogates, private use, unassigned, and the
#: line and paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    if unicodedata.category(ch) not in _HIDDEN:
        return ch
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escaped(text: str) -> str:
    """`text` with every character that is not plain visible text written as an escape (`\\x1b`,
    `\\u202e`, `\\n`); nothing cut."""
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(_escape(ch) for ch in text)


def shown(value: object, limit: int = VALUE_LIMIT) -> str:
    """One value as text output shows it: escaped, and cut to `limit` characters with the number of
    characters left out (`aaaa…[+999840 chars]`)."""
    text = value if isinstance(value, str) else str(value)
    out: list[str] = []
    length = 0
    for index, ch in enumerate(text):
        piece = _escape(ch)
        if length + len(piece) > limit:
            return "".join(out) + f"…[+{len(text) - index} chars]"
        out.append(piece)
        length += len(piece)
    return "".join(out)


def field(value: str, limit: int = FIELD_LIMIT) -> str:
    """A journal field's value: escaped and cut like `shown`, with a longer limit (a record may
    carry a whole summary)."""
    return shown(value, limit)


def quoted(value: object, limit: int = VALUE_LIMIT) -> str:
    """A value as `repr` would name it in a message (a string in quotes, None as None), escaped and
    cut like `shown`."""
    return f"'{shown(value, limit)}'" if isinstance(value, str) else shown(repr(value), limit)
