"""Attack 8: the skeleton copy race.

A new account owns its home. If the home is reachable while root copies the skeleton into it, the
account can swap a directory of it for a symbolic link between the moment root creates the
directory and the moment root writes into it: root then writes where the link points. Here the
skeleton has a subdirectory (.config/app, as skeletons of desktop and vendor images do) and
processes running as two of the new accounts' UIDs wait for it to appear in their homes, move
.config away and put a link to a root-owned directory in its place. Nothing may ever be written
through the link."""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

from tests.security.common import configure, derived_uid, kill_all_of, sync, uid_of, user

pytestmark = pytest.mark.host

PYTHON = "/usr/bin/python3"  # one every UID may run (the test's own interpreter may be under /root)

_SWAPPER = textwrap.dedent("""
    import os, sys, time
    home, target, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
    config = os.path.join(home, ".config")
    print("ready", flush=True)
    swapped = 0
    while time.monotonic() < deadline and not swapped:
        try:
            if os.path.isdir(os.path.join(config, "app")) and not os.path.islink(config):
                os.rename(config, os.path.join(home, ".config.moved"))
                os.symlink(target, config)
                swapped = 1
        except OSError:
            pass
        time.sleep(0.0002)
    print(swapped, flush=True)
""")


def skeleton(root):
    """A skeleton with a subdirectory holding enough files that the copy of it takes a while."""
    (root / ".config" / "app").mkdir(parents=True)
    (root / ".profile").write_text("# profile\n")
    for i in range(150):
        (root / ".config" / "app" / f"setting{i:03}").write_text("x" * 512)
    return root


def start_swapper(host, name: str) -> tuple[int, subprocess.Popen]:
    """A process with the UID the account `name` will get, waiting for its home."""
    uid = derived_uid(f"id-{name[1:]}")
    proc = host.popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", PYTHON, "-c", _SWAPPER,
                       f"/home/{name}", "/etc/attack", "30"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return uid, proc


def test_a_link_swapped_into_the_home_mid_copy_never_makes_root_write_outside(isolated_host):
    if not os.access(PYTHON, os.X_OK):
        pytest.skip(f"needs {PYTHON}")
    host = isolated_host
    skel = skeleton(host.root / "skel")
    outside = host.etc / "attack"
    (outside / "app").mkdir(parents=True)

    people = [user(f"id-{i:02}", f"p{i:02}") for i in range(24)]
    targets = ["p11", "p23"]
    swappers = []
    try:
        swappers = [start_swapper(host, name) for name in targets]
        sync(host, configure(host, people, "${path:userName}", accounts={"skel": str(skel)}))
        assert all(uid_of(host, name) == uid for name, (uid, _) in zip(targets, swappers))
        for _, proc in swappers:
            proc.wait(timeout=15)  # each swaps at once once its home is complete, if not before
        swapped = [proc.stdout.read().strip() for _, proc in swappers]
    finally:
        for uid, proc in swappers:
            kill_all_of(uid)
            proc.wait()

    assert "1" in swapped, "no swapper ever found its home with the skeleton's subdirectory"
    written = sorted(os.listdir(outside / "app"))
    assert written == [], f"root wrote {len(written)} files through the link into /etc/attack/app"
