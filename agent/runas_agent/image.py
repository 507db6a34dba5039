"""`runas-agent image-clean` (host side): remove what describes this one machine before an image
(AMI) is captured, so that every instance started from the image begins fresh.

Removed: the last directory snapshot (each instance reads its own directory on its first boot),
the session tracking state and the session audit file (sessions of the build machine, not of the
instances), and the runtime directory. The service is stopped first, so that it cannot write them
again before the capture; it stays enabled, so each instance syncs on its first boot, before the
SSM agent accepts sessions (the unit is Type=notify, READY=1 after the first sync, and ordered
Before= the SSM agent).

Kept, on purpose: managed accounts, their homes and sudoers drop-ins, and the ledgers that record
which of them the agent owns (ledger.json, sudoers.json, sudoers-backup/). Their UIDs are derived
from the directory, not from the machine, so they are exactly what an instance's own first sync
would create; the first sync then only applies what changed since the image was built (new
people, disabled people). Removing them instead would cost a full account creation on every
first boot, and removing the ledgers alone would turn every baked account into a conflict the
agent refuses to manage. See docs/ami.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any

from runas_agent import config
from runas_agent.errors import CommandError, ConfigError
from runas_agent.exitcodes import Exit
from runas_agent.host.files import StateDir
from runas_agent.host.lock import SyncLock
from runas_agent.host.systemctl import UNIT, Service

#: The unit's RuntimeDirectory=.
RUNTIME_DIR = "/run/runas-agent"


@dataclass(frozen=True)
class Item:
    """One path image-clean removes or keeps, and why."""

    path: str
    what: str
    remove: bool

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "what": self.what, "remove": self.remove}


def items(state_dir: str, audit_file: str, runtime_dir: str = RUNTIME_DIR) -> list[Item]:
    """What image-clean removes and what it keeps (pure)."""
    def state(name: str) -> str:
        return os.path.join(state_dir, name)

    return [
        Item(state("directory.json"), "last directory snapshot", True),
        Item(state("sessions.json"), "session tracking state", True),
        Item(state("plan-memo.json"), "remembered plan of the last sync with nothing to do", True),
        Item(audit_file, "session audit file of this machine", True),
        Item(runtime_dir, "runtime directory", True),
        Item(state("ledger.json"), "ledger of managed accounts: they stay in the image", False),
        Item(state("sudoers.json"), "ledger of managed sudoers drop-ins", False),
        Item(state("sudoers-backup"), "backup of the SSM agent's ssm-agent-users drop-in", False),
    ]


def _settings(path: str) -> tuple[str, str, str | None]:
    """state_dir and sessions.audit_file from the configuration, or their defaults (with the reason)
    when it cannot be read: an image may be cleaned before its configuration is final."""
    try:
        cfg = config.load(path)
    except ConfigError as exc:
        state_dir = config.SCHEMA["state_dir"].default
        audit = config.SCHEMA["sessions"]["audit_file"].default
        return state_dir, audit, f"{path}: {'; '.join(exc.problems)}; using the default paths"
    return cfg.state_dir, cfg.sessions.audit_file, None


def _remove(path: str) -> bool:
    """Remove a file or directory tree (never following a symlink); True if something was there."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def image_clean(state_dir: str, audit_file: str, *, service: Service, dry_run: bool = False,
                runtime_dir: str = RUNTIME_DIR, lock_wait: float = 60.0) -> dict[str, Any]:
    """Stop the service, remove the host-specific state under the sync lock, report what was done."""
    report: dict[str, Any] = {"dry_run": dry_run, "stopped": False, "removed": [], "absent": [],
                              "kept": [], "warnings": []}
    if service.active():
        report["stopped"] = True
        if not dry_run:
            service.stop()
    enabled = service.enabled()
    if enabled and enabled != "enabled":
        report["warnings"].append(
            f"{service.unit} is {enabled}: instances started from this image will not sync on their first "
            f"boot (systemctl enable {service.unit})")
    plan = items(state_dir, audit_file, runtime_dir)

    def apply() -> None:
        for item in plan:
            exists = os.path.lexists(item.path)
            if not item.remove:
                if exists:
                    report["kept"].append(item.to_json())
                continue
            if not exists:
                report["absent"].append(item.to_json())
            elif dry_run or _remove(item.path):
                report["removed"].append(item.to_json())

    if dry_run or not os.path.isdir(state_dir):
        apply()
    else:
        # A manual `runas-agent --once` must not write a snapshot between two removals.
        with SyncLock(StateDir(state_dir).lock_path, wait=lock_wait):
            apply()
    return report


def cmd_image_clean(args: argparse.Namespace) -> Exit:
    state_dir, audit_file, note = _settings(args.config)
    try:
        report = image_clean(state_dir, audit_file, service=Service(args.unit), dry_run=args.dry_run,
                             runtime_dir=RUNTIME_DIR, lock_wait=args.wait)
    except CommandError as exc:
        print(f"runas-agent: image-clean: {exc}", file=sys.stderr)
        return Exit.ERROR
    if note:
        report["warnings"].insert(0, note)
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        verb = "would remove" if args.dry_run else "removed"
        if report["stopped"]:
            print(f"{'would stop' if args.dry_run else 'stopped'} {args.unit}")
        for item in report["removed"]:
            print(f"{verb} {item['path']} ({item['what']})")
        for item in report["kept"]:
            print(f"kept {item['path']} ({item['what']})")
        for warning in report["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    return Exit.OK


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "image-clean",
        help="before capturing an image: stop the service and remove this machine's snapshot, session "
             "state and runtime files; keeps managed accounts and their ledger (see docs/ami.md)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--unit", default=UNIT, help="the service unit to stop (default: %(default)s)")
    p.set_defaults(func=cmd_image_clean, needs_config=False)


__all__ = ["Item", "Service", "image_clean", "items", "register_cli"]
