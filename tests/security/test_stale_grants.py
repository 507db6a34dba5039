"""Attack 2: a grant that outlived its user.

sudoers rules and /etc/group member lists name users, not UIDs. A rule left by cloud-init after
`userdel ghost`, or a member entry `disk:x:6:phantom` for a user that no longer exists, applies to
the next account created under that name. Each test lets the agent sync a person of that name and
asks the host's own tools (`sudo -l -U`, `id -nG`) what the account may do."""

from __future__ import annotations

import pytest

from tests.security.common import configure, groups_of, need_sudo, sudo_listing, sync, uid_of, user

pytestmark = pytest.mark.host

PERSON = "${path:userName}"


def drop_in(host, name: str, content: str) -> None:
    path = host.etc / "sudoers.d" / name
    path.write_text(content)
    path.chmod(0o440)
    check = host.run(["visudo", "-c"], check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def rights(host, name: str) -> bool:
    """Whether `sudo -l -U NAME` lists anything the account may run."""
    return "may run the following commands" in sudo_listing(host, name)


def test_a_sudoers_rule_left_for_a_deleted_user_is_not_inherited(isolated_host):
    """Rules naming `ghost` (cloud-init's default-user rule) and `spectre` (through a User_Alias) stay
    after those users were deleted; new directory people of those names synced by the agent may run
    nothing through them, and the plan names the file."""
    need_sudo()
    host = isolated_host
    files = {"ghost": "90-cloud-init-users", "spectre": "50-ops-aliases"}
    drop_in(host, files["ghost"], "# Created by cloud-init\n\n# User rules for ghost\nghost ALL=(ALL) NOPASSWD:ALL\n")
    drop_in(host, files["spectre"], "User_Alias OPERATORS = spectre, somebody\n"
                                    "OPERATORS ALL=(root) NOPASSWD: /usr/bin/systemctl\n")
    cfg = configure(host, [user("id-ghost", "ghost"), user("id-spectre", "spectre"), user("id-ok", "alice")], PERSON)
    result = sync(host, cfg)
    assert uid_of(host, "alice") is not None
    granted = {name: sudo_listing(host, name) for name in files if rights(host, name)}
    assert granted == {}, granted
    skips = [line for line in result.stdout.splitlines() if line.startswith("! skip")]
    assert all(any(name in line and file in line for line in skips) for name, file in files.items()), skips


def test_a_group_member_entry_left_for_a_deleted_user_is_not_inherited(isolated_host):
    """`disk:x:6:phantom` (raw access to every disk) stays after the user phantom was removed by
    editing the files; a new directory person `phantom` synced by the agent is not in group disk."""
    host = isolated_host
    for name in ("group", "gshadow"):
        path = host.etc / name
        lines = [line + ("phantom" if line.startswith("disk:") and line.endswith(":") else "")
                 for line in path.read_text().splitlines()]
        path.write_text("\n".join(lines) + "\n")
    assert "phantom" in host.group()["disk"][3]
    cfg = configure(host, [user("id-phantom", "phantom"), user("id-ok", "alice")], PERSON)
    result = sync(host, cfg)
    assert uid_of(host, "alice") is not None
    assert "disk" not in groups_of(host, "phantom")
    assert any("phantom" in line and "disk" in line for line in result.stdout.splitlines() if line.startswith("! skip"))
