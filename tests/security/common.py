"""What the attack tests share: directory documents, a configured isolated host, and questions put
to the host's own tools (`id`, `getent`, `sudo -l -U`, `setpriv`), never to the agent's files."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterable, Mapping, Sequence

import psutil
import pytest

from runas_agent.core import uids

STORE = "d-1234567890"
UID_MIN, UID_MAX = 1_000_000_000, 1_799_999_999


def user(user_id: str, name: str, org: str | None = None, status: str = "ENABLED") -> dict:
    record = {"IdentityStoreId": STORE, "UserId": user_id, "UserName": name, "UserStatus": status,
              "DisplayName": name.split("@")[0].title()}
    if org is not None:
        record["Extensions"] = {"aws:identitystore:enterprise": {"organization": org}}
    return record


def directory(users: Iterable[dict], groups: Mapping[str, Sequence[str]] | None = None) -> dict:
    """groups: DisplayName -> member UserIds."""
    groups = groups or {}
    return {"IdentityStoreId": STORE, "Users": list(users),
            "Groups": [{"IdentityStoreId": STORE, "GroupId": f"g-{name.lower()}", "DisplayName": name} for name in groups],
            "GroupMemberships": [{"IdentityStoreId": STORE, "GroupId": f"g-{name.lower()}", "MemberId": {"UserId": uid}}
                                 for name, members in groups.items() for uid in members]}


def configure(host, users, expression: str = "${path:userName}", directory_groups=None, **sections):
    """Write the directory document and a config reading it (`sections`: further config sections);
    returns the config's path. directory_groups: Identity Store group DisplayName -> member UserIds."""
    path = host.write_directory(directory(users, directory_groups))
    return host.write_config({"source": {"type": "file", "path": str(path)},
                              "run_as": {"expression": expression}, **sections})


def publish(host, users, directory_groups=None) -> None:
    """The directory changes: the next sync reads this one."""
    host.write_directory(directory(users, directory_groups))


def sync(host, cfg, *args: str) -> subprocess.CompletedProcess:
    result = host.agent("--config", str(cfg), "--once", *args)
    assert result.returncode in (0, 3), f"sync exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def plan(host, cfg) -> subprocess.CompletedProcess:
    result = host.agent("--config", str(cfg), "plan")
    assert result.returncode in (0, 2, 3), f"plan exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def derived_uid(user_id: str) -> int:
    """The UID every host derives for a person when nothing is in its way (probe 0)."""
    return next(uids.probes(uids.person_key(user_id), UID_MIN, UID_MAX))


# --- the host's own answers ------------------------------------------------------------------

def uid_of(host, name: str) -> int | None:
    """`id -u NAME`: what the SSM agent's check resolves; None when it does not resolve."""
    result = host.run(["id", "-u", "--", name], check=False)
    return int(result.stdout) if result.returncode == 0 else None


def groups_of(host, name: str) -> set[str]:
    """`id -nG NAME`: every group a session of the account runs with."""
    result = host.run(["id", "-nG", "--", name], check=False)
    return set(result.stdout.split()) if result.returncode == 0 else set()


def gids_of(host, name: str) -> set[int]:
    result = host.run(["id", "-G", "--", name], check=False)
    return {int(g) for g in result.stdout.split()} if result.returncode == 0 else set()


def getent(host, database: str, key: str) -> list[str] | None:
    result = host.run(["getent", database, key], check=False)
    return result.stdout.strip().split(":") if result.returncode == 0 else None


def sudo_listing(host, name: str) -> str:
    """What `sudo -l -U NAME` says the account may run ("" when sudo does not know the user)."""
    result = host.run(["sudo", "-n", "-l", "-U", name], check=False)
    return result.stdout if result.returncode == 0 else ""


def as_account(host, name: str, argv: Sequence[str], check: bool = False) -> subprocess.CompletedProcess:
    """Run `argv` with the account's credentials as the host resolves them now (UID, GID and every
    group, as a Run As shell gets them), HOME=/home/NAME as the SSM agent sets it."""
    return host.run(["env", f"HOME=/home/{name}", "setpriv", "--reuid", name, "--regid", name, "--init-groups",
                     "--", *argv], check=check)


def start_as(host, uid: int, argv: Sequence[str]) -> subprocess.Popen:
    """Start a process with this UID and GID that outlives the session that started it."""
    return host.popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "setsid", "--", *argv],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def processes_of(uid: int) -> list[psutil.Process]:
    """The live processes of `uid` (a zombie runs nothing: it only waits for its parent, here often
    the test itself, to collect its exit status)."""
    out = []
    for proc in psutil.process_iter(["uids", "status"]):
        try:
            if proc.info["uids"] is not None and proc.info["uids"].real == uid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


def kill_all_of(uid: int) -> None:
    for proc in processes_of(uid):
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(processes_of(uid), timeout=5)


def need_sudo() -> None:
    if not shutil.which("sudo") or not shutil.which("visudo"):
        if os.environ.get("CI"):
            pytest.fail("these tests need sudo and visudo (apt-get install sudo)")
        pytest.skip("these tests need sudo and visudo (apt-get install sudo)")
