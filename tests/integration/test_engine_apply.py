"""The engine-backed account applier (host/engine.py) against a scratch directory standing in for
/etc and a scratch home base: the plan's actions become one write of each database, per-action
outcomes, failures isolated, and a commit that fails leaves its creates in doubt (the ledger keeps
them). The whole sync through it, in isolated hosts: test_sync_host.py and the others."""

from __future__ import annotations

import os
import stat

import pytest

from runas_agent.core import naming
from runas_agent.core.plan import (CreateAccount, DisableAccount, EnableAccount, EndProcesses, RenameAccount,
                                   SetGroupMembers, SetHomeAside, UpdateAccount)
from runas_agent.host.engine import EngineApplier
from tests.hosts.engine import scratch_etc

pytestmark = pytest.mark.host
UID = 1_500_000_000


@pytest.fixture
def etc(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (files owned by root:shadow, homes chowned)")
    path = scratch_etc(tmp_path)
    with open(path / "group", "a") as handle:
        handle.write("deploy:x:4242:\n")
    with open(path / "gshadow", "a") as handle:
        handle.write("deploy:!::\n")
    return path


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "home"
    path.mkdir(mode=0o755)
    return path


@pytest.fixture
def skel(tmp_path):
    path = tmp_path / "skel"
    (path / ".config").mkdir(parents=True)
    (path / ".profile").write_text("# profile\n")
    (path / ".config" / "app.conf").write_text("x=1\n")
    return path


def applier(etc, skel, end_processes=lambda uid: []):
    return EngineApplier(skel=str(skel), etc=str(etc), rules=naming.DEBIAN, run=lambda *a, **k: None,
                         end_processes=end_processes)


def create(base, name, uid):
    return CreateAccount(name, uid, uid, f"{base}/{name}", "/bin/bash", f"runas-agent {name}", "person", (name,))


def entries(etc, kind):
    return {line.split(":")[0]: line.split(":") for line in (etc / kind).read_text().splitlines() if line}


def test_creates_memberships_park_and_unpark_in_one_write(etc, base, skel):
    first = applier(etc, skel).apply([create(base, "ann", UID), create(base, "bob", UID + 1),
                                      SetGroupMembers("deploy", ("ann", "bob"), ())])
    assert not first.failed and len(first.done) == 3
    passwd, group = entries(etc, "passwd"), entries(etc, "group")
    assert passwd["ann"][2:4] == [str(UID), str(UID)] and group["ann"][2] == str(UID)
    assert group["deploy"][3] == "ann,bob" and entries(etc, "gshadow")["deploy"][3] == "ann,bob"
    assert entries(etc, "shadow")["ann"][1] == "!"
    home = base / "ann"
    st = os.stat(home)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (UID, 0o700)
    assert (home / ".profile").read_text() == "# profile\n" and os.stat(home / ".config" / "app.conf").st_uid == UID

    parked = f"runas-off-{UID + 1}"
    second = applier(etc, skel).apply([SetGroupMembers("deploy", (), ("bob",)),
                                       DisableAccount("bob", UID + 1, parked, "gone"),
                                       UpdateAccount("ann", {"comment": ["runas-agent ann", "runas-agent Ann A."]})])
    assert not second.failed
    passwd, shadow = entries(etc, "passwd"), entries(etc, "shadow")
    assert "bob" not in passwd and passwd[parked][2] == str(UID + 1) and passwd[parked][6].endswith("nologin")
    assert shadow[parked][1].startswith("!") and shadow[parked][7] == "1"
    assert entries(etc, "group")[parked][2] == str(UID + 1) and entries(etc, "group")["deploy"][3] == "ann"
    assert passwd["ann"][4] == "runas-agent Ann A."

    third = applier(etc, skel).apply([EnableAccount("bob", UID + 1, parked, "/bin/bash", "runas-agent bob")])
    assert not third.failed
    passwd = entries(etc, "passwd")
    assert passwd["bob"][2] == str(UID + 1) and passwd["bob"][6] == "/bin/bash"
    assert entries(etc, "group")["bob"][2] == str(UID + 1) and entries(etc, "shadow")["bob"][7] == ""
    assert applier(etc, skel).apply([]).done == []


def test_a_home_owned_by_someone_else_fails_that_create_alone(etc, base, skel):
    (base / "eve").mkdir()
    os.chown(base / "eve", 4321, 4321)
    (base / "eve" / ".bashrc").write_text("# eve's own\n")
    before = (etc / "passwd").read_bytes()
    outcome = applier(etc, skel).apply([create(base, "eve", UID), create(base, "ann", UID + 1),
                                        SetGroupMembers("deploy", ("ann", "eve"), ())])
    assert [a.account for a, _ in outcome.failed] == ["eve"]
    assert "owned by uid 4321" in outcome.failed[0][1]
    assert sorted(a.account for a in outcome.done) == ["ann", "deploy"]
    passwd = entries(etc, "passwd")
    assert "eve" not in passwd and "eve" not in entries(etc, "group") and passwd["ann"][2] == str(UID + 1)
    assert entries(etc, "group")["deploy"][3] == "ann"
    assert (base / "eve" / ".bashrc").read_text() == "# eve's own\n" and os.stat(base / "eve").st_uid == 4321
    assert outcome.in_doubt == [] and (etc / "passwd").read_bytes() != before


def test_a_refused_edit_fails_its_action_and_the_others_are_written(etc, base, skel):
    outcome = applier(etc, skel).apply([EnableAccount("zed", UID + 9, f"runas-off-{UID + 9}", "/bin/bash", "c"),
                                        create(base, "bad:name", UID + 2), create(base, "ann", UID)])
    assert sorted(a.account for a, _ in outcome.failed) == ["bad:name", "zed"]
    assert [a.account for a in outcome.done] == ["ann"]
    assert "ann" in entries(etc, "passwd") and not (base / "bad:name").exists()


def test_a_commit_that_fails_leaves_its_creates_in_doubt(etc, base, skel):
    (etc / "passwd.lock").write_text(f"{os.getpid()}\0")  # held by a live process: the commit gives up
    actions = [create(base, "ann", UID), SetGroupMembers("deploy", ("ann",), ())]
    outcome = applier(etc, skel).apply(actions)
    assert not outcome.done and [a for a, _ in outcome.failed] == actions
    assert "were not written" in outcome.failed[0][1]
    assert outcome.in_doubt == actions[:1] and outcome.undone() == actions[1:]
    assert "ann" not in entries(etc, "passwd")


def test_a_second_run_of_the_same_creates_finishes_instead_of_failing(etc, base, skel):
    """The group of a create was written, its user was not (a sync killed mid-commit): the same
    create adopts the orphan group with its GID."""
    with open(etc / "group", "a") as handle:
        handle.write(f"ann:x:{UID}:\n")
    outcome = applier(etc, skel).apply([create(base, "ann", UID)])
    assert not outcome.failed
    assert entries(etc, "passwd")["ann"][3] == str(UID)
    assert [line for line in (etc / "group").read_text().splitlines() if line.startswith("ann:")] == [f"ann:x:{UID}:"]


def test_a_rename_moves_account_group_memberships_and_home(etc, base, skel):
    assert not applier(etc, skel).apply([create(base, "bob", UID), SetGroupMembers("deploy", ("bob",), ())]).failed
    (base / "bob" / "work.txt").write_text("precious\n")
    rename = RenameAccount("robert", "bob", "bob", UID, f"{base}/robert", f"{base}/bob", "/bin/bash", "runas-agent robert")
    outcome = applier(etc, skel).apply([rename])
    assert not outcome.failed and outcome.done == [rename]
    passwd, group = entries(etc, "passwd"), entries(etc, "group")
    assert "bob" not in passwd and passwd["robert"][2:7] == [str(UID), str(UID), "runas-agent robert",
                                                              f"{base}/robert", "/bin/bash"]
    assert group["robert"][2] == str(UID) and group["deploy"][3] == "robert" and "robert" in entries(etc, "shadow")
    assert (base / "robert" / "work.txt").read_text() == "precious\n" and not (base / "bob").exists()


def test_a_parked_account_renamed_back_into_use_is_unlocked(etc, base, skel):
    assert not applier(etc, skel).apply([create(base, "bob", UID)]).failed
    parked = f"runas-off-{UID}"
    assert not applier(etc, skel).apply([DisableAccount("bob", UID, parked, "gone")]).failed
    rename = RenameAccount("robert", parked, parked, UID, f"{base}/robert", f"{base}/bob", "/bin/bash", "c", enable=True)
    assert not applier(etc, skel).apply([rename]).failed
    passwd, shadow = entries(etc, "passwd"), entries(etc, "shadow")
    assert parked not in passwd and passwd["robert"][5:7] == [f"{base}/robert", "/bin/bash"]
    assert not shadow["robert"][1].startswith("!!") and shadow["robert"][7] == "" and os.path.isdir(base / "robert")


def test_a_rename_onto_an_existing_directory_changes_nothing(etc, base, skel):
    assert not applier(etc, skel).apply([create(base, "bob", UID)]).failed
    (base / "robert").mkdir()
    before = (etc / "passwd").read_bytes()
    rename = RenameAccount("robert", "bob", "bob", UID, f"{base}/robert", f"{base}/bob", "/bin/bash", "c")
    outcome = applier(etc, skel).apply([rename])
    assert [a for a, _ in outcome.failed] == [rename] and "exists already" in outcome.failed[0][1]
    assert (etc / "passwd").read_bytes() == before and os.path.isdir(base / "bob")


def _hand_over(etc, base, skel):
    """jsmith (UID) parked, its home still /home/jsmith; the set-aside and the newcomer's create."""
    assert not applier(etc, skel).apply([create(base, "jsmith", UID)]).failed
    (base / "jsmith" / ".bash_history").write_text("secret\n")
    os.chmod(base / "jsmith", 0o755)
    parked = f"runas-off-{UID}"
    assert not applier(etc, skel).apply([DisableAccount("jsmith", UID, parked, "gone")]).failed
    aside = SetHomeAside("jsmith", parked, UID, f"{base}/jsmith", f"{base}/{parked}")
    return parked, aside, create(base, "jsmith", UID + 1)


def test_a_set_aside_comes_before_the_create_of_the_name(etc, base, skel):
    parked, aside, newcomer = _hand_over(etc, base, skel)
    outcome = applier(etc, skel).apply([newcomer, aside])  # the set-aside goes first whatever the order
    assert not outcome.failed
    passwd = entries(etc, "passwd")
    assert passwd[parked][5] == f"{base}/{parked}" and passwd["jsmith"][2] == str(UID + 1)
    st = os.stat(base / parked)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (UID, 0o700)
    assert (base / parked / ".bash_history").read_text() == "secret\n"
    assert os.stat(base / "jsmith").st_uid == UID + 1 and not (base / "jsmith" / ".bash_history").exists()


def test_a_failed_set_aside_blocks_the_create_of_that_name(etc, base, skel):
    parked, aside, newcomer = _hand_over(etc, base, skel)
    (base / parked).mkdir()  # something is where the home would go: it is never overwritten
    outcome = applier(etc, skel).apply([aside, newcomer, create(base, "ann", UID + 2)])
    assert [a for a, _ in outcome.failed] == [aside, newcomer]
    assert "not created" in outcome.failed[1][1] and [a.account for a in outcome.done] == ["ann"]
    passwd = entries(etc, "passwd")
    assert passwd[parked][5] == f"{base}/jsmith" and "jsmith" not in passwd
    assert (base / "jsmith" / ".bash_history").read_text() == "secret\n" and os.stat(base / "jsmith").st_uid == UID


def test_processes_end_before_the_park_and_survivors_are_reported(etc, base, skel):
    assert not applier(etc, skel).apply([create(base, "bob", UID)]).failed
    ended = []

    def end(uid):
        ended.append((uid, "bob" in entries(etc, "passwd")))  # the account still resolves meanwhile
        return [4242]

    end_first = EndProcesses("bob", UID, "bob left")
    outcome = applier(etc, skel, end).apply([end_first, DisableAccount("bob", UID, f"runas-off-{UID}", "gone")])
    assert ended == [(UID, True)]
    assert [a for a, _ in outcome.failed] == [end_first] and "4242" in outcome.failed[0][1]
    assert "bob" not in entries(etc, "passwd") and f"runas-off-{UID}" in entries(etc, "passwd")


def test_a_rename_whose_home_an_earlier_sync_moved_is_finished(etc, base, skel):
    """A sync moved bob's home and stopped before its commit: the same rename again writes it."""
    assert not applier(etc, skel).apply([create(base, "bob", UID)]).failed
    os.rename(base / "bob", base / "robert")
    rename = RenameAccount("robert", "bob", "bob", UID, f"{base}/robert", f"{base}/bob", "/bin/bash", "c")
    outcome = applier(etc, skel).apply([rename])
    assert not outcome.failed and entries(etc, "passwd")["robert"][5] == f"{base}/robert"
