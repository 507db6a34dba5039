"""The login shell managed accounts get (pure): whether the host can give it, and the plan's
refusal when it cannot.

A shell that does not exist is not caught by useradd or usermod, and an account with one is an
account nobody can use: the SSM agent's Run As shell fails to start. A shell missing from
/etc/shells is one that pam_shells, chsh and FTP daemons refuse, and usually a typing mistake.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, TypeVar

from runas_agent.core.observed import ShellOnHost
from runas_agent.core.plan import CreateAccount, EnableAccount, Plan, UpdateAccount

P = TypeVar("P", bound=Plan)


def problem(shell: ShellOnHost) -> Optional[str]:
    """Why accounts cannot be given `shell` on this host, or None."""
    if not shell.exists:
        return "does not exist on this host"
    if not shell.executable:
        return "is not executable"
    if shell.listed is not None and shell.path not in shell.listed:
        return "is not listed in /etc/shells"
    return None


def sets_shell(plan: Plan, shell: str) -> bool:
    """Whether applying `plan` gives some account `shell`."""
    return (any(a.shell == shell for a in plan.of(CreateAccount)) or any(a.shell == shell for a in plan.of(EnableAccount))
            or any(a.changes.get("shell", (None, None))[1] == shell for a in plan.of(UpdateAccount)))


def judge(plan: P, shell: ShellOnHost) -> P:
    """The plan, refused when it would give accounts a shell the host cannot run. --force does not
    override this: no account is better off with a shell that does not start."""
    why = problem(shell)
    if why is None or not sets_shell(plan, shell.path):
        return plan
    return replace(plan, refusals=plan.refusals + (
        f"accounts.shell {shell.path} {why}: no account is given it; fix accounts.shell "
        "(`runas-agent check-config` on this host checks it)",))
