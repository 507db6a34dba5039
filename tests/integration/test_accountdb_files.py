"""Writing the account databases (host/accountdb.py) into a scratch directory standing in for /etc:
each changed file written once in order with its owner, mode and SELinux label, the previous
version kept, unchanged files untouched, the lckpwdf and shadow-utils locks honoured, and edits
replayed when the files changed between read and write. (The same against real shadow-utils and
NSS in isolated hosts: test_accountdb_host.py.)"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time

import pytest

from runas_agent.core import naming
from runas_agent.errors import LockBusyError
from runas_agent.host import accountdb
from tests.hosts.engine import scratch_etc

pytestmark = pytest.mark.host
LABEL = b"system_u:object_r:passwd_file_t:s0\0"
SHADOW_LABEL = b"system_u:object_r:shadow_t:s0\0"


@pytest.fixture
def etc(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (files owned by root:shadow)")
    return scratch_etc(tmp_path)


def load(etc):
    return accountdb.load(str(etc), rules=naming.DEBIAN)


def add(db, name="alice@example.com", uid=1_500_000_000):
    db.add_account(name, uid, uid, comment="runas-agent test", home=f"/home/{name}", shell="/bin/bash")


def no_caches(argv, **kwargs):
    raise AssertionError(f"no cache should be told in this test: {argv}")


def snapshot(etc):
    out = {}
    for name in sorted(os.listdir(etc)):
        st = os.lstat(etc / name)
        content = (etc / name).read_bytes() if (etc / name).is_file() else None
        out[name] = (st.st_ino, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid, content)
    return out


def test_each_changed_database_is_written_once_in_order_keeping_owner_mode_and_a_backup(etc, monkeypatch):
    monkeypatch.setattr(accountdb, "flush_caches", lambda run=None: [])
    before = snapshot(etc)
    db = load(etc)
    add(db)
    steps = []
    result = accountdb.commit(db, str(etc), step=lambda kind, step: steps.append((kind, step)))
    assert result.written == ["gshadow", "group", "shadow", "passwd"] and not result.replayed
    assert steps == [(k, s) for k in ("gshadow", "group", "shadow", "passwd") for s in ("temp", "backup", "rename", "sync")]
    for name in ("passwd", "shadow", "group", "gshadow"):
        st = os.stat(etc / name)
        assert (st.st_mode, st.st_uid, st.st_gid) == before[name][2:5], name
        backup = etc / f"{name}-"
        assert backup.read_bytes() == before[name][5]
        assert os.stat(backup).st_mtime_ns == before[name][1]
        assert (os.stat(backup).st_mode, os.stat(backup).st_uid, os.stat(backup).st_gid) == before[name][2:5]
        assert b"alice@example.com:" in (etc / name).read_bytes()
    assert sorted(os.listdir(etc)) == sorted(list(before) + ["passwd-", "shadow-", "group-", "gshadow-", ".pwd.lock"])


def test_a_database_that_did_not_change_is_not_written(etc, monkeypatch):
    monkeypatch.setattr(accountdb, "flush_caches", no_caches)
    db = load(etc)
    db.change_group_members("adm", add=[], remove=["nobody-in-particular"])
    before = snapshot(etc)
    result = accountdb.commit(db, str(etc))
    assert result.written == []
    after = snapshot(etc)
    after.pop(".pwd.lock")
    assert after == before


def test_only_the_files_an_edit_changed_are_written(etc, monkeypatch):
    monkeypatch.setattr(accountdb, "flush_caches", lambda run=None: [])
    db = load(etc)
    add(db)
    accountdb.commit(db, str(etc))
    before = snapshot(etc)
    db = load(etc)
    db.update_account(1_500_000_000, comment="runas-agent renamed person")
    assert accountdb.commit(db, str(etc)).written == ["passwd"]
    after = snapshot(etc)
    assert {n for n in before if before[n] != after.get(n)} == {"passwd", "passwd-"}


def test_the_selinux_label_of_each_replaced_file_is_kept(etc, monkeypatch):
    """On an SELinux host a file created in /etc gets etc_t, and passwd must stay passwd_file_t
    (shadow: shadow_t). The label is copied from the file replaced; this kernel runs no SELinux,
    but ext4 keeps the attribute, so what is copied can be read back."""
    monkeypatch.setattr(accountdb, "flush_caches", lambda run=None: [])
    try:
        os.setxattr(etc / "passwd", "security.selinux", LABEL)
        os.setxattr(etc / "shadow", "security.selinux", SHADOW_LABEL)
    except OSError as exc:
        pytest.skip(f"this filesystem keeps no security.selinux attribute: {exc}")
    db = load(etc)
    add(db)
    accountdb.commit(db, str(etc))
    assert os.getxattr(etc / "passwd", "security.selinux") == LABEL
    assert os.getxattr(etc / "passwd-", "security.selinux") == LABEL
    assert os.getxattr(etc / "shadow", "security.selinux") == SHADOW_LABEL
    with pytest.raises(OSError):
        os.getxattr(etc / "group", "security.selinux")  # it had none: none is invented


def test_a_leftover_temporary_file_is_replaced_never_followed(etc, tmp_path, monkeypatch):
    monkeypatch.setattr(accountdb, "flush_caches", lambda run=None: [])
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    os.symlink(target, etc / "passwd.runas-agent-new")
    os.symlink(target, etc / "passwd-.runas-agent-new")
    db = load(etc)
    add(db)
    accountdb.commit(db, str(etc))
    assert target.read_text() == "keep me\n"
    assert not os.path.lexists(etc / "passwd.runas-agent-new")
    assert b"alice@example.com" in (etc / "passwd").read_bytes()


_HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def test_a_held_pwd_lock_makes_commit_wait_then_refuse_writing_nothing(etc):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(etc / ".pwd.lock"), "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        db = load(etc)
        add(db)
        before = snapshot(etc)
        started = time.monotonic()
        with pytest.raises(LockBusyError, match=r"\.pwd\.lock is locked by another program"):
            accountdb.commit(db, str(etc), lock_timeout=0.5, run=no_caches)
        assert time.monotonic() - started >= 0.5
        assert snapshot(etc) == before
    finally:
        holder.kill()
        holder.wait()


def test_the_pwd_lock_is_waited_for_and_taken_once_free(etc, monkeypatch):
    monkeypatch.setattr(accountdb, "flush_caches", lambda run=None: [])
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(etc / ".pwd.lock"), "0.6"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        db = load(etc)
        add(db)
        started = time.monotonic()
        assert accountdb.commit(db, str(etc), lock_timeout=10).written
        assert time.monotonic() - started >= 0.3
    finally:
        holder.wait()


def test_our_lock_excludes_another_fcntl_locker_as_lckpwdf_does(etc):
    with accountdb.DatabaseLock(str(etc)):
        probe = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import fcntl, os, sys
            fd = os.open(sys.argv[1], os.O_WRONLY)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                print("free")
            except OSError:
                print("locked")
        """), str(etc / ".pwd.lock")], capture_output=True, text=True)
        assert probe.stdout.strip() == "locked"
        for name in ("passwd", "group", "gshadow", "shadow"):
            assert (etc / f"{name}.lock").read_bytes() == f"{os.getpid()}\0".encode()
            assert os.stat(etc / f"{name}.lock").st_nlink == 1
    assert not any(n.endswith(".lock") and n != ".pwd.lock" for n in os.listdir(etc))


def test_a_live_shadow_utils_lock_file_refuses_and_a_stale_one_is_replaced(etc, monkeypatch):
    monkeypatch.setattr(accountdb, "flush_caches", lambda run=None: [])
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (etc / "group.lock").write_bytes(f"{sleeper.pid}\0".encode())
        db = load(etc)
        add(db)
        with pytest.raises(LockBusyError, match=f"group.lock is held by process {sleeper.pid}"):
            with accountdb.DatabaseLock(str(etc), retries=2):
                pass
        assert not (etc / "passwd.lock").exists()  # the locks taken before are given back
    finally:
        sleeper.kill()
        sleeper.wait()
    # the process is gone: its lock file is stale
    assert accountdb.commit(db, str(etc)).written
    assert not (etc / "group.lock").exists()


def test_a_lock_file_naming_no_process_is_not_taken_over(etc):
    (etc / "shadow.lock").write_bytes(b"garbage")
    with pytest.raises(LockBusyError, match="names no process"):
        with accountdb.DatabaseLock(str(etc), retries=1):
            pass
    assert (etc / "shadow.lock").read_bytes() == b"garbage"


def test_edits_are_replayed_when_the_files_changed_after_they_were_read(etc, monkeypatch):
    monkeypatch.setattr(accountdb, "flush_caches", lambda run=None: [])
    db = load(etc)
    add(db, "alice@example.com", 1_500_000_000)
    add(db, "carol@example.com", 1_500_000_001)
    # meanwhile a package's maintainer script creates its user, with carol's UID as it happens
    with open(etc / "passwd", "ab") as handle:
        handle.write(b"pkg:x:1500000001:1500000001::/nonexistent:/usr/sbin/nologin\n")
    with open(etc / "group", "ab") as handle:
        handle.write(b"pkg:x:1500000001:\n")
    result = accountdb.commit(db, str(etc))
    assert result.replayed
    assert [(e[0], x.account, type(x).__name__) for e, x in result.refused] == [("add_account", "carol@example.com", "IdTaken")]
    passwd = (etc / "passwd").read_text()
    assert "pkg:x:1500000001:" in passwd and "alice@example.com:x:1500000000:" in passwd and "carol@example.com" not in passwd


def test_caches_are_told_when_their_programs_are_installed(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(accountdb, "SBIN", str(bin_dir))
    calls = []

    def run(argv, **kwargs):
        calls.append((argv, kwargs.get("ok")))

    assert accountdb.flush_caches(run) == [] and calls == []
    for name in ("nscd", "sss_cache"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    assert accountdb.flush_caches(run) == []
    assert calls == [(["nscd", "-i", "passwd"], (0, 1)), (["nscd", "-i", "group"], (0, 1)), (["sss_cache", "-UG"], (0,))]

    from runas_agent.errors import CommandError

    def failing(argv, **kwargs):
        raise CommandError(argv, 4, "cache is broken")

    problems = accountdb.flush_caches(failing)
    assert len(problems) == 3 and "sss_cache could not be told" in problems[2]


def test_a_missing_passwd_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "group").write_text("root:x:0:\n")
    with pytest.raises(accountdb.DatabaseError, match="passwd does not exist"):
        accountdb.load(str(tmp_path), rules=naming.DEBIAN)
    os.symlink("/etc/passwd", tmp_path / "passwd")
    with pytest.raises(accountdb.DatabaseError, match="passwd: cannot open"):
        accountdb.load(str(tmp_path), rules=naming.DEBIAN)


def test_a_lock_that_cannot_be_taken_is_an_error_naming_it_and_changes_nothing(etc):
    db = load(etc)
    add(db)
    os.mkdir(etc / ".pwd.lock")  # cannot be opened for writing
    before = snapshot(etc)
    with pytest.raises(accountdb.DatabaseError, match=r"\.pwd\.lock: cannot lock: Is a directory"):
        accountdb.commit(db, str(etc), run=no_caches)
    assert snapshot(etc) == before
