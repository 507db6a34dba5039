"""`check-config --explain` and docs/config.md come from the schema: every key, in step."""

from pathlib import Path

from runas_agent import config, configdoc
from runas_agent.core.expression import PATHS

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_what_the_schema_generates():
    assert DOC.read_text() == configdoc.markdown(), (
        "docs/config.md is out of step with the schema; regenerate it with "
        "`PYTHONPATH=agent python -m runas_agent check-config --explain --markdown > docs/config.md`")


def test_every_key_and_path_is_explained():
    shown = configdoc.text()
    for key, _default, doc in config.describe_schema():
        assert f"\n{key}  (" in "\n" + shown and doc in shown, key
    for item in ("groups[].local_groups", "sudo.rules[].commands", "sudo.rules[].nopasswd"):
        assert f"\n{item}  (" in shown, item
    assert all(f"${{path:{p}}}" in shown for p in PATHS)


def test_the_facts_of_a_key():
    entries = {e.key: e for e in configdoc.entries()}
    assert entries["accounts.name_rules"].facts() == "a string; default auto; one of auto, debian, rhel, rhel-email"
    assert entries["run_as.expression"].facts() == "a string; required"
    assert entries["source.path"].facts() == "a string or null; only with source.type file"
    assert entries["daemon.interval_seconds"].facts() == "a number; default 900"


def test_explaining_one_section():
    shown = configdoc.text("accounts")
    assert "accounts.shell  (" in shown and "source.type" not in shown and "${path:" not in shown
