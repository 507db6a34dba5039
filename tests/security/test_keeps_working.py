"""Every sync that meets none of the attacks works as before: a normal person, a normal organization
whose members come and go, a person who leaves and comes back, and names that only resemble the
reserved ones. These pass today and must keep passing once the attacks are blocked."""

from __future__ import annotations

import os
import stat

import pytest

from tests.security.common import (as_account, configure, derived_uid, groups_of, need_sudo, plan, publish,
                                   sudo_listing, sync, uid_of, user)

pytestmark = pytest.mark.host

SHARED = "${path:enterprise.organization}"
OPS = {"identity_store_group": "Ops", "commands": ["/usr/bin/journalctl"], "nopasswd": True}


def test_a_normal_person(isolated_host):
    need_sudo()
    host = isolated_host
    host.run(["groupadd", "deploy"])
    cfg = configure(host, [user("id-alice", "alice.smith"), user("id-bob", "bob")], "${path:userName}",
                    directory_groups={"Ops": ["id-alice"]}, sudo={"rules": [OPS]},
                    groups=[{"identity_store_group": "Ops", "local_groups": ["deploy"]}])
    result = sync(host, cfg)
    assert result.returncode == 0, result.stdout
    uid = uid_of(host, "alice.smith")
    assert uid == derived_uid("id-alice")
    home = host.home / "alice.smith"
    assert os.stat(home).st_uid == uid and (home / ".bashrc").exists()
    assert "deploy" in groups_of(host, "alice.smith") and "deploy" not in groups_of(host, "bob")
    assert "journalctl" in sudo_listing(host, "alice.smith") and "journalctl" not in sudo_listing(host, "bob")
    assert as_account(host, "alice.smith", ["sh", "-c", "echo mine > ~/file && cat ~/file"]).stdout == "mine\n"
    assert "no changes" in plan(host, cfg).stdout


def test_a_normal_organization_keeps_its_account_as_members_come_and_go(isolated_host):
    """A shared account is the organization's, not a person's: it keeps its UID and home while its
    members change, is parked when the last one leaves, and comes back for a new member."""
    host = isolated_host
    alice, bob, carol = (user("id-alice", "alice", "acme"), user("id-bob", "bob", "acme"),
                         user("id-carol", "carol", "acme"))
    other = user("id-dave", "dave", "initech")
    cfg = configure(host, [alice, bob, other], SHARED)
    sync(host, cfg)
    uid = uid_of(host, "acme")
    as_account(host, "acme", ["sh", "-c", "echo shared > ~/runbook.txt"], check=True)

    publish(host, [bob, other])
    sync(host, cfg)
    assert uid_of(host, "acme") == uid

    publish(host, [other])
    sync(host, cfg)
    assert uid_of(host, "acme") is None

    publish(host, [carol, other])
    result = sync(host, cfg)
    assert "~ enable acme" in result.stdout
    assert uid_of(host, "acme") == uid
    assert (host.home / "acme" / "runbook.txt").read_text() == "shared\n"
    assert uid_of(host, "initech") is not None


def test_a_returning_person_keeps_uid_and_home(isolated_host):
    host = isolated_host
    erin, frank = user("id-erin", "erin"), user("id-frank", "frank")
    cfg = configure(host, [erin, frank], "${path:userName}")
    sync(host, cfg)
    uid = uid_of(host, "erin")
    as_account(host, "erin", ["sh", "-c", "echo kept > ~/notes.txt"], check=True)
    mode = stat.S_IMODE(os.stat(host.home / "erin").st_mode)

    publish(host, [user("id-erin", "erin", status="DISABLED"), frank])
    sync(host, cfg)
    assert uid_of(host, "erin") is None

    publish(host, [erin, frank])
    sync(host, cfg)
    assert uid_of(host, "erin") == uid
    assert (host.home / "erin" / "notes.txt").read_text() == "kept\n"
    assert os.stat(host.home / "erin").st_uid == uid and stat.S_IMODE(os.stat(host.home / "erin").st_mode) == mode
    assert as_account(host, "erin", ["cat", "/home/erin/notes.txt"]).stdout == "kept\n"


def test_names_that_only_resemble_reserved_ones_still_sync(isolated_host):
    host = isolated_host
    names = ["docker-team", "postgresql-dba", "ubuntu.fans", "system.d", "ec2-ops", "admins"]
    result = sync(host, configure(host, [user(f"id-{i}", f"person{i}", org) for i, org in enumerate(names)], SHARED))
    assert result.returncode == 0, result.stdout
    assert {name: uid_of(host, name) is not None for name in names} == dict.fromkeys(names, True)
