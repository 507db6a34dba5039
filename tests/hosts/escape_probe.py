"""Run inside runas-agent.service's sandbox (as an ExecStartPost= of the unit, so with the service's
mount namespace, capabilities, system call filter and IP firewall): try what a compromised agent
would do to become root for good, and what the agent itself must still be able to do. Writes a JSON
report: {"checks": {check: {"ok": bool, "detail": str}}, "network": {address: result}}, where ok
means "as the sandbox must have it".

    python3 escape_probe.py REPORT.json

Standard library only (it runs with the container's python3). Every write it attempts is undone if
it unexpectedly succeeds, so the report, not the host, tells what happened. "network" gives, per
address, "sent" or the errno of a UDP datagram (the IP firewall answers EPERM)."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys

MARK = "runas-agent-escape-probe"
#: Directories under which a new file would run as root or grant root.
DIRS = ("/etc/systemd/system", "/etc/cron.d", "/etc/pam.d", "/etc/security", "/etc/profile.d", "/etc/udev/rules.d", "/etc/sysctl.d", "/etc/modprobe.d", "/etc/apt/apt.conf.d",
        "/etc/ld.so.conf.d", "/etc/tmpfiles.d", "/etc/logrotate.d", "/etc/default", "/etc/runas-agent",
        "/etc/alternatives", "/etc/init.d", "/root", "/usr/local/bin", "/var/spool/cron", "/home/admin")
#: Existing files whose content grants root.
FILES = ("/etc/sudoers", "/etc/crontab", "/etc/environment", "/etc/profile", "/etc/bash.bashrc", "/etc/login.defs",
         "/etc/nsswitch.conf", "/etc/ld.so.cache", "/etc/sudo.conf", "/etc/runas-agent/config.yaml")
#: Names that did not exist before the service started.
PLACEHOLDERS = ("/etc/ld.so.preload", "/etc/rc.local")
HIDDEN = ("/etc/ssh",)


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno, str(exc.errno))


def create_in(directory: str) -> dict:
    path = os.path.join(directory, MARK)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        return {"ok": exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT), "detail": _errno_name(exc)}
    os.close(fd)
    os.unlink(path)
    return {"ok": False, "detail": f"created {path}"}


def append_to(path: str) -> dict:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        return {"ok": exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM), "detail": _errno_name(exc)}
    os.close(fd)   # opened for writing: nothing written, but it could have been
    return {"ok": False, "detail": f"opened {path} for writing"}


def replace(path: str) -> dict:
    """What shadow-utils does to the account databases: a new file next to it, renamed over it."""
    tmp = f"{path}.{MARK}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
    except OSError as exc:
        return {"ok": True, "detail": f"cannot create next to it: {_errno_name(exc)}"}
    try:
        os.rename(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        return {"ok": exc.errno in (errno.EBUSY, errno.EROFS, errno.EXDEV), "detail": _errno_name(exc)}
    return {"ok": False, "detail": f"replaced {path}"}


def placeholder(path: str) -> dict:
    """A name that did not exist: nothing can be put there, by rename or by removing what is there."""
    results = [replace(path)]
    try:
        os.unlink(path)
        results.append({"ok": False, "detail": f"removed {path}"})
    except OSError as exc:
        results.append({"ok": exc.errno in (errno.EBUSY, errno.EROFS, errno.EPERM), "detail": _errno_name(exc)})
    try:
        os.chmod(path, 0o755)
        results.append({"ok": False, "detail": f"chmod {path}"})
    except OSError as exc:
        results.append({"ok": exc.errno in (errno.EROFS, errno.EPERM), "detail": _errno_name(exc)})
    return {"ok": all(r["ok"] for r in results), "detail": "; ".join(r["detail"] for r in results)}


def hidden(path: str) -> dict:
    try:
        entries = os.listdir(path)
    except OSError as exc:
        return {"ok": True, "detail": _errno_name(exc)}
    return {"ok": entries == [], "detail": f"lists {entries}"}


def allowed_write(directory: str) -> dict:
    """What the agent itself needs: a new file (then removed) in /etc itself, sudoers.d and /home."""
    path = os.path.join(directory, f".{MARK}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return {"ok": False, "detail": _errno_name(exc)}
    os.close(fd)
    os.unlink(path)
    return {"ok": True, "detail": "created and removed"}


def send(address: str, family: int) -> str:
    """'sent', or the errno of a UDP datagram to `address` (the IP firewall answers EPERM)."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"probe", (address, 9))
        except OSError as exc:
            return _errno_name(exc)
    return "sent"


def network() -> dict:
    """address -> 'sent' or the errno: link-local (metadata, DNS, ECS credentials), private, this host."""
    return {address: send(address, socket.AF_INET)
            for address in ("169.254.169.254", "169.254.169.253", "169.254.170.2", "127.0.0.1", "10.0.0.2", "10.0.0.3")}


def main() -> int:
    report: dict[str, dict] = {}
    for directory in DIRS:
        report[f"create in {directory}"] = create_in(directory)
    for path in FILES:
        if os.path.exists(path):
            report[f"write {path}"] = append_to(path)
            report[f"replace {path}"] = replace(path)
    for path in PLACEHOLDERS:
        report[f"put {path}"] = placeholder(path)
    for path in HIDDEN:
        report[f"read {path}"] = hidden(path)
    for directory in ("/etc", "/etc/sudoers.d", "/home"):
        report[f"agent writes in {directory}"] = allowed_write(directory)
    with open(sys.argv[1], "w") as out:
        json.dump({"checks": report, "network": network()}, out, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
