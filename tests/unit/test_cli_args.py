"""The command line's global options: the same before or after the command, refused where they mean nothing."""

import pytest

from runas_agent import cli
from runas_agent.exitcodes import Exit


def parse(*argv):
    return cli.parse_args(cli.full_parser(), list(argv))


@pytest.mark.parametrize("argv", [("--json", "-c", "/x", "plan", "--force"), ("plan", "--config", "/x", "--json", "--force"),
                                  ("-c", "/x", "plan", "--json", "--force")])
def test_any_position_means_the_same(argv):
    args = parse(*argv)
    assert (args.command, args.config, args.json, args.force, args.wait) == ("plan", "/x", True, True, cli.DEFAULT_WAIT)


def test_defaults_are_resolved():
    args = parse("doctor")
    assert (args.config, args.json, args.force, args.once, args.verbose) == (cli.config.DEFAULT_PATH, False, False, False, False)


@pytest.mark.parametrize("argv", [("--once", "plan"), ("--force", "doctor"), ("--wait", "3", "plan"), ("--json",),
                                  ("--json", "check-config"), ("--once", "--wait", "-1"), ("--once", "--wait", "nan")])
def test_meaningless_combinations_exit_64(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(*argv)
    assert info.value.code == Exit.USAGE and "runas-agent: error:" in capsys.readouterr().err


def test_a_command_with_its_own_copy_of_a_global_option_keeps_it():
    parser = cli._Parser(prog="x")
    cli._global_options(parser, lambda text: text)
    sub = parser.add_subparsers(dest="command")
    publish = sub.add_parser("publish")
    publish.add_argument("--once", action="store_true", help="publish once and exit")
    cli._spread_global_options(parser)
    args = cli.parse_args(parser, ["publish", "--once", "-c", "/x"])
    assert args.once and args.config == "/x" and args.command == "publish"
    assert not cli.parse_args(parser, ["publish"]).once
