"""`doctor`, the host links: the SSM agent installed and running, the sudoers tree as sudo reads it,
and ssm-user's blanket sudo. They run whether or not the configuration is valid (an invalid one:
they look where an unconfigured agent would).

The checks read the host through the probe (shell); the verdicts are pure functions of what they read.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, List, Mapping, Optional, Sequence

from runas_agent.core import sudoers as core
from runas_agent.doctor.check import (FAILED, NOTHING, WARNING, Check, Facts, Need, Verdict, failed, given, ok, plural,
                                      warning)
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import AS_ROOT, RUN_AS_ENABLED, SETTINGS
from runas_agent.errors import CommandError
from runas_agent.host.files import read_bytes

SSM_AGENT = "amazon-ssm-agent"


class Privileges(Check):
    """Whether the doctor runs as root (some files only root may read)."""

    name = "privileges"
    shown = False
    provides = (AS_ROOT,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        return given(AS_ROOT, True) if env.probe.euid() == 0 else NOTHING


# --- the SSM agent --------------------------------------------------------------------------------

class SsmAgent(Check):
    name = "ssm-agent"

    def run(self, facts: Facts, env: Env) -> Verdict:
        probe = env.probe
        kinds = []
        if any(os.path.exists(path) for path in probe.agent_binaries):
            kinds.append("deb/rpm")
        if os.path.isdir(probe.snap_dir):
            kinds.append("snap")
        units = [os.path.join(d, n) for d in probe.unit_dirs for n in probe.unit_names if os.path.exists(os.path.join(d, n))]
        running = agent_pids(getattr(process, "info", None) or {} for process in probe.processes())
        return agent_verdict(kinds, units, running)


def agent_pids(processes: Iterable[Mapping[str, Any]]) -> List[str]:
    """The pids of the processes (psutil's info dicts) that are the SSM agent, by name, binary or argv[0]."""
    running = []
    for info in processes:
        names = {info.get("name") or "", os.path.basename(info.get("exe") or "")}
        cmdline = info.get("cmdline") or []
        if cmdline:
            names.add(os.path.basename(cmdline[0]))
        if SSM_AGENT in names:
            running.append(str(info.get("pid")))
    return running


def agent_verdict(kinds: Sequence[str], units: Sequence[str], running: Sequence[str]) -> Verdict:
    if not kinds:
        return failed("the SSM agent is not installed (no /usr/bin/amazon-ssm-agent, no snap)",
                      "install amazon-ssm-agent (the AWS deb/rpm, or `snap install amazon-ssm-agent --classic`)")
    unit_text = f"; unit {', '.join(units)}" if units else "; no systemd unit file found"
    if not running:
        return failed(f"the SSM agent is installed ({', '.join(kinds)}) but not running{unit_text}",
                      "systemctl enable --now amazon-ssm-agent (snap: snap start --enable amazon-ssm-agent)")
    return ok(f"the SSM agent is installed ({', '.join(kinds)}) and running (pid {', '.join(running)}){unit_text}")


# --- the sudoers tree -----------------------------------------------------------------------------

class Sudoers(Check):
    name = "sudoers"
    needs = (SETTINGS, Need(AS_ROOT, "`visudo -c` reads files only root may read: run the doctor as root"))

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg = facts[SETTINGS]
        try:
            result = env.visudo_check(cfg.sudo.visudo)
        except CommandError as exc:
            return Verdict(FAILED if cfg.sudo.rules else WARNING, f"cannot check the sudoers tree: {exc}",
                           "install sudo (it brings visudo), or set sudo.visudo to its path")
        try:
            names = sorted(os.listdir(cfg.sudo.sudoers_dir))
        except OSError:
            names = []
        return sudoers_verdict(result.returncode, result.stdout + result.stderr, ignored_dropins(cfg.sudo.sudoers_dir, names))


def ignored_dropins(sudoers_dir: str, names: Iterable[str]) -> List[str]:
    """The drop-ins sudo's #includedir silently skips, each in words (runas-agent's own temporary files aside)."""
    return [f"sudo ignores {os.path.join(sudoers_dir, name)}: #includedir skips names containing '.' or ending in '~'"
            for name in names if not name.startswith(core.TEMP_PREFIX) and ("." in name or name.endswith("~"))]


def sudoers_verdict(returncode: int, output: str, ignored: Sequence[str]) -> Verdict:
    """`visudo -c`'s exit status and output, and the drop-ins sudo never reads."""
    lines = [line for line in output.splitlines() if line.strip()]
    if returncode != 0:
        problems = [line for line in lines if not line.rstrip().endswith("parsed OK")]
        return failed("the sudoers tree fails `visudo -c`: sudo refuses to run for everyone",
                      "fix or remove the file visudo names (as root: `visudo -c`, then `visudo -cf FILE` for one file); "
                      "while visudo cannot say which file is broken, runas-agent writes no drop-in (it still removes its own)",
                      [*problems, *ignored])
    if ignored:
        return warning("the sudoers tree passes `visudo -c`, but some drop-ins are never read",
                       "rename them without '.' and '~' if they are meant to apply", ignored)
    return ok(f"the sudoers tree passes `visudo -c` ({plural(len(lines), 'file')} parsed)")


# --- ssm-user's blanket sudo ----------------------------------------------------------------------

class SsmUserSudo(Check):
    name = "ssm-user-sudo"
    needs = (SETTINGS,)
    uses = (RUN_AS_ENABLED,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg = facts[SETTINGS]
        path = os.path.join(cfg.sudo.sudoers_dir, core.SSM_USER_FILE)
        try:
            data = read_bytes(path)
        except OSError as exc:
            return warning(f"cannot read {path}: {exc.strerror}")
        content = data.decode("utf-8", "surrogateescape") if data is not None else None
        return ssm_user_verdict(path, content, env.probe.user_exists(core.SSM_USER), cfg.sudo.remove_ssm_user_blanket,
                                facts.get(RUN_AS_ENABLED))


def ssm_user_verdict(path: str, content: Optional[str], account_exists: bool, removing: bool,
                     run_as_enabled: Optional[bool]) -> Verdict:
    """The SSM agent's drop-in for ssm-user (`content`, None when absent): who is root through it."""
    account = "the ssm-user account exists" if account_exists else "there is no ssm-user account"
    if content is None:
        return ok(f"{path} is absent: ssm-user has no blanket sudo ({account})")
    if not core.is_ssm_blanket(content):
        return warning(f"{path} exists but grants more than ssm-user: left alone by runas-agent", "review it by hand",
                       core.rule_lines(content))
    if removing:
        return warning(f"{path} still gives ssm-user blanket sudo ({account}); sudo.remove_ssm_user_blanket is set, "
                       "so the next sync removes it",
                       "run `runas-agent --once` now, and check the last sync's result if it stays")
    grant = f"{path} gives ssm-user {' '.join(core.rule_lines(content))} ({account})"
    if run_as_enabled is False:
        return warning(f"{grant}, and Run As is off: every session lands in ssm-user and is root",
                       "turn Run As on first (see session-preferences), then set sudo.remove_ssm_user_blanket: true")
    return warning(f"{grant}: whoever still lands in ssm-user is root",
                   "set sudo.remove_ssm_user_blanket: true once Run As works (the agent backs the file up, then removes it)")
