"""Home directories (host/homes.py), in scratch directories: 0700 homes owned by the account with
the skeleton copied, the staging directory that makes an interrupted copy recognisable and
finishable, existing homes never written, homes owned by someone else refused, no symbolic link
ever followed below the base (openat2 and the per-component walk), and an unprivileged process of
the account that races the copy unable to touch it."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from runas_agent.host import homes
from runas_agent.host.homes import HomeConflict, HomeError, HomeSpec, Skeleton

pytestmark = pytest.mark.host
UID = 1_500_000_042


@pytest.fixture
def skel(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (chown to the account)")
    path = tmp_path / "skel"
    (path / ".config" / "app").mkdir(parents=True)
    (path / ".bashrc").write_text("# bashrc\n")
    (path / ".profile").write_text("# profile\n" * 100)
    (path / ".config" / "app" / "settings").write_text("x=1\n")
    os.chmod(path / ".config" / "app" / "settings", 0o600)
    (path / "bin").mkdir()
    (path / "bin" / "tool").write_text("#!/bin/sh\n")
    os.chmod(path / "bin" / "tool", 0o755)
    os.chmod(path / "bin", 0o750)
    os.symlink(".config/app/settings", path / ".settings")
    return path


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "home"
    path.mkdir(mode=0o755)
    return path


def tree(root) -> dict[str, tuple]:
    """Relative path -> (kind, mode, owner, content or link target), not following links."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, st.st_uid, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, None)
            else:
                with open(path, "rb") as handle:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, handle.read())
    return out


def expected(skel, uid=UID) -> dict[str, tuple]:
    return {rel: (kind, mode, uid, data) for rel, (kind, mode, _, data) in tree(skel).items()}


def create(base, skel, spec=None, step=None) -> str:
    spec = spec or HomeSpec("alice", str(base / "alice"), UID, UID)
    fd = homes.open_trusted_dir(str(base))
    try:
        return homes.create_home(spec, Skeleton.read(str(skel)), fd, step)
    finally:
        os.close(fd)


def test_a_new_home_is_0700_the_accounts_with_the_whole_skeleton(base, skel):
    assert create(base, skel) == "created"
    st = os.lstat(base / "alice")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (UID, UID, 0o700)
    assert tree(base / "alice") == expected(skel)
    assert os.listdir(base) == ["alice"]


def test_an_existing_home_of_the_account_is_left_exactly_as_it_is(base, skel):
    (base / "alice").mkdir()
    os.chown(base / "alice", UID, UID)
    (base / "alice" / ".bashrc").write_text("mine\n")
    before = tree(base / "alice")
    assert create(base, skel) == "present"
    assert tree(base / "alice") == before
    assert os.listdir(base) == ["alice"]


@pytest.mark.parametrize("kind", ["other-owner", "root-owned", "symlink", "file"])
def test_something_else_where_the_home_should_be_is_a_conflict_left_untouched(base, skel, tmp_path, kind):
    target = tmp_path / "elsewhere"
    target.mkdir()
    home = base / "alice"
    if kind == "other-owner":
        home.mkdir()
        os.chown(home, 4242, 4242)
        (home / ".bashrc").write_text("someone else's\n")
    elif kind == "root-owned":
        home.mkdir()
    elif kind == "symlink":
        os.symlink(target, home)
    else:
        home.write_text("a file\n")
    before = (tree(base), tree(target))
    with pytest.raises(HomeConflict) as caught:
        create(base, skel)
    assert caught.value.account == "alice" and str(home) in str(caught.value)
    assert (tree(base), tree(target)) == before


def _create_and_die_at(base, skel, label):
    def step(path, name):
        if name == label:
            os.kill(os.getpid(), signal.SIGKILL)
    create(base, skel, step=step)


@pytest.mark.parametrize("label", ["staging", "copied", "owned", "renamed"])
def test_a_copy_killed_at_any_step_is_recognised_and_finished(base, skel, label):
    child = multiprocessing.get_context("fork").Process(target=_create_and_die_at, args=(base, skel, label))
    child.start()
    child.join()
    assert child.exitcode == -signal.SIGKILL
    staging = base / f".runas-agent-home.{UID}"
    if label == "renamed":
        assert not staging.exists() and create(base, skel) == "present"
    else:
        assert staging.exists() and not (base / "alice").exists()  # never a home with half a skeleton
        assert create(base, skel) == "finished"
    assert tree(base / "alice") == expected(skel)
    assert stat.S_IMODE(os.lstat(base / "alice").st_mode) == 0o700
    assert os.listdir(base) == ["alice"]


def test_a_half_written_file_in_the_staging_directory_is_rewritten(base, skel):
    staging = base / f".runas-agent-home.{UID}"
    staging.mkdir(mode=0o700)
    (staging / ".profile").write_text("# prof")  # cut short by a crash
    assert create(base, skel) == "finished"
    assert (base / "alice" / ".profile").read_text() == (skel / ".profile").read_text()


def test_a_staging_directory_of_someone_else_is_a_conflict(base, skel):
    staging = base / f".runas-agent-home.{UID}"
    staging.mkdir()
    os.chown(staging, 4242, 4242)
    with pytest.raises(HomeConflict, match="staging directory"):
        create(base, skel)
    assert os.lstat(staging).st_uid == 4242 and not (base / "alice").exists()


@pytest.mark.parametrize("mode, owner, ok", [(0o755, 0, True), (0o1777, 0, True), (0o777, 0, False),
                                             (0o775, 0, False), (0o755, 4242, False)])
def test_homes_are_only_made_below_directories_no_other_user_can_change(base, skel, mode, owner, ok):
    os.chmod(base, mode)
    os.chown(base, owner, 0)
    spec = HomeSpec("alice", str(base / "alice"), UID, UID)
    result = homes.create_homes([spec], Skeleton.read(str(skel)))
    if ok:
        assert result.done == {spec.path: "created"} and not result.failed
    else:
        assert not result.done and "not root's or is writable by others" in str(result.failed[0][1])
        assert os.listdir(base) == []


def test_one_failing_home_does_not_stop_the_others(base, skel):
    (base / "bob").mkdir()
    os.chown(base / "bob", 4242, 4242)
    specs = [HomeSpec(n, str(base / n), UID + i, UID + i) for i, n in enumerate(["alice", "bob", "carol"])]
    result = homes.create_homes(specs, Skeleton.read(str(skel)))
    assert result.done == {str(base / "alice"): "created", str(base / "carol"): "created"}
    assert [(s.account, type(e)) for s, e in result.failed] == [("bob", HomeConflict)]


@pytest.mark.parametrize("path", ["relative/alice", "{base}/", "{base}/alice/..", "{base}//alice", "{base}/./alice",
                                  f"{{base}}/.runas-agent-home.{UID}", "/"])
def test_unusable_home_paths_are_refused(base, skel, path):
    result = homes.create_homes([HomeSpec("alice", path.format(base=base), UID, UID)], Skeleton.read(str(skel)))
    assert not result.done and "not a usable home path" in str(result.failed[0][1])
    assert os.listdir(base) == []


# --- never following a link ------------------------------------------------------------------

@pytest.fixture(params=["openat2", "walk"])
def resolver(request, monkeypatch):
    if request.param == "openat2" and not homes.have_openat2():
        pytest.skip("this kernel has no openat2()")
    if request.param == "walk":
        monkeypatch.setattr(homes, "_openat2_works", False)
    return request.param


def test_open_beneath_follows_no_link_anywhere_on_the_path(tmp_path, resolver):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("root's\n")
    inside = tmp_path / "inside"
    (inside / "a").mkdir(parents=True)
    (inside / "a" / "file").write_text("ok\n")
    os.symlink(outside, inside / "a" / "swapped")
    os.symlink(outside / "secret", inside / "a" / "link")
    fd = os.open(inside, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(homes.open_beneath(fd, "a/file", os.O_RDONLY))
        for path, codes in [("a/swapped/secret", {errno.ELOOP, errno.ENOTDIR}), ("a/link", {errno.ELOOP}),
                            ("a/swapped", {errno.ELOOP}), ("../outside/secret", {errno.EXDEV})]:
            with pytest.raises(OSError) as caught:
                homes.open_beneath(fd, path, os.O_RDONLY)
            assert caught.value.errno in codes, (path, caught.value)
    finally:
        os.close(fd)


def test_a_directory_swapped_for_a_link_makes_the_copy_fail_not_write_elsewhere(tmp_path, skel, resolver):
    """What a user who swaps .config for a link to /etc mid-copy would get, if they could reach the
    directory: the copy of the entries below it fails, and nothing is written where the link points."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / ".config")
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        entry = next(e for e in Skeleton.read(str(skel)).entries if e.path == ".config/app")
        with pytest.raises(OSError) as caught:
            homes._copy_entry(fd, entry, UID, UID)
        assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
    finally:
        os.close(fd)
    assert os.listdir(outside) == []


_ATTACKER = textwrap.dedent("""
    import os, sys, time
    staging, outside, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
    reached = denied = seen = 0
    while time.monotonic() < deadline:
        seen += os.path.basename(staging) in os.listdir(os.path.dirname(staging))
        for attempt in (lambda: os.listdir(staging),
                        lambda: os.rename(os.path.join(staging, ".config"), os.path.join(staging, ".moved")),
                        lambda: os.symlink(outside, os.path.join(staging, ".config", "app"))):
            try:
                attempt()
                reached += 1
            except FileNotFoundError:
                pass
            except PermissionError:
                denied += 1
            except OSError:
                reached += 1  # it got in: after the copy the directory is the account's
    print(reached, denied, seen)
""")


@pytest.fixture
def open_base():
    """A base directory every user can traverse (pytest's own directories are root's only)."""
    top = Path(tempfile.mkdtemp(prefix="runas-homes-"))
    os.chmod(top, 0o755)
    (top / "home").mkdir(mode=0o755)
    yield top / "home"
    shutil.rmtree(top)


def test_the_account_cannot_reach_into_its_home_while_the_skeleton_is_copied(open_base, skel, tmp_path):
    """A process running as the account's UID races the copy, trying to list the staging
    directory, move its .config and plant a link in it. Until the copy is complete the directory is
    root's and every attempt is refused: at the end of each copy the staging directory holds exactly
    the skeleton, and nothing is written outside. (Once given to the account, a moment before it is
    renamed into place, the directory is the account's own to change, like the home it becomes.)"""
    base = open_base
    for i in range(300):
        (skel / ".config" / f"f{i}").write_text("x" * 4096)
    outside = base.parent / "outside"
    outside.mkdir(mode=0o777)
    staging = base / f".runas-agent-home.{UID}"
    want = expected(skel)
    copies = []

    def step(path, name):
        if name == "copied":
            copies.append(tree(staging) == want and os.lstat(staging).st_uid == 0)

    attacker = subprocess.Popen(["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", sys.executable,
                                 "-c", _ATTACKER, str(staging), str(outside), "3"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    rounds = 0
    while attacker.poll() is None:
        name = f"user{rounds}"
        assert create(base, skel, HomeSpec(name, str(base / name), UID, UID), step) == "created"
        rounds += 1
    reached, denied, seen = map(int, attacker.stdout.read().split())
    assert seen > 0 and denied > 0 and rounds > 0  # it saw the staging directory and tried
    assert copies == [True] * rounds
    assert os.listdir(outside) == []


# --- renaming --------------------------------------------------------------------------------

def test_rename_moves_the_home_keeping_everything(base, skel):
    create(base, skel)
    inode = os.lstat(base / "alice").st_ino
    assert homes.rename_home("robert", str(base / "alice"), str(base / "robert"), UID) == "renamed"
    assert os.lstat(base / "robert").st_ino == inode and not (base / "alice").exists()
    assert homes.rename_home("robert", str(base / "alice"), str(base / "robert"), UID) == "already"


def test_a_rename_done_before_the_name_was_taken_again_is_recognised(base, skel):
    """A hand-over stopped after its homes were moved and made, before its accounts were written:
    the leaver's home is already set aside, and /home/<name> is the newcomer's."""
    create(base, skel)
    assert homes.rename_home("runas-off-1", str(base / "alice"), str(base / "runas-off-1"), UID) == "renamed"
    (base / "alice").mkdir()
    os.chown(base / "alice", UID + 1, UID + 1)  # the newcomer's
    assert homes.rename_home("runas-off-1", str(base / "alice"), str(base / "runas-off-1"), UID) == "already"
    assert os.lstat(base / "alice").st_uid == UID + 1 and tree(base / "runas-off-1") == expected(skel)
    (base / "bob").mkdir()
    os.chown(base / "bob", UID + 1, UID + 1)
    with pytest.raises(HomeConflict, match="not a directory owned by uid"):  # nothing set aside: not ours to claim
        homes.rename_home("runas-off-2", str(base / "bob"), str(base / "runas-off-2"), UID)


@pytest.mark.parametrize("noreplace", ["renameat2", "fallback"])
def test_rename_never_replaces_what_is_at_the_new_name(base, skel, monkeypatch, noreplace):
    if noreplace == "fallback":
        monkeypatch.setattr(homes, "_SYS_RENAMEAT2", {})
    create(base, skel)
    (base / "robert").mkdir()  # empty: a plain rename(2) would silently replace it
    with pytest.raises(HomeConflict, match="exists already"):
        homes.rename_home("robert", str(base / "alice"), str(base / "robert"), UID)
    assert tree(base / "alice") == expected(skel) and os.listdir(base / "robert") == []


def test_rename_refuses_a_home_that_is_not_the_accounts(base, tmp_path):
    os.symlink(tmp_path, base / "alice")
    with pytest.raises(HomeConflict, match="not a directory owned by uid"):
        homes.rename_home("robert", str(base / "alice"), str(base / "robert"), UID)
    (base / "carol").mkdir()
    os.chown(base / "carol", 4242, 4242)
    with pytest.raises(HomeConflict):
        homes.rename_home("dave", str(base / "carol"), str(base / "dave"), UID)
    with pytest.raises(HomeError, match="does not exist"):
        homes.rename_home("erin", str(base / "nobody"), str(base / "erin"), UID)
    assert sorted(os.listdir(base)) == ["alice", "carol"]
