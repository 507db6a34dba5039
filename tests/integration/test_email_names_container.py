"""An account whose name is an e-mail address, written by the account engine straight into the
databases, on a booted host with systemd 252 (the version of RHEL 9 and Amazon Linux 2023): how the
SSM agent's `sh -c "id <name>"`, sudo, sshd (login, AllowUsers/DenyUsers patterns), logind and
`systemd --user` treat it. shadow-utils plays no part here; how RHEL's shadow-utils treats such
an account is in docs/design.md ("E-mail user names on RHEL-family hosts")."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from runas_agent.doctor.names import sshd_misreadings
from tests.hosts.fixtures import require_container_support

pytestmark = pytest.mark.container
REPO = Path(__file__).resolve().parents[2]
NAME = "alice@example.com"
UID = 1_500_000_000

_ENGINE = textwrap.dedent("""
    import sys
    sys.path.insert(0, "/opt/runas")
    from runas_agent.core import naming
    from runas_agent.host import accountdb, homes
    db = accountdb.load("/etc", rules=naming.DEBIAN)
    db.add_account(sys.argv[1], int(sys.argv[2]), int(sys.argv[2]), comment="runas-agent Alice",
                   home="/home/" + sys.argv[1], shell="/bin/bash")
    made = homes.create_homes([homes.HomeSpec(a.name, a.home, a.uid, a.gid) for a in db.added],
                              homes.Skeleton.read("/etc/skel"))
    assert not made.failed, made.failed
    print(accountdb.commit(db).written)
""")


@pytest.fixture(scope="module")
def host():
    """A booted host whose sshd sessions go through pam_systemd (libpam-systemd, as on RHEL and
    Amazon Linux) so that logind sees them."""
    require_container_support()
    from tests.hosts.container import BootedContainer
    with BootedContainer(extra_packages=["libpam-systemd"]) as ct:
        ct.copy_in(REPO / "agent" / "runas_agent", "/opt/runas/runas_agent")
        written = ct.exec(["python3", "-c", _ENGINE, NAME, str(UID)]).stdout
        assert "passwd" in written
        yield ct


def ssh(ct, *remote, user=NAME):
    return subprocess.run(ct.ssh_argv(*remote, user=user), capture_output=True, text=True, timeout=60)


def test_the_ssm_agents_unquoted_shell_check_resolves_it(host):
    for command in (f"id {NAME}", f"id -u {NAME}", f"id -g {NAME}"):
        proc = host.exec(["sh", "-c", command], check=False)
        assert proc.returncode == 0, (command, proc.stderr)
    assert host.exec(["sh", "-c", f"id {NAME}"]).stdout.startswith(f"uid={UID}({NAME}) gid={UID}({NAME})")
    assert host.exec(["getent", "passwd", NAME]).stdout.startswith(f"{NAME}:x:{UID}:{UID}:")


def test_sudo_reads_a_rule_for_it_and_applies_it(host):
    host.write_file("/etc/sudoers.d/alice", f'"{NAME}" ALL=(root) NOPASSWD: /usr/bin/id\n', mode=0o440)
    assert host.exec(["visudo", "-c"], check=False).returncode == 0
    listing = host.exec(["sudo", "-l", "-U", NAME]).stdout
    assert "(root) NOPASSWD: /usr/bin/id" in listing
    proc = host.exec(["runuser", "-u", NAME, "--", "sudo", "-n", "/usr/bin/id", "-u"], check=False)
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stderr
    denied = host.exec(["runuser", "-u", NAME, "--", "sudo", "-n", "/usr/bin/true"], check=False)
    assert denied.returncode != 0


def test_ssh_login_gets_a_logind_session_and_a_user_manager(host):
    """`ssh alice@example.com@host`: the client splits at the last '@'; sshd, PAM and logind take
    the name as it is, and systemd starts the user's own manager."""
    proc = ssh(host, "id -un; loginctl show-session \"$XDG_SESSION_ID\" -p Name --value; "
                     "systemctl --user is-system-running --wait || true; echo $HOME")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == NAME and lines[1] == NAME
    assert lines[2] in ("running", "degraded"), proc.stdout
    assert lines[3] == f"/home/{NAME}"
    assert host.exec(["systemctl", "is-active", f"user@{UID}.service"]).stdout.strip() == "active"


def test_lingering_starts_the_user_manager_by_name(host):
    host.exec(["loginctl", "enable-linger", NAME])
    state = host.exec(["loginctl", "show-user", NAME, "-p", "Linger", "-p", "Name"]).stdout.split()
    assert sorted(state) == ["Linger=yes", f"Name={NAME}"]
    assert host.exec(["systemctl", "is-active", f"user@{UID}.service"]).stdout.strip() == "active"
    host.exec(["loginctl", "disable-linger", NAME])


def test_sshd_user_patterns_cannot_name_it_literally(host):
    """Before OpenSSH 9.9, DenyUsers/AllowUsers split a pattern at its first '@' (RHEL 9 and Amazon
    Linux 2023 ship 8.7, Debian 12 9.2): `DenyUsers alice@example.com` denies a user "alice" coming
    from host "example.com" and lets alice@example.com in; `alice?example.com` matches the account."""
    try:
        configure(host, f"DenyUsers {NAME}\n")
        assert ssh(host, "true").returncode == 0  # not denied
        # doctor's name-rules check reads the same thing out of the real `sshd -T`
        assert sshd_misreadings(host.exec(["sshd", "-T"]).stdout, [NAME]) == [
            f"denyusers {NAME}: meant for {NAME}, read by sshd as user 'alice' from host 'example.com'"]
        configure(host, "DenyUsers alice?example.com\n")
        assert sshd_misreadings(host.exec(["sshd", "-T"]).stdout, [NAME]) == []
        denied = ssh(host, "true")
        assert denied.returncode == 255 and "Permission denied" in denied.stderr
        journal = host.exec(["journalctl", "-u", "ssh", "--no-pager", "-n", "20"]).stdout
        assert f"User {NAME} from" in journal and "not allowed because listed in DenyUsers" in journal
    finally:
        configure(host, None)


def configure(host, text):
    conf = "/etc/ssh/sshd_config.d/40-deny.conf"
    if text is None:
        host.exec(["rm", "-f", conf])
    else:
        host.write_file(conf, text)
    host.exec(["systemctl", "reload", "ssh"])
    host.wait_for_ssh()
