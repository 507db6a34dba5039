"""Attack 1: a Run As value that names an account or group a package or image creates later.

Package maintainer scripts reuse an existing account or group of their name (docker.io's postinst
runs `addgroup --system docker` only when `getent group docker` fails; postgresql-common, redis and
systemd-sysusers likewise; cloud-init gives its default user NOPASSWD:ALL). Whoever holds the name
first gets what the package grants it later: the docker socket is root:docker 0660, the database
cluster belongs to `postgres`. Each test lets the agent sync a directory that asks for such a name,
then runs the package's own account step with the real tools, and asserts what an attacker must not
end up with."""

from __future__ import annotations

import pytest

from tests.security.common import configure, getent, gids_of, need_sudo, sudo_listing, sync, uid_of, user

pytestmark = pytest.mark.host

SHARED = "${path:enterprise.organization}"
PERSON = "${path:userName}"


def managed(host) -> list[str]:
    """Every account the agent made (its passwd comment carries the marker), active or parked."""
    return [name for name, fields in host.passwd().items() if fields[4].startswith("runas-agent")]


def forget(host, name: str) -> None:
    """A host on which the package is not installed yet (the isolated /etc is a copy of this machine's)."""
    if getent(host, "passwd", name):
        host.run(["userdel", "--", name])
    if getent(host, "group", name):
        host.run(["groupdel", "--", name])


def skip_line(output: str, name: str) -> str:
    lines = [l for l in output.splitlines() if l.startswith("! skip") and repr(name) in l]
    return lines[0] if lines else ""


def test_organization_docker_never_owns_the_docker_socket(isolated_host):
    """After the agent synced organization `docker` and then docker.io's maintainer script ran, no
    managed account is a member of the group that owns the docker socket (membership is root)."""
    host = isolated_host
    forget(host, "docker")
    cfg = configure(host, [user("id-1", "alice", "docker"), user("id-2", "bob", "docker"), user("id-3", "carol", "acme")], SHARED)
    result = sync(host, cfg)
    host.run(["sh", "-c", "getent group docker >/dev/null || addgroup --system docker"])  # docker.io's postinst
    socket_gid = int(getent(host, "group", "docker")[2])                                    # /run/docker.sock root:docker 0660
    assert managed(host), "the agent created nothing at all"
    holders = [name for name in managed(host) if socket_gid in gids_of(host, name)]
    assert holders == [], f"{holders} can use the docker socket (gid {socket_gid})"
    assert socket_gid < 1000, "the package did not get a system group of its own"
    assert "reserved" in skip_line(result.stdout, "docker")


def test_person_postgres_never_owns_the_database_cluster(isolated_host):
    """After the agent synced person `postgres` and postgresql-common's maintainer script ran, the
    account that owns the cluster is the package's system account, not a directory person's."""
    host = isolated_host
    forget(host, "postgres")
    cfg = configure(host, [user("id-pg", "postgres"), user("id-ok", "alice")], PERSON)
    result = sync(host, cfg)
    host.run(["sh", "-c", "getent passwd postgres >/dev/null || adduser --system --quiet --home /var/lib/postgresql "
                          "--no-create-home --shell /bin/bash --group --gecos 'PostgreSQL administrator' postgres"])
    owner = getent(host, "passwd", "postgres")
    assert owner is not None and not owner[4].startswith("runas-agent"), f"the cluster's owner is {owner}"
    assert int(owner[2]) < 1000
    assert uid_of(host, "alice") is not None
    assert "reserved" in skip_line(result.stdout, "postgres")


def test_person_ec2_user_never_gets_the_cloud_default_users_sudo(isolated_host):
    """After the agent synced person `ec2-user` and cloud-init set up its default user (the account
    when missing, then NOPASSWD:ALL by name), no managed account can run everything as root."""
    need_sudo()
    host = isolated_host
    forget(host, "ec2-user")
    cfg = configure(host, [user("id-ec2", "ec2-user"), user("id-ok", "alice")], PERSON)
    result = sync(host, cfg)
    host.run(["sh", "-c", "getent passwd ec2-user >/dev/null || useradd -m -U -c 'EC2 Default User' ec2-user"])
    rule = host.etc / "sudoers.d" / "90-cloud-init-users"
    rule.write_text("# Created by cloud-init\n\n# User rules for ec2-user\nec2-user ALL=(ALL) NOPASSWD:ALL\n")
    rule.chmod(0o440)
    assert managed(host)
    rooted = [name for name in managed(host) if "NOPASSWD: ALL" in sudo_listing(host, name)]
    assert rooted == [], f"{rooted} got the cloud default user's NOPASSWD:ALL"
    assert "reserved" in skip_line(result.stdout, "ec2-user")


def test_prefixed_system_names_are_never_managed(isolated_host):
    """`systemd-*` and `_*` are the namespaces of systemd's and Debian's system accounts: after the
    agent synced such people and systemd-sysusers created the packages' accounts, those accounts are
    the packages' (sysusers keeps an existing account of the name)."""
    host = isolated_host
    units = {"systemd-coredump": 'u systemd-coredump - "systemd Core Dumper"',
             "_chrony": 'u _chrony - "Chrony daemon" /var/lib/chrony'}
    for name in units:
        forget(host, name)
    cfg = configure(host, [user(f"id-{name}", name) for name in units] + [user("id-ok", "alice")], PERSON)
    result = sync(host, cfg)
    conf = host.root / "package-sysusers.conf"
    conf.write_text("\n".join(units.values()) + "\n")
    host.run(["systemd-sysusers", str(conf)])
    owners = {name: getent(host, "passwd", name) for name in units}
    assert [o for o in owners.values() if o is None or o[4].startswith("runas-agent")] == [], owners
    assert all("reserved" in skip_line(result.stdout, name) for name in units)


def test_names_in_the_hosts_sysusers_files_are_never_managed(isolated_host):
    """A package installed on this host declares `vendord` in /etc/sysusers.d but its account does not
    exist yet (it is made at first boot, or by the next `systemd-sysusers`): the name is still taken."""
    host = isolated_host
    forget(host, "vendord")
    (host.etc / "sysusers.d").mkdir(exist_ok=True)
    (host.etc / "sysusers.d" / "vendord.conf").write_text('u vendord - "Vendor agent" /var/lib/vendord\n')
    cfg = configure(host, [user("id-v", "vendord"), user("id-ok", "alice")], PERSON)
    result = sync(host, cfg)
    host.run(["systemd-sysusers", "/etc/sysusers.d/vendord.conf"])
    owner = getent(host, "passwd", "vendord")
    assert owner is not None and not owner[4].startswith("runas-agent"), f"vendord is {owner}"
    assert "sysusers.d" in skip_line(result.stdout, "vendord")


def test_allowed_names_keeps_every_other_name_out(isolated_host):
    """With accounts.allowed_names set, a directory value outside the pattern (a service-looking name an
    IdP admin or a self-service profile produced) never becomes an account; names inside it do."""
    host = isolated_host
    cfg = configure(host, [user("id-a", "alice@corp.example"), user("id-c", "jenkins-ci")],
                    PERSON, accounts={"allowed_names": r"^[a-z0-9._-]+@corp\.example$"})
    result = sync(host, cfg)
    assert uid_of(host, "alice@corp.example") is not None
    assert uid_of(host, "jenkins-ci") is None and "jenkins-ci" not in managed(host)
    assert "accounts.allowed_names" in skip_line(result.stdout, "jenkins-ci")
