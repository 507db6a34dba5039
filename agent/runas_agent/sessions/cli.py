"""`runas-agent sessions`: the live sessions on this host and the person behind each (like `who`);
`runas-agent sessions watch`: the session watcher alone, in the foreground."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

from runas_agent.exitcodes import Exit
from runas_agent.sessions.model import clean, shown_account


def _row(s) -> dict:
    ident = s.identity
    return {
        "session_id": s.session_id,
        "identity_user": ident.user_name if ident else s.identity_user,
        "identity_id": ident.user_id if ident else "",
        "display_name": ident.display_name if ident else "",
        "email": ident.email if ident else "",
        "organization": ident.organization if ident else "",
        "groups": list(ident.groups) if ident else [],
        "identity_status": ("ENABLED" if ident.enabled else "DISABLED") if ident else "",
        "owner_arn": s.owner_arn,
        "account": shown_account(s),
        "account_source": s.account_source,
        "session_type": s.session_type,
        "account_uid": s.account_uid,
        "requested_account": s.requested_account,
        "worker_pid": s.worker_pid,
        "shell_pid": s.shell_pid,
        "started_at": datetime.fromtimestamp(s.started_at, timezone.utc).isoformat(timespec="seconds") if s.started_at else None,
        "detected_by": s.detected_by,
        "unresolved_reason": s.unresolved_reason,
    }


def cmd_sessions(args: argparse.Namespace, cfg: SimpleNamespace) -> Exit:
    from runas_agent.sessions.watcher import live_sessions

    for root in cfg.sessions.state_roots:
        if os.path.isdir(root) and not os.access(root, os.R_OK | os.X_OK):
            print(f"runas-agent: cannot read {root} (the SSM agent's state; run as root): "
                  "sessions below lack their owners", file=sys.stderr)
    sessions = live_sessions(cfg)
    rows = [_row(s) for s in sessions]
    if args.json:
        json.dump({"sessions": rows}, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return Exit.OK
    if not rows:
        print("No Session Manager sessions.")
        return Exit.OK
    table = [("ACCOUNT", "PERSON", "ORGANIZATION", "SINCE", "SHELL", "SESSION")]
    for s, r in zip(sessions, rows):
        account = r["account"] or "?"
        if r["account_uid"] is not None:
            account += f"({r['account_uid']})"
        since = datetime.fromtimestamp(s.started_at).strftime("%Y-%m-%d %H:%M") if s.started_at else "?"
        person = s.person if not s.unresolved_reason else f"{s.person} [unresolved: {s.unresolved_reason}]"
        table.append((account, person, r["organization"] or "-", since, str(r["shell_pid"] or "-"), s.session_id))
    widths = [max(len(clean(row[i])) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        cells = [clean(c).ljust(w) for c, w in zip(row, widths)] + [clean(row[-1])]
        print("  ".join(cells).rstrip())
    return Exit.OK


def cmd_watch(args: argparse.Namespace, cfg: SimpleNamespace) -> Exit:
    from runas_agent.sessions.watcher import SessionWatcher

    watcher = SessionWatcher(cfg)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    watcher.start()
    try:
        while not done.wait(1.0):
            pass
    finally:
        watcher.close()
    return Exit.OK


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("sessions", help="live Session Manager sessions and the person behind each")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sessions, needs_config=True)
    sub = p.add_subparsers(dest="sessions_command")
    w = sub.add_parser("watch", help="run only the session watcher, in the foreground, until SIGTERM")
    w.set_defaults(func=cmd_watch, needs_config=True)
