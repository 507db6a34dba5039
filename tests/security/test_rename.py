"""Attack 4: an ordinary IdP rename splits the fleet.

Same UserId, new UserName (bob -> robert). The account must be renamed, not parked and replaced:
the same UID and GID on every host (a host that never saw bob derives robert's UID from the UserId
and must agree, or EFS/NFS ownership breaks), the home moved to /home/robert with the files in it,
and the group, sudo rights and agent-added memberships following. The plan says `rename bob -> robert`."""

from __future__ import annotations

import os

import pytest

from tests.hosts.namespace import IsolatedHost
from tests.security.common import (as_account, configure, derived_uid, getent, groups_of, need_sudo, plan, publish,
                                   sudo_listing, sync, uid_of, user)

pytestmark = pytest.mark.host

PERSON = "${path:userName}"
OPS = {"identity_store_group": "Ops", "commands": ["/usr/bin/journalctl"], "nopasswd": True}


def setup(host, name):
    people = [user("id-bob-7", name), user("id-carol-8", "carol")]
    return configure(host, people, PERSON, directory_groups={"Ops": ["id-bob-7"]}, sudo={"rules": [OPS]},
                     groups=[{"identity_store_group": "Ops", "local_groups": ["deploy"]}])


def test_a_renamed_person_keeps_uid_files_group_and_rights(isolated_host):
    need_sudo()
    host = isolated_host
    host.run(["groupadd", "deploy"])
    cfg = setup(host, "bob")
    sync(host, cfg)
    uid = uid_of(host, "bob")
    assert uid == derived_uid("id-bob-7")
    as_account(host, "bob", ["sh", "-c", "echo precious > ~/work.txt"], check=True)

    publish(host, [user("id-bob-7", "robert"), user("id-carol-8", "carol")], {"Ops": ["id-bob-7"]})
    shown = plan(host, cfg)
    sync(host, cfg)

    assert_renamed(host, uid)
    assert_rights_followed(host)
    assert "rename bob -> robert" in shown.stdout, shown.stdout
    assert fresh_host_uid(host, "robert") == uid    # a host that never saw bob agrees


def assert_renamed(host, uid: int) -> None:
    """robert is bob's account: UID, group, home and files; bob is gone."""
    assert (uid_of(host, "robert"), uid_of(host, "bob")) == (uid, None)
    assert (getent(host, "group", "robert")[2], getent(host, "group", "bob")) == (str(uid), None)
    assert getent(host, "passwd", "robert")[5] == "/home/robert"
    work = host.home / "robert" / "work.txt"
    assert (work.read_text(), os.stat(work).st_uid) == ("precious\n", uid)
    assert not (host.home / "bob").exists()


def assert_rights_followed(host) -> None:
    """The memberships the agent added and the sudo rights went with the name; nothing names bob."""
    assert "deploy" in groups_of(host, "robert")
    assert "journalctl" in sudo_listing(host, "robert")
    left = [p.name for p in (host.etc / "sudoers.d").iterdir() if grants(p.read_text(), "bob")]
    assert left == [], f"drop-ins still granting bob: {left}"


def grants(content: str, name: str) -> bool:
    return any(line.split()[:1] == [name] for line in content.splitlines())


def fresh_host_uid(host, name: str) -> int | None:
    """The UID a host that never had bob gives the person now called `name`."""
    other = IsolatedHost(host.root.parent / "other")
    try:
        other.run(["groupadd", "deploy"])
        sync(other, setup(other, name))
        return uid_of(other, name)
    finally:
        other.destroy()


def test_a_person_renamed_while_parked_comes_back_with_their_account(isolated_host):
    """bob is disabled, then comes back renamed robert: the parked account is renamed and enabled,
    with bob's UID and files, at /home/robert."""
    host = isolated_host
    host.run(["groupadd", "deploy"])
    cfg = setup(host, "bob")
    sync(host, cfg)
    uid = uid_of(host, "bob")
    as_account(host, "bob", ["sh", "-c", "echo precious > ~/work.txt"], check=True)
    publish(host, [user("id-bob-7", "bob", status="DISABLED"), user("id-carol-8", "carol")], {"Ops": ["id-bob-7"]})
    sync(host, cfg)
    assert uid_of(host, "bob") is None
    publish(host, [user("id-bob-7", "robert"), user("id-carol-8", "carol")], {"Ops": ["id-bob-7"]})
    result = sync(host, cfg)
    assert "rename runas-off-" in result.stdout and "-> robert" in result.stdout, result.stdout
    assert_renamed(host, uid)
    assert "deploy" in groups_of(host, "robert")
