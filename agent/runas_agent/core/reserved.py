"""Reserved names (pure): account and group names that system packages, cloud images and the host's
own sysusers.d files create, or will create, and that a Run As value must therefore never take.

Package maintainer scripts reuse an existing account or group of their name instead of making their
own: docker.io's postinst runs `addgroup --system docker` only when `getent group docker` fails,
postgresql-common, redis and `systemd-sysusers` likewise, and cloud-init gives its default user
NOPASSWD:ALL by name. Whoever holds such a name first owns what the package grants it later (the
docker socket is root:docker 0660, so membership is root). A package that is not installed yet is
on no list on the host, so the names below are kept here, each group with where it comes from; the
host's own sysusers.d declarations are added at run time (`parse_sysusers`, read by
host/sysusers.py).

Names are compared exactly, as the account databases and `getent` compare them: a package that
looks for `docker` does not find `Docker`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Iterable, Union


@dataclass(frozen=True)
class NameList:
    """One maintained list: what the names are (shown in a refusal) and the names."""

    what: str
    names: frozenset[str]

    @classmethod
    def of(cls, what: str, names: str) -> "NameList":
        return cls(what, frozenset(names.split()))


LISTS: tuple[NameList, ...] = (
    # Debian base-passwd 3.6.1 (Debian 12), /usr/share/base-passwd/passwd.master and group.master:
    # the global static accounts and groups of every Debian and Ubuntu system.
    NameList.of("an account or group of Debian's base system (base-passwd)", """
        root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc _apt nobody
        adm tty disk kmem dialout fax voice cdrom floppy tape sudo audio dip operator src shadow utmp
        video sasl plugdev staff users nogroup"""),
    # base-passwd's users-and-groups document (same package): static names since retired (gnats,
    # removed in 3.6.0, is still on Ubuntu 20.04 images; majordom) and the names packages allocate
    # dynamically that it documents.
    NameList.of("an account or group Debian packages create (base-passwd's users-and-groups)", """
        gnats majordom postgres messagebus postfix gdm saned klog syslog lpadmin scanner _ssh libvirt
        sshd fetchmail cupsys"""),
    # systemd's own sysusers.d (sysusers.d/basic.conf.in, systemd.conf.in, udev.conf.in,
    # systemd-remote.conf.in, systemd-tpm2.conf.in in the systemd sources).
    NameList.of("an account or group systemd creates (its sysusers.d)", """
        root nobody adm wheel kmem lock tty utmp audio cdrom dialout disk input kvm lp render sgx tape
        video users systemd-journal systemd-network systemd-oom systemd-resolve systemd-timesync
        systemd-coredump systemd-journal-remote systemd-tpm2-swtpm"""),
    # Fedora's `setup` package, file uidgid (also /usr/share/doc/setup/uidgid on RHEL, CentOS, Amazon
    # Linux): the statically allocated accounts and groups of the RHEL family and their packages.
    NameList.of("an account or group of the RHEL family's base system or its packages (setup's uidgid)", """
        root bin daemon sys adm tty disk lp mem kmem wheel cdrom sync shutdown halt mail news uucp
        operator games gopher ftp man oprofile pkiuser dialout floppy slocate utmp squid pvm named
        postgres mysql nscd rpcuser console rpc amanda amandabackup tape netdump utempter vdsm kvm rpm
        ntp video dip mailman gdm xfs pppusers popusers slipusers mailnull apache wnn smmsp puppet
        tomcat lock ldap frontpage nut beagleindex tss piranha prelude-manager snortd audio condor nslcd
        wine pegasus webalizer haldaemon vcsa avahi realtime tcpdump privoxy sshd radvd cyrus saslauth
        arpwatch fax nocpulse desktop dbus jonas clamav screen quaggavt sabayon polkituser wbpriv
        postfix postdrop majordomo quagga exim distcache radiusd hsqldb dovecot ident nobody users qemu
        ovirt rhevm jetty saned vhostmd usbmuxd bacula cimsrvr mock ricci luci activemq cassandra
        stap-server stapusr stapsys stapdev swift glance nova keystone quantum cinder ceilometer ceph
        avahi-autoipd pulse rtkit abrt retrace ovirtagent ats dhcpd myproxy sanlock aeolus wallaby
        katello elasticsearch mongodb wildfly jbosson-agent jbosson heat haproxy hacluster haclient
        systemd-journal systemd-network systemd-resolve listar nfsnobody"""),
    # /etc/passwd and /etc/group of Canonical's Ubuntu 20.04 and 24.04 EC2 images as booted: the
    # image's default user and the accounts its preinstalled packages made.
    NameList.of("an account or group of Ubuntu's EC2 images", """
        ubuntu lxd landscape pollinate fwupd-refresh ec2-instance-connect dhcpcd uuidd tss tcpdump
        _chrony crontab rdma netdev admin ssl-cert syslog polkitd sshd input sgx kvm render _ssh"""),
    # /etc/passwd of an Amazon Linux 2 EC2 instance as booted.
    NameList.of("an account of Amazon Linux's EC2 images", """
        ec2-user ec2-instance-connect libstoragemgmt rngd chrony rpcuser nfsnobody tcpdump postfix sshd"""),
    # cloud-init's config/cloud.cfg.tmpl: the default user of each distribution (its `usernames`
    # map, else the distribution's own name), which cloud-init creates with sudo rights by name.
    NameList.of("a cloud image's default user (cloud-init)", """
        ec2-user azureuser cloud-user omv pi ubuntu alpine aosc arch debian fedora gentoo mariner
        opencloudos openeuler photon suse tencentos almalinux centos cloudlinux eurolinux miraclelinux
        rhel rocky virtuozzo dragonfly freebsd netbsd openbsd"""),
    # The AWS EC2 user guide's default user names of AMIs (Amazon Linux, CentOS, Debian, Fedora,
    # FreeBSD, RHEL, SUSE, Ubuntu, Oracle, Bitnami, Rocky), the SSM agent's shared account, and the
    # CloudWatch agent's package scripts (`useradd -r -M cwagent`).
    NameList.of("an AWS image's default user or an AWS agent's account", """
        ec2-user centos admin fedora ubuntu bitnami rocky ssm-user cwagent"""),
    # Server packages' own accounts and groups, by the names Debian and Fedora packaging give them;
    # each is also registered in Gentoo's acct-user/acct-group registry (api-gentoo-org,
    # files/uid-gid.txt), which keeps one name per package across distributions.
    NameList.of("an account or group a server package creates", """
        docker redis mysql postgres nginx apache haproxy memcached mongodb elasticsearch kibana logstash
        grafana prometheus node_exporter alertmanager influxdb telegraf zabbix nagios icinga jenkins git
        tomcat varnish squid unbound dnsmasq named ntp kafka zookeeper etcd consul vault ceph gluster
        qemu kvm libvirt lxd lxc openvpn clamav amavis opendkim dovecot dovenull postfix postdrop smmsp
        puppet collectd netdata epmd ldap sssd"""),
)

#: Name prefixes whole families of system accounts use: (prefix, what they are).
PREFIXES: tuple[tuple[str, str], ...] = (
    ("systemd-", "systemd's accounts (systemd-journal, systemd-network, ... and any added later)"),
    # Debian's convention for new system accounts (_apt, _chrony, _rpc, _ssh) and OpenBSD's (_sshd).
    ("_", "system accounts of Debian's and OpenBSD's convention (_apt, _chrony, _rpc, ...)"),
    # Debian packages whose account name would collide name themselves Debian-<name> (exim4's
    # Debian-exim, snmpd's Debian-snmp).
    ("Debian-", "Debian package accounts (Debian-exim, Debian-snmp, ...)"),
)

#: name -> what it is, from every list (the first list naming it wins)
_INDEX: dict[str, str] = {}
for _list in LISTS:
    for _name in _list.names:
        _INDEX.setdefault(_name, _list.what)

#: The host's sysusers.d names: name -> the file declaring it, or just the names.
HostNames = Union[Mapping[str, str], Iterable[str]]


def reserved_reason(name: str, host_sysusers_names: HostNames = ()) -> str | None:
    """Why `name` must never be a managed account or group; None when nothing reserves it.

    `host_sysusers_names` are the names this host's sysusers.d files declare (a mapping to the file
    declaring each, or just the names), whether or not their accounts exist yet."""
    for prefix, what in PREFIXES:
        if name.startswith(prefix):
            return f"{name!r} is reserved: names starting with {prefix!r} are {what}"
    listed = _INDEX.get(name)
    if listed is not None:
        return f"{name!r} is reserved: {listed}; a package installed later would reuse it and grant its rights to this account"
    declared = _host_declaration(name, host_sysusers_names)
    if declared is not None:
        return f"{name!r} is reserved: declared in {declared} (sysusers.d), so it is this host's package account"
    return None


def _host_declaration(name: str, host: HostNames) -> str | None:
    if isinstance(host, Mapping):
        return host.get(name)
    return "this host's sysusers.d" if name in set(host) else None


# --- sysusers.d ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SysusersEntry:
    """One line of a sysusers.d file that declares names: `kind` u, g or m."""

    kind: str
    name: str
    #: m lines: the group the user is added to; u lines: a primary group named in the ID field
    group: str | None
    line: int

    def names(self) -> tuple[str, ...]:
        return (self.name,) if self.group is None else (self.name, self.group)


@dataclass(frozen=True)
class Sysusers:
    entries: tuple[SysusersEntry, ...]
    #: lines that could not be read, as "line N: why"
    problems: tuple[str, ...]

    def names(self) -> frozenset[str]:
        return frozenset(n for e in self.entries for n in e.names())


def parse_sysusers(text: str) -> Sysusers:
    """The u, g and m lines of one sysusers.d file (sysusers.d(5)): `u name id "gecos" home shell`,
    `g name id`, `m user group`; `r` (ranges) declares no name. A type may carry modifiers (`u!`).
    Fields are separated by whitespace and may be quoted. A line that cannot be read is reported and
    skipped; names with specifiers (`%`) cannot be resolved here and are reported too."""
    entries: list[SysusersEntry] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            entry = _entry(stripped, number)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if entry is not None:
            entries.append(entry)
    return Sysusers(tuple(entries), tuple(problems))


def _entry(line: str, number: int) -> SysusersEntry | None:
    fields = shlex.split(line, posix=True)
    kind = fields[0].rstrip("!")
    if kind not in ("u", "g", "m", "r"):
        raise ValueError(f"unknown line type {fields[0]!r}")
    if kind == "r":
        return None
    name = _field(fields, 1, "no name")
    group = _group(kind, fields)
    if "%" in name or "%" in (group or ""):
        raise ValueError(f"name with a specifier ({name!r}) cannot be resolved")
    return SysusersEntry(kind, name, group, number)


def _field(fields: list[str], index: int, missing: str) -> str:
    value = fields[index] if len(fields) > index else ""
    if value in ("", "-"):
        raise ValueError(missing)
    return value


def _group(kind: str, fields: list[str]) -> str | None:
    """The group an m line adds to, or the primary group a u line names in its ID field (uid:group)."""
    if kind == "m":
        return _field(fields, 2, "m line without a group")
    if kind != "u" or len(fields) < 3 or ":" not in fields[2]:
        return None
    after = fields[2].split(":", 1)[1]
    return None if after in ("", "-") or after.isdigit() else after
