#!/usr/bin/env python3
"""runas-agent(8), generated from the command line's own parser: every command and option the
program accepts, with its help text, and nothing written by hand about them.

    packaging/manpage.py [--date YYYY-MM-DD] [--output FILE]

`render(parser, date)` is pure (argparse parser in, roff text out); the command line imports
`runas_agent.cli.full_parser()` from whatever `runas_agent` is importable (packaging/build puts
the tree being packaged first on PYTHONPATH, so the page carries that tree's version).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys

SECTION = "8"
#: Sections that are not about the parser: where things live, and related pages.
FILES = (
    ("/var/lib/runas-agent/", "state: the ledger of the accounts and sudoers drop-ins the agent owns, "
                              "the last directory snapshot, the session tracking state"),
    ("/usr/share/runas-agent/", "a sample directory and a configuration that reads it"),
    ("/usr/share/doc/runas-agent/", "the documentation: packages, images, configuration"),
)
SEE_ALSO = ("systemctl(1)", "journalctl(1)", "useradd(8)", "usermod(8)", "sudoers(5)", "visudo(8)")
_OPTION_TOKEN = re.compile(r"(?<![\w-])(--?)(?=[A-Za-z])")
_EXIT_ITEM = re.compile(r"^\s*(\d+)\s+(.+?)\s*$")


# -- roff --------------------------------------------------------------------------------------


def text(value: str) -> str:
    """Prose for roff: backslashes escaped, options' dashes as real minus signs, no line that
    starts like a request."""
    value = value.replace("\\", "\\e")
    value = _OPTION_TOKEN.sub(lambda m: "\\-" * len(m.group(1)), value)
    value = value.replace("\n", " ")
    return "\\&" + value if value.startswith((".", "'")) else value


def literal(value: str) -> str:
    """A command or option name: every dash a minus sign."""
    return value.replace("\\", "\\e").replace("-", "\\-")


# -- the parser --------------------------------------------------------------------------------


def _help(action: argparse.Action, prog: str) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=prog)
    for name, value in list(params.items()):
        if hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    return action.help % params


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        name = action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    elif action.choices is not None:
        name = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        name = action.dest.upper() if action.option_strings else action.dest
    if action.nargs == "?":
        return f"[{name}]"
    if action.nargs in ("*", "+"):
        return f"{name} ..."
    return name


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def options(parser: argparse.ArgumentParser, with_help: bool = True) -> list[argparse.Action]:
    """The optional and positional arguments of `parser` (not its subcommands)."""
    return [a for a in parser._actions
            if not isinstance(a, argparse._SubParsersAction)
            and a.help != argparse.SUPPRESS
            and (with_help or not isinstance(a, argparse._HelpAction))]


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    """(path, help, parser) of every subcommand, depth first: (("sessions",), ...), (("sessions", "watch"), ...)."""
    sub = _subparsers(parser)
    if sub is None:
        return []
    found = []
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    for name, child in sub.choices.items():
        if name not in helps:   # an alias
            continue
        path = (*prefix, name)
        found.append((path, helps[name], child))
        found.extend(commands(child, path))
    return found


# -- the page ----------------------------------------------------------------------------------


def _option_item(action: argparse.Action, prog: str) -> list[str]:
    metavar = _metavar(action)
    if action.option_strings:
        names = ", ".join(f"\\fB{literal(o)}\\fR" for o in action.option_strings)
        head = f"{names} \\fI{literal(metavar)}\\fR" if metavar else names
    else:
        head = f"\\fI{literal(metavar)}\\fR"
    return [".TP", head, text(_help(action, prog)) or "\\&"]


def _usage(path: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    words = [f"\\fB{literal(w)}\\fR" for w in path]
    for action in options(parser, with_help=False):
        metavar = _metavar(action)
        if action.option_strings:
            flag = f"\\fB{literal(action.option_strings[0])}\\fR"
            words.append(f"[{flag} \\fI{literal(metavar)}\\fR]" if metavar else f"[{flag}]")
        else:
            words.append(f"\\fI{literal(metavar)}\\fR")
    if _subparsers(parser) is not None:
        words.append("[\\fICOMMAND\\fR]")
    return [".br", " ".join(words)] if words else []


def _exit_status(epilog: str) -> list[str]:
    """'Exit status: 0 ok; 1 error; ...' as a list of values; any other epilog as a paragraph."""
    head, sep, rest = epilog.partition(":")
    items = [_EXIT_ITEM.match(part) for part in rest.rstrip(".").split(";")] if sep else []
    if head.strip().lower() != "exit status" or not items or not all(items):
        return [".SH NOTES", text(epilog)]
    lines = [".SH \"EXIT STATUS\""]
    for match in items:
        lines += [".TP", f"\\fB{match.group(1)}\\fR", text(match.group(2))]
    return lines


def _synopsis(parser: argparse.ArgumentParser) -> list[str]:
    lines = [".SH SYNOPSIS", ".nh", ".ad l", *_usage((parser.prog,), parser)[1:]]
    for path, _help_text, child in commands(parser):
        lines += _usage((parser.prog, *path), child)
    return lines + [".hy", ".ad b"]


def _commands_section(parser: argparse.ArgumentParser) -> list[str]:
    lines = [".SH COMMANDS", "Every command also accepts \\fB\\-h\\fR, \\fB\\-\\-help\\fR."]
    for path, help_text, child in commands(parser):
        lines += [f'.SS "{literal(" ".join(path))}"', text(help_text)]
        for action in options(child, with_help=False):
            lines += _option_item(action, parser.prog)
    return lines


def _files_section(parser: argparse.ArgumentParser) -> list[str]:
    config = next((a.default for a in parser._actions if "--config" in a.option_strings), None)
    lines = [".SH FILES"]
    if config:
        lines += [".TP", f"\\fI{literal(config)}\\fR", "the configuration (see \\fB\\-\\-config\\fR)"]
    for path, what in FILES:
        lines += [".TP", f"\\fI{literal(path)}\\fR", text(what)]
    return lines


def render(parser: argparse.ArgumentParser, date: str, version: str = "") -> str:
    """The whole page in roff (man macros)."""
    prog = parser.prog
    summary = (parser.description or prog).strip().rstrip(".")
    title = f"{prog} {version}".strip()
    lines = [f'.TH "{prog.upper()}" "{SECTION}" "{date}" "{text(title)}" "System Administration"',
             ".SH NAME", f"{literal(prog)} \\- {text(summary[:1].lower() + summary[1:])}",
             *_synopsis(parser), ".SH DESCRIPTION", text(parser.description or ""), ".SH OPTIONS"]
    for action in options(parser):
        lines += _option_item(action, prog)
    lines += _commands_section(parser)
    if parser.epilog:
        lines += _exit_status(parser.epilog)
    lines += _files_section(parser)
    lines += [".SH \"SEE ALSO\"", ", ".join(f"\\fB{literal(p.split('(')[0])}\\fR({p.split('(')[1]}" for p in SEE_ALSO)]
    return "\n".join(lines) + "\n"


def _date(value: str | None) -> str:
    if value:
        return datetime.date.fromisoformat(value).isoformat()
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else datetime.datetime.now(datetime.timezone.utc)
    return when.date().isoformat()


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="packaging/manpage.py", description=__doc__.split("\n\n")[0])
    args.add_argument("--date", help="the page's date, YYYY-MM-DD (default: SOURCE_DATE_EPOCH, else today)")
    args.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
    opts = args.parse_args(argv)
    from runas_agent import __version__
    from runas_agent.cli import full_parser

    page = render(full_parser(), _date(opts.date), __version__)
    if opts.output == "-":
        sys.stdout.write(page)
    else:
        with open(opts.output, "w", encoding="utf-8") as out:
            out.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
