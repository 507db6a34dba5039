"""Directory values in text output and journal fields: escaped and cut; JSON output stays exact."""

import json

import pytest

from runas_agent import events
from runas_agent.core import desired, naming
from runas_agent.core.display import VALUE_LIMIT, escaped, field, shown
from runas_agent.core.expression import parse
from runas_agent.directory import make_document, parse_document

HOSTILE = "al\x00ice\x1b]0;owned\x07\x1b[2J\u202eevil\n\r\t\ud800"


def test_controls_and_invisible_characters_are_escaped():
    out = shown(HOSTILE)
    assert out.isprintable()
    assert out == "al\\x00ice\\x1b]0;owned\\x07\\x1b[2J\\u202eevil\\n\\r\\t\\ud800"


def test_plain_values_are_unchanged_even_beyond_ascii():
    for value in ("alice@example.com", "José Núñez", "李小龙", "o'brien"):
        assert shown(value) == value
        assert escaped(value) == value


def test_a_megabyte_is_cut_with_the_number_left_out():
    out = shown("a" * 1_000_000)
    assert out == "a" * VALUE_LIMIT + f"…[+{1_000_000 - VALUE_LIMIT} chars]"


def test_the_cut_never_splits_an_escape():
    out = shown("\x1b" * 100, limit=10)
    assert out == "\\x1b\\x1b…[+98 chars]"


def test_journal_fields_escape_and_cut_every_value_but_json_stays_exact():
    record = events.Record.of(events.SYNC, events.Priority.WARNING, "skip " + HOSTILE, RUNAS_USER_NAME="x" * 10_000)
    sent = record.journal_fields()
    assert all("\n" not in f and "\x00" not in f and "\x1b" not in f for f in sent), sent
    assert len(sent[-1]) < 4200
    assert record.as_json(0.0)["MESSAGE"] == "skip " + HOSTILE
    assert field("ok") == "ok"


def _directory(names):
    users = [{"UserId": f"u-{i}", "UserName": name, "UserStatus": "ENABLED"} for i, name in enumerate(names)]
    return parse_document(make_document("d-1234567890", users, [], []))


@pytest.mark.parametrize("name", [HOSTILE, "b" * 1_000_000])
def test_a_skip_line_shows_a_hostile_user_name_escaped_and_short(name):
    settings = desired.Settings(expression=parse("${path:userName}"), account_kind="person", rules=naming.DEBIAN)
    result = desired.compute(_directory([name]), settings)
    assert result.skips, result
    line = str(result.skips[0])
    assert line.isprintable() and len(line) < 1000, line[:300]
