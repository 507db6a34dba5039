"""The command line: parse arguments, call one command, map its result or error to an exit status."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from typing import Any, Callable

from runas_agent import __version__, aws, config, daemon, doctor, image
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


def cmd_plan(args: argparse.Namespace, cfg: Config) -> Exit:
    result = sync(cfg, apply=False, force=args.force)
    if args.json:
        _print_json({**result.plan.to_json(), "source": result.source_stats})
    else:
        for line in result.plan.lines():
            print(line)
        print(f"Plan: {result.plan.summary()}.")
    return result.exit


def _progress_line(phase: str, done: int, total: int) -> None:
    print(f"runas-agent: {phase}: {done} of {total}...", file=sys.stderr, flush=True)


def cmd_once(args: argparse.Namespace, cfg: Config) -> Exit:
    with SyncLock(StateDir(cfg.state_dir).lock_path, wait=args.wait):
        result = sync(cfg, apply=True, force=args.force, report=_progress_line if sys.stderr.isatty() else None)
    failures = result.outcome.failed if result.outcome else []
    if args.json:
        data = result.plan.to_json()
        data["failed"] = [{"action": a.to_json(), "error": m} for a, m in failures]
        data["counts"] = result.counts.to_dict()
        data["seconds"] = round(result.seconds, 3)
        data["unrecorded"] = list(result.unrecorded)
        _print_json(data)
        return result.exit
    failed = {id(a): msg for a, msg in failures}
    for action in result.plan.actions:
        print(action.line() + (f"  FAILED: {failed[id(action)]}" if id(action) in failed else ""))
    for line in result.plan.lines()[len(result.plan.actions):]:
        print(line)
    if result.status is SyncStatus.REFUSED:
        print("Refused: nothing was changed. Fix the cause, or run with --force if you mean it.")
    else:
        print(f"Sync: {result.counts.summary()} in {result.seconds:.2f}s.")
    for problem in result.unrecorded:
        print(f"runas-agent: the changes above were applied, but {problem}; the next sync finds them on the host",
              file=sys.stderr)
    return result.exit


def cmd_export(args: argparse.Namespace, cfg: Config) -> Exit:
    """Write the configured source's directory as a directory document: the file source's format,
    and the snapshot a fleet publisher puts where instances read it (signed with --signing-key)."""
    if args.output.startswith("s3://"):
        try:
            split_url(args.output)
        except ValueError as exc:
            raise AgentError(f"--output: {exc}") from None
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
        write_atomic(args.output, data, mode=0o640)
        print(f"{args.output}: {len(directory.users)} users, {len(directory.groups)} groups{signed}, "
              f"{len(data)} bytes", file=sys.stderr)
    return Exit.OK


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
    path = args.path or args.config
    try:
        config.load(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return Exit.CONFIG
    print(f"{path}: ok")
    return Exit.OK


#: The feature modules' subcommands: fn(subparsers) each.
COMMANDS: tuple[Callable[[Any], None], ...] = (daemon.register_cli, sessions_cli.register_cli, doctor.register_cli,
                                              image.register_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runas-agent",
        description="Keep SSM Session Manager Run As accounts in step with the IAM Identity Center directory.",
        epilog="Exit status: 0 ok; 1 error; 2 plan has changes; 3 sync skipped identities or had failures; "
               "4 refused by safety checks; 5 doctor found a broken link; 75 another sync holds the lock; 78 invalid configuration.")
    parser.add_argument("--version", action="version", version=f"runas-agent {__version__}")
    parser.add_argument("--config", "-c", default=config.DEFAULT_PATH, help="configuration file (default: %(default)s)")
    parser.add_argument("--once", action="store_true", help="run one sync and exit")
    parser.add_argument("--force", action="store_true", help="apply a plan the safety checks refuse")
    parser.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                        help="with --once: how long to wait for a running sync to finish (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("plan", help="show what a sync would change, change nothing (exit 0: nothing, 2: changes)")
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
    p.set_defaults(func=cmd_check_config, needs_config=False)

    for register in COMMANDS:
        register(sub)
    return parser


def full_parser() -> argparse.ArgumentParser:
    """The parser with every command (runas-agent(8) is generated from it)."""
    return build_parser()


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
            print(f"  {problem}", file=sys.stderr)
        return Exit.CONFIG
    status, prefix = next((s, p) for kind, s, p in FAILURES if isinstance(exc, kind))
    print(f"runas-agent: {prefix}{exc}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = full_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="runas-agent: %(levelname)s: %(message)s", stream=sys.stderr)
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
