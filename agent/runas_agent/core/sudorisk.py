"""Sudo rules that give more than they say (pure): a command known to start a shell or to erase
audit data, granted with free arguments.

sudo runs a command given without arguments in sudoers with any arguments the caller adds. For
most commands that is what a rule means; for the ones below it is root: `less` and every pager
(`journalctl`, `systemctl status`, `man` page through one) run `!sh`, editors run `:!sh`,
interpreters run anything, `find -exec`, `awk 'BEGIN{system()}'`, `env`, `tar --to-command`...
And some erase what the agent records: `journalctl --vacuum-time=1s` deletes the journal holding
every session record, `rm` and `truncate` delete logs. NOEXEC stops the first kind (the command may
not start further programs); only fixed arguments stop the second.
"""

from __future__ import annotations

import re
from typing import Iterable, Protocol

#: start a shell, or run any program, given free arguments (or through the pager they start)
SHELL = "starts a shell or any program"
#: erase or rewrite audit data (the journal, logs) given free arguments
AUDIT = "can erase audit data"

#: command name -> what it can do with free arguments. Names match the program's base name; a
#: trailing version (python3.11, perl5.36) is ignored.
RISKY: dict[str, tuple[str, ...]] = {
    **{name: (SHELL,) for name in (
        # pagers and programs that page through one
        "less", "more", "most", "pg", "man", "git",
        # editors
        "vi", "vim", "view", "rvim", "nvim", "nano", "pico", "emacs", "ed", "ex", "joe", "mg",
        # interpreters and shells
        "python", "perl", "ruby", "node", "nodejs", "lua", "php", "tclsh", "wish", "expect", "irb",
        "sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox", "su", "sudo", "sudoedit",
        # programs that run other programs
        "env", "find", "xargs", "awk", "gawk", "mawk", "nawk", "sed", "tar", "zip", "rsync", "ssh", "scp",
        "script", "nice", "ionice", "timeout", "stdbuf", "taskset", "chroot", "nsenter", "unshare", "setsid",
        "strace", "ltrace", "gdb", "watch", "flock", "docker", "podman", "crontab", "at", "make",
        "apt", "apt-get", "dpkg", "yum", "dnf", "rpm", "pip", "pip3", "mount", "tee", "cp", "mv", "dd",
        "install", "chmod", "chown", "ln", "openssl", "visudo")},
    # page through less and act on the system or its journal
    "journalctl": (SHELL, AUDIT),
    "systemctl": (SHELL, AUDIT),
    "rm": (AUDIT,),
    "truncate": (AUDIT,),
    "shred": (AUDIT,),
    "logrotate": (SHELL, AUDIT),
}
_VERSION = re.compile(r"[0-9][0-9.]*\Z")


class SudoRule(Protocol):
    """What this module reads of a sudo rule (core.sudoers.Rule)."""

    @property
    def commands(self) -> tuple[str, ...]: ...

    @property
    def noexec(self) -> bool: ...

    @property
    def key(self) -> str: ...


def command_name(command: str) -> str:
    """`python3` for `/usr/bin/python3.11 -c x`."""
    path = command.split(None, 1)[0] if command.strip() else ""
    name = path.rsplit("/", 1)[-1]
    return _VERSION.sub("", name) if name not in RISKY else name


def free_arguments(command: str) -> bool:
    """Whether sudo lets the caller add arguments: the command is given without any (`""` means none)."""
    return len(command.split(None, 1)) == 1


def risks(rule: SudoRule) -> list[str]:
    """The warnings about one rule: each risky command it grants with free arguments, what it can
    do, and what would stop it."""
    out: list[str] = []
    for command in rule.commands:
        if command == "ALL" or not free_arguments(command):
            continue
        kinds = RISKY.get(command_name(command), ())
        what = [k for k in kinds if k == AUDIT or not rule.noexec]
        if not what:
            continue
        fix = "give it fixed arguments" + ("" if AUDIT in what or rule.noexec else " or set noexec: true")
        out.append(f"{rule.key}: {command} with any arguments {' and '.join(what)} "
                   f"(e.g. {_example(command_name(command), what)}); {fix}")
    return out


def _example(name: str, what: list[str]) -> str:
    if AUDIT in what and name == "journalctl":
        return "journalctl --vacuum-time=1s deletes the session records"
    if AUDIT in what and SHELL not in what:
        return f"{name} /var/log/journal/..."
    return {"find": "find / -exec /bin/sh \\;", "awk": "awk 'BEGIN{system(\"/bin/sh\")}'",
            "env": "env /bin/sh", "less": "!sh at the prompt"}.get(name, "a shell escape")


def all_risks(rules: Iterable[SudoRule]) -> list[str]:
    return [warning for rule in rules for warning in risks(rule)]
