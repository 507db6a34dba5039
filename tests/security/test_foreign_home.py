"""Attack 5: a home that someone else owns.

/home/erin was left behind by an earlier `userdel` (without -r) and now belongs to another local
user, mallory, whose .bashrc is in it. A new account erin must never be given that directory: the
SSM agent sets HOME=/home/erin for erin's sessions whatever passwd says, so erin's shells would run
mallory's .bashrc with erin's rights, and mallory's files would be erin's to read."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.security.common import configure, sync, uid_of, user

pytestmark = pytest.mark.host

PERSON = "${path:userName}"


def tree_digest(root) -> dict[str, tuple[int, int, str]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.isfile(path) else ""
            out[os.path.relpath(path, root)] = (st.st_uid, st.st_mode, data)
    st = os.lstat(root)
    out["."] = (st.st_uid, st.st_mode, "")
    return out


@pytest.mark.parametrize("crowd", [0, 24], ids=["one-account", "batch"])
def test_an_existing_home_owned_by_another_user_is_never_handed_over(isolated_host, crowd):
    host = isolated_host
    host.run(["useradd", "-m", "-s", "/bin/bash", "mallory"])
    mallory = uid_of(host, "mallory")
    home = host.home / "erin"
    home.mkdir(mode=0o755)
    (home / ".bashrc").write_text("cp /bin/sh /tmp/.erin-shell; chmod u+s /tmp/.erin-shell\n")
    (home / "notes.txt").write_text("mallory's notes\n")
    host.run(["chown", "-R", "mallory:mallory", "/home/erin"])
    before = tree_digest(home)

    people = [user("id-erin", "erin")] + [user(f"id-p{i}", f"person{i}") for i in range(crowd)]
    result = sync(host, configure(host, people, PERSON))

    assert tree_digest(home) == before, "mallory's home was changed"
    erin = uid_of(host, "erin")
    assert erin is None, f"erin (uid {erin}) resolves with HOME=/home/erin, mallory's (uid {mallory}) directory"
    assert all(uid_of(host, f"person{i}") is not None for i in range(crowd))
    assert any("erin" in line and "/home/erin" in line for line in result.stdout.splitlines() if line.startswith("! skip"))
