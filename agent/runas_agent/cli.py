"""The command line: parse arguments, call one command, map its result or error to an exit status."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import math
import os
import sys
from typing import Any, Callable, Iterator, NoReturn

from runas_agent import __version__, aws, checks, config, configdoc, daemon, image, output, publisher
from runas_agent.core.display import escaped, shown
from runas_agent.doctor import cli as doctor_cli
from runas_agent.errors import AgentError, ConfigError, LockBusyError, RefusedError, SourceError
from runas_agent.exitcodes import Exit
from runas_agent.host.files import StateDir, write_atomic
from runas_agent.host.lock import SyncLock
from runas_agent.sessions import cli as sessions_cli
from runas_agent.settings import Config
from runas_agent.sources import make_source
from runas_agent.sources.s3 import publish, split_url
from runas_agent.sources.signature import sign_with_kms, snapshot
from runas_agent.status import SyncStatus
from runas_agent.sync import sync

log = logging.getLogger("runas_agent")


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """One sync of a one-shot command with Python's cycle collector off: a sync of 10,000 people
    makes some hundred thousand objects that live until it ends, and the collector would walk them
    again and again for nothing (the process ends right after; the daemon never pauses it)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cmd_plan(args: argparse.Namespace, cfg: Config) -> Exit:
    with _collector_paused():
        result = sync(cfg, apply=False, force=args.force)
    if args.json:
        _print_json({**result.plan.to_json(), "source": result.source_stats, "plan_remembered": result.remembered})
    else:
        for line in result.plan.lines():
            print(line)
        print(f"Plan: {result.plan.summary()}.")
    return result.exit


def _progress_line(phase: str, done: int, total: int) -> None:
    print(f"runas-agent: {phase}: {done} of {total}...", file=sys.stderr, flush=True)


def cmd_once(args: argparse.Namespace, cfg: Config) -> Exit:
    with SyncLock(StateDir(cfg.state_dir).lock_path, wait=args.wait), _collector_paused():
        result = sync(cfg, apply=True, force=args.force, report=_progress_line if sys.stderr.isatty() else None)
    failures = result.outcome.failed if result.outcome else []
    if args.json:
        data = result.plan.to_json()
        data["failed"] = [{"action": a.to_json(), "error": m} for a, m in failures]
        data["counts"] = result.counts.to_dict()
        data["seconds"] = round(result.seconds, 3)
        data["unrecorded"] = list(result.unrecorded)
        data["plan_remembered"] = result.remembered
        _print_json(data)
        return result.exit
    failed = {id(a): msg for a, msg in failures}
    for action in result.plan.actions:
        print(escaped(action.line() + (f"  FAILED: {failed[id(action)]}" if id(action) in failed else "")))
    for line in result.plan.lines()[len(result.plan.actions):]:
        print(line)
    if result.status is SyncStatus.REFUSED:
        print("Refused: nothing was changed. Fix the cause; a refusal of the safety checks or of the directory's "
              "trust gives way to --force if you mean it.")
    else:
        print(f"Sync: {result.counts.summary()} in {result.seconds:.2f}s.")
    for problem in result.unrecorded:
        print(f"runas-agent: the changes above were applied, but {problem}; the next sync finds them on the host",
              file=sys.stderr)
    return result.exit


def cmd_export(args: argparse.Namespace, cfg: Config) -> Exit:
    """Write the configured source's directory as a directory document: the file source's format,
    and the snapshot a fleet publisher puts where instances read it (signed with --signing-key)."""
    _check_output(args.output)
    fetched = make_source(cfg.source).fetch()
    assert fetched is not None  # no known version was given
    directory = fetched.directory
    data, public_key = snapshot(directory, datetime.datetime.now(datetime.timezone.utc), _signer(args, cfg))
    signed = f", signed by {args.signing_key} (public key {public_key.fingerprint})" if public_key else ", unsigned"
    if args.output == "-":
        sys.stdout.buffer.write(data)
    elif args.output.startswith("s3://"):
        # The snapshot bucket is not the Identity Store: no endpoint override from source.endpoint_url
        # (AWS_ENDPOINT_URL_S3 is still honoured by boto3).
        etag = publish(aws.client("s3", cfg.source, endpoint_url=None), args.output, data)
        print(f"{args.output}: {len(directory.users)} users, {len(directory.groups)} groups{signed}, "
              f"ETag {etag}", file=sys.stderr)
    else:
        try:
            write_atomic(args.output, data, mode=0o640)
        except OSError as exc:
            raise AgentError(f"--output: cannot write {args.output}: {exc.strerror}") from None
        print(f"{args.output}: {len(directory.users)} users, {len(directory.groups)} groups{signed}, "
              f"{len(data)} bytes", file=sys.stderr)
    return Exit.OK


def _check_output(output: str) -> None:
    """--output names somewhere export can write, checked before the directory is read."""
    if output == "-":
        return
    if output.startswith("s3://") or "://" in output:
        try:
            split_url(output)
        except ValueError as exc:
            raise AgentError(f"--output: {exc}") from None
        return
    if os.path.isdir(output):
        raise AgentError(f"--output: {output} is a directory; give the file to write, e.g. {os.path.join(output, 'directory.json')}")
    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise AgentError(f"--output: the directory {parent} does not exist (export creates no directories)")


def _signer(args: argparse.Namespace, cfg: Config):
    """The KMS signer of --signing-key (None without it). The key's region is its ARN's, else
    source.region; its endpoint is not source.endpoint_url (AWS_ENDPOINT_URL_KMS is honoured)."""
    if not args.signing_key:
        return None
    parts = args.signing_key.split(":")
    region = parts[3] if args.signing_key.startswith("arn:") and len(parts) > 4 else None
    kms = aws.client("kms", cfg.source, region=region, endpoint_url=None)
    return lambda document: sign_with_kms(document, kms, args.signing_key)


def cmd_check_config(args: argparse.Namespace) -> Exit:
    if args.explain is not None:
        print(configdoc.markdown() if args.markdown else configdoc.text(args.explain), end="")
        return Exit.OK
    path = args.path or args.config
    try:
        cfg = config.load(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {shown(problem, 1000)}", file=sys.stderr)
        return Exit.CONFIG
    warnings = checks.warnings(cfg)
    print(f"{path}: ok" + (f" ({len(warnings)} warning{'s' if len(warnings) > 1 else ''} below)" if warnings else ""))
    sys.stdout.flush()
    for warning in warnings:
        print(escaped(f"warning: {warning}"), file=sys.stderr)
    return Exit.OK


#: The feature modules' subcommands: fn(subparsers) each.
COMMANDS: tuple[Callable[[Any], None], ...] = (daemon.register_cli, sessions_cli.register_cli, doctor_cli.register_cli,
                                              image.register_cli, publisher.register_cli)


#: How long `--once` waits for a running sync by default (seconds).
DEFAULT_WAIT = 60.0


def _seconds(text: str) -> float:
    """--wait's value: a finite number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, zero or more, not {text}")
    return value


def _global_options(parser: argparse.ArgumentParser, help_of: Callable[[str], str]) -> None:
    """The options every command takes, before or after its name. Their defaults are None here and
    resolved after parsing (a command's copy must not overwrite what was given before it)."""
    parser.add_argument("--config", "-c", default=None, help=help_of(f"configuration file (default: {config.DEFAULT_PATH})"))
    parser.add_argument("--once", action="store_true", default=None, help=help_of("run one sync and exit"))
    parser.add_argument("--force", action="store_true", default=None,
                        help=help_of("with plan or --once: apply (or plan) a change the safety checks refuse"))
    parser.add_argument("--wait", type=_seconds, default=None, metavar="SECONDS",
                        help=help_of(f"with --once or image-clean: how long to wait for a running sync to finish "
                                     f"(default: {DEFAULT_WAIT:g})"))
    parser.add_argument("--json", action="store_true", default=None, help=help_of("machine-readable output"))
    parser.add_argument("-v", "--verbose", action="store_true", default=None,
                        help=help_of("log debug messages to standard error (AWS credentials and tokens redacted)"))


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command's parser, nested ones too (`sessions watch`)."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_subparsers(child)]
    return found


def _spread_global_options(parser: argparse.ArgumentParser) -> None:
    """Every command accepts the global options too, so that `plan --config x` and `--json plan`
    mean the same. A command's own copy of an option (plan's --json) keeps its help; none of them
    has a default of its own, so what was given before the command name stands."""
    dests = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    for child in _subparsers(parser):
        child.set_defaults(own_options=frozenset(a.dest for a in child._actions if a.dest in dests))
        for action in child._actions:
            if action.dest in dests:
                action.default = argparse.SUPPRESS
        _add_missing_globals(child)


def _add_missing_globals(child: argparse.ArgumentParser) -> None:
    """The global options `child` does not define itself, hidden from its help, without defaults."""
    spare = argparse.ArgumentParser(add_help=False)
    _global_options(spare, lambda _text: argparse.SUPPRESS)
    for action in spare._actions:
        if not any(flag in child._option_string_actions for flag in action.option_strings):
            action.default = argparse.SUPPRESS
            child._add_action(action)


class _Parser(argparse.ArgumentParser):
    """A command line that cannot be parsed exits 64 (sysexits EX_USAGE), not argparse's 2, which
    is `plan`'s "there are changes"."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(Exit.USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runas-agent",
        description="Keep SSM Session Manager Run As accounts in step with the IAM Identity Center directory.",
        epilog="Exit status: 0 ok; 1 error; 2 plan has changes; 3 sync skipped identities or had failures "
               "(plan: no changes, but identities skipped); "
               "4 refused by safety checks; 5 doctor found a broken link; 64 wrong command line; "
               "75 another sync holds the lock; 78 invalid configuration.")
    parser.add_argument("--version", action="version", version=f"runas-agent {__version__}")
    _global_options(parser, lambda text: text)
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("plan", help="show what a sync would change, change nothing (exit 0: nothing, 2: changes, "
                                       "3: no changes but identities skipped)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--force", action="store_true", help="plan as if --force were given")
    p.set_defaults(func=cmd_plan, needs_config=True)

    p = sub.add_parser("export", help="write the directory from the configured source as a directory document")
    p.add_argument("--output", "-o", default="-", help="file or s3://bucket/key to write (default: standard output)")
    p.add_argument("--signing-key", metavar="KEY_ID",
                   help="sign the snapshot with this KMS key (id, ARN or alias; RSA_3072, SIGN_VERIFY): kms:Sign of "
                        "the document's SHA-256 digest, checked with kms:GetPublicKey before it is written")
    p.set_defaults(func=cmd_export, needs_config=True)

    p = sub.add_parser("check-config", help="validate a configuration file, listing every problem")
    p.add_argument("path", nargs="?", help="file to check (default: --config)")
    p.add_argument("--explain", nargs="?", const="", metavar="KEY",
                   help="instead: explain every configuration key (or those under KEY, e.g. accounts) and the "
                        "${path:...} attributes a Run As expression may use")
    p.add_argument("--markdown", action="store_true", help="with --explain: as Markdown (docs/config.md)")
    p.set_defaults(func=cmd_check_config, needs_config=False)

    for register in COMMANDS:
        register(sub)
    _spread_global_options(parser)
    return parser


def full_parser() -> argparse.ArgumentParser:
    """The parser with every command (runas-agent(8) is generated from it)."""
    return build_parser()


#: The commands that take a global option besides the sync itself (`--once`) and the commands that
#: define the option themselves (plan's --json).
GLOBAL_USES = {"force": ("plan",), "wait": ("image-clean",), "json": (), "once": ()}


def _command(args: argparse.Namespace) -> str:
    """The command given, `sessions watch` included; "" for none."""
    return " ".join(filter(None, (args.command, getattr(args, "sessions_command", None))))


def _misuse(option: str, args: argparse.Namespace) -> str | None:
    """Why the global `option`, as given, means nothing for the command given (None: it applies)."""
    command = _command(args)
    uses = GLOBAL_USES[option]
    own: frozenset[str] = getattr(args, "own_options", frozenset())
    if not getattr(args, option) or option in own or command in uses or (not command and args.once):
        return None  # not given, or the command takes it (--once is the sync: it takes them all)
    if option == "once":
        return f"--once runs one sync by itself; it does not combine with the command {command!r}"
    where = f"the command {command!r}" if command else "the service (no command)"
    takers = " and ".join([*uses, "--once"]) if option != "json" else "--once and the commands that list it"
    return f"--{option} does not apply to {where}; it is for {takers}"


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The command line, with the global options resolved: a global option a command has no use
    for is a usage error naming both, never silently ignored."""
    args = parser.parse_args(argv)
    for option in GLOBAL_USES:
        problem = _misuse(option, args)
        if problem:
            parser.error(problem)
    args.config = args.config or config.DEFAULT_PATH
    args.wait = DEFAULT_WAIT if args.wait is None else args.wait
    for flag in ("once", "force", "json", "verbose"):
        setattr(args, flag, bool(getattr(args, flag)))
    return args


#: How an error ends a command: the exit status, and what its message is prefixed with (first match).
FAILURES: tuple[tuple[type[AgentError], Exit, str], ...] = (
    (LockBusyError, Exit.BUSY, ""),
    (RefusedError, Exit.REFUSED, "refused: "),
    (SourceError, Exit.ERROR, "cannot read the directory, nothing was changed: "),
    (AgentError, Exit.ERROR, ""),
)


def _run(args: argparse.Namespace) -> int:
    if args.command is None and not args.once:
        return int(daemon.main(args))
    if args.command is None:
        args.func, args.needs_config = cmd_once, True
    if not args.needs_config:
        return int(args.func(args))
    return int(args.func(args, config.load(args.config)))


def _failed(exc: AgentError) -> Exit:
    if isinstance(exc, ConfigError):
        print(f"runas-agent: invalid configuration {exc.path or ''}".rstrip(), file=sys.stderr)
        for problem in exc.problems:
            print(f"  {shown(problem, 1000)}", file=sys.stderr)
        return Exit.CONFIG
    status, prefix = next((s, p) for kind, s, p in FAILURES if isinstance(exc, kind))
    print(escaped(f"runas-agent: {prefix}{exc}"), file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    with output.pipe_safe():  # `| head`: the output stops, the command and its exit status do not
        args = parse_args(full_parser(), argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="runas-agent: %(levelname)s: %(message)s", stream=sys.stderr)
        output.redact_handlers(logging.getLogger())
        if not args.verbose:
            # botocore and urllib3 narrate at INFO ("Found credentials in ..."); their errors reach us as exceptions.
            for noisy in ("botocore", "boto3", "urllib3"):
                logging.getLogger(noisy).setLevel(logging.WARNING)
        try:
            return _run(args)
        except AgentError as exc:  # CommandError, ConfigError and the rest of errors.py
            return _failed(exc)
        except KeyboardInterrupt:
            return Exit.ERROR
