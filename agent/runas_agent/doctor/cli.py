"""`runas-agent doctor` (shell): the command, its report as text or JSON, and its exit status
(5 when any link failed; warnings alone exit 0)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from runas_agent.core.display import escaped
from runas_agent.doctor.check import FAILED, OK, SKIPPED, WARNING, Result, plural
from runas_agent.exitcodes import Exit

MARKS = {OK: "[ ok ]", WARNING: "[warn]", FAILED: "[FAIL]", SKIPPED: "[skip]"}


def counts(results: list[Result]) -> dict[str, int]:
    out = {OK: 0, WARNING: 0, FAILED: 0, SKIPPED: 0}
    for result in results:
        out[result.status] += 1
    return out


def render(results: list[Result], config_path: str) -> str:
    width = max((len(r.name) for r in results), default=0)
    pad = " " * (len(MARKS[OK]) + 1 + width + 2)
    lines = [f"runas-agent doctor ({config_path})"]
    for result in results:
        lines.append(f"{MARKS[result.status]} {result.name.ljust(width)}  {result.summary}")
        lines += [f"{pad}- {detail}" for detail in result.details]
        if result.remedy and result.status != OK:
            lines.append(f"{pad}-> {result.remedy}")
    c = counts(results)
    lines.append(f"{plural(len(results), 'check')}: {c[OK]} ok, {plural(c[WARNING], 'warning')}, {c[FAILED]} failed, "
                 f"{c[SKIPPED]} skipped")
    return "\n".join(escaped(line) for line in lines)  # a directory value never steers the terminal


def exit_status(results: list[Result]) -> Exit:
    return Exit.UNHEALTHY if any(r.status == FAILED for r in results) else Exit.OK


def cmd_doctor(args: argparse.Namespace) -> Exit:
    # The checks are loaded by this command only: every other command imports this module for its
    # command line and never runs them.
    from runas_agent.doctor.chain import Doctor

    results = Doctor(args.config, ssm_region=args.ssm_region).run()
    if args.json:
        json.dump({"config": args.config, "checks": [r.to_json() for r in results], "counts": counts(results),
                   "healthy": exit_status(results) == Exit.OK}, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(render(results, args.config))
    return exit_status(results)


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor", help="check every link of the Run As chain from this host and say how to fix what is broken; "
                       "changes nothing (exit 0: nothing failed, 5: something failed)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ssm-region", metavar="REGION",
                   help="region whose Session Manager preferences apply to this instance (default: the instance's)")
    p.set_defaults(func=cmd_doctor, needs_config=False)
