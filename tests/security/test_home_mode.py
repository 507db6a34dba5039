"""Attack 6: homes readable by everyone.

Debian's `useradd -m` and `newusers` make 0755 homes (login.defs has no HOME_MODE, UMASK 022), so
vendors sharing one instance read each other's files. Every home the agent creates is 0700: another
local account cannot list it or read a file in it."""

from __future__ import annotations

import os
import stat

import pytest

from tests.security.common import as_account, configure, sync, uid_of, user

pytestmark = pytest.mark.host


def assert_private(host, name: str, intruder: str) -> None:
    home = host.home / name
    st = os.stat(home)
    assert st.st_uid == uid_of(host, name)
    assert stat.S_IMODE(st.st_mode) == 0o700, f"/home/{name} is {oct(stat.S_IMODE(st.st_mode))}"
    assert as_account(host, intruder, ["ls", f"/home/{name}"]).returncode != 0
    assert as_account(host, intruder, ["cat", f"/home/{name}/.profile"]).returncode != 0


def test_homes_of_people_and_organizations_are_0700(isolated_host):
    host = isolated_host
    host.run(["useradd", "-m", "intruder"])
    people = [user("id-a", "alice", "acme"), user("id-b", "bob", "acme"), user("id-c", "carol", "initech")]
    sync(host, configure(host, people, "${path:enterprise.organization}"))
    for name in ("acme", "initech"):
        assert_private(host, name, "intruder")
    assert_private(host, "initech", "acme")        # one vendor cannot read another's home


def test_homes_created_in_one_batch_are_0700(isolated_host):
    host = isolated_host
    host.run(["useradd", "-m", "intruder"])
    people = [user(f"id-{i}", f"person{i}") for i in range(24)]
    sync(host, configure(host, people, "${path:userName}"))
    for i in (0, 11, 23):
        assert_private(host, f"person{i}", "intruder")
