"""packaging/manpage.py: runas-agent(8) generated from the argument parser names every command and
option the program accepts, and is well-formed roff."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from runas_agent.cli import full_parser

REPO = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("runas_agent_manpage", REPO / "packaging/manpage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


manpage = _load()


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return full_parser()


@pytest.fixture(scope="module")
def page(parser) -> str:
    return manpage.render(parser, "2026-01-02", "9.8.7")


def _section(page: str, title: str) -> str:
    """The text of one .SS subsection (a command), up to the next .SS or .SH."""
    match = re.search(rf'^\.SS "{re.escape(title)}"\n(.*?)(?=^\.S[SH] )', page, re.M | re.S)
    assert match, f"no subsection {title!r}"
    return match.group(1)


def test_every_command_is_a_subsection_with_every_option(parser, page):
    found = manpage.commands(parser)
    names = [" ".join(path) for path, _h, _p in found]
    # The feature modules' commands are there, not only build_parser()'s own.
    assert {"plan", "export", "check-config", "run", "sessions", "sessions watch", "doctor", "image-clean"} <= set(names)
    for path, help_text, child in found:
        body = _section(page, manpage.literal(" ".join(path)))
        assert manpage.text(help_text) in body
        for action in manpage.options(child, with_help=False):
            for flag in action.option_strings or [action.metavar or action.dest]:
                assert manpage.literal(flag) in body, (path, flag)
        assert f"\\fB{manpage.literal(path[-1])}\\fR" in page.split(".SH DESCRIPTION")[0], f"{path} not in SYNOPSIS"


def test_every_global_option_with_its_expanded_help(parser, page):
    options = page.split(".SH OPTIONS", 1)[1].split(".SH COMMANDS", 1)[0]
    for action in manpage.options(parser):
        for flag in action.option_strings:
            assert f"\\fB{manpage.literal(flag)}\\fR" in options, flag
    assert "%(default)s" not in page
    assert "(default: /etc/runas\\-agent/config.yaml)" not in page   # prose keeps its hyphens
    assert "(default: /etc/runas-agent/config.yaml)" in options


def test_a_new_option_appears_without_touching_the_generator():
    parser = argparse.ArgumentParser(prog="runas-agent", description="Test.")
    parser.add_argument("--brand-new", metavar="N", help="a new option (default: %(default)s)", default=3)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("fresh", help="a new command")
    p.add_argument("--deep", action="store_true", help="deeper")
    page = manpage.render(parser, "2026-01-02")
    assert "\\fB\\-\\-brand\\-new\\fR \\fIN\\fR" in page and "a new option (default: 3)" in page
    assert "\\-\\-deep" in _section(page, "fresh")


def test_exit_statuses_from_the_epilog(page):
    status = page.split('.SH "EXIT STATUS"', 1)[1].split(".SH", 1)[0]
    assert "\\fB78\\fR\ninvalid configuration" in status and "\\fB0\\fR\nok" in status


def test_roff_escaping_cannot_inject_requests():
    assert manpage.text(".TH evil") == "\\&.TH evil"
    assert manpage.text("'so /etc/shadow") == "\\&'so /etc/shadow"
    assert manpage.text("back\\slash --opt x-y") == "back\\eslash \\-\\-opt x-y"


def test_name_line_is_a_whatis_entry(page):
    """man-db's whatis/apropos read `name \\- description` from NAME (man --warnings runs on the
    packaged page in the package tests)."""
    assert page.splitlines()[2] == ("runas\\-agent \\- keep SSM Session Manager Run As accounts in step "
                                    "with the IAM Identity Center directory")
