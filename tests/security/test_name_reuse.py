"""Attack 3: a per-person name changing hands.

Person A (UserName jsmith) leaves; later person B is given the UserName jsmith. B must get an
account of B's own: B's UID, an empty home at /home/jsmith (the SSM agent sets HOME=/home/<name>
whatever passwd says), none of A's groups or sudo rights; A's files stay A's, kept where they are
with A's parked account. The plan says in words that the name changed hands."""

from __future__ import annotations

import os
import stat

import pytest

from tests.security.common import (as_account, configure, derived_uid, getent, groups_of, need_sudo, plan, publish,
                                   sudo_listing, sync, uid_of, user)

pytestmark = pytest.mark.host

PERSON = "${path:userName}"
A = user("id-a-0001", "jsmith")
B = user("id-b-0002", "jsmith")
BYSTANDER = user("id-c-0003", "carol")
OPS = {"identity_store_group": "Ops", "commands": ["/usr/bin/journalctl"], "nopasswd": True}


def a_leaves_and_b_arrives(host, **sections):
    host.run(["groupadd", "deploy"])
    cfg = configure(host, [A, BYSTANDER], PERSON, directory_groups={"Ops": [A["UserId"]]}, sudo={"rules": [OPS]},
                    groups=[{"identity_store_group": "Ops", "local_groups": ["deploy"]}], **sections)
    sync(host, cfg)
    a_uid = uid_of(host, "jsmith")
    assert a_uid == derived_uid(A["UserId"])
    as_account(host, "jsmith", ["sh", "-c", "mkdir -p ~/.aws && umask 077 && echo A-secret > ~/.aws/credentials "
                                            "&& echo A-history > ~/.bash_history"], check=True)
    host.run(["gpasswd", "-a", "jsmith", "adm"])       # an admin's own grant, for A
    publish(host, [BYSTANDER], {"Ops": []})
    sync(host, cfg)
    assert uid_of(host, "jsmith") is None
    publish(host, [BYSTANDER, B], {"Ops": []})
    return cfg, a_uid


def assert_leavers_files_kept_and_closed(host, a_uid: int) -> None:
    """A's parked account still holds A's home and files, aside from /home/jsmith, and the new
    jsmith can read none of them."""
    parked = getent(host, "passwd", str(a_uid))
    assert parked is not None and parked[0] != "jsmith" and parked[5] != "/home/jsmith", parked
    aside = host.home / os.path.relpath(parked[5], "/home")
    assert (os.stat(aside).st_uid, stat.S_IMODE(os.stat(aside).st_mode)) == (a_uid, 0o700)
    assert as_account(host, "jsmith", ["ls", parked[5]]).returncode != 0
    for name, content in ((".aws/credentials", "A-secret\n"), (".bash_history", "A-history\n")):
        path = f"{parked[5]}/{name}"
        kept = host.home / os.path.relpath(path, "/home")
        assert (kept.read_text(), os.stat(kept).st_uid) == (content, a_uid)
        assert as_account(host, "jsmith", ["cat", path]).returncode != 0, path


def test_a_new_person_with_a_leavers_user_name_gets_nothing_of_the_leavers(isolated_host):
    need_sudo()
    host = isolated_host
    cfg, a_uid = a_leaves_and_b_arrives(host)
    shown = plan(host, cfg)
    sync(host, cfg)

    b_uid = uid_of(host, "jsmith")
    assert b_uid == derived_uid(B["UserId"]) and b_uid != a_uid
    assert "adm" not in groups_of(host, "jsmith") and "deploy" not in groups_of(host, "jsmith")
    assert "journalctl" not in sudo_listing(host, "jsmith")
    home = host.home / "jsmith"
    assert os.stat(home).st_uid == b_uid
    assert not (home / ".aws" / "credentials").exists() and not (home / ".bash_history").exists()
    assert_leavers_files_kept_and_closed(host, a_uid)
    assert any("jsmith" in line and "changed hands" in line for line in shown.stdout.splitlines()), shown.stdout


def test_a_rule_written_by_hand_for_the_leaver_never_reaches_the_new_person(isolated_host):
    """An admin's drop-in for A by name is still there when B arrives: whatever the agent does with B,
    B cannot use it."""
    need_sudo()
    host = isolated_host
    rule = host.etc / "sudoers.d" / "jsmith-tools"
    cfg, a_uid = a_leaves_and_b_arrives(host)
    rule.write_text("jsmith ALL=(root) NOPASSWD: /usr/bin/tcpdump\n")
    rule.chmod(0o440)
    sync(host, cfg)
    assert uid_of(host, "jsmith") != a_uid
    assert "tcpdump" not in sudo_listing(host, "jsmith")
