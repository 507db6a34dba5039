"""The unit's sandbox contains a compromised agent, and the agent still does its job: in a booted
Debian container, systemd/runas-agent.service unchanged (test settings in a drop-in) syncs accounts
and a sudoers drop-in, while a probe run by the same unit (ExecStartPost=: the service's mount
namespace, capabilities and IP firewall) tries every way the sandbox must close: writing
/etc/systemd/system, /etc/cron.d, /etc/sudoers, /etc/pam.d, /etc/ld.so.preload, /etc/rc.local,
root's and the cloud administrator's homes; reading the SSH host keys; reaching link-local
credential endpoints. See docs/service.md, "Sandboxing".
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.hosts.fixtures import container_factory, container_rootfs  # noqa: E402,F401
from tests.hosts.service import AWS_ENV, MESSAGE_SYNC, UNIT, Host, binds, config, directory, install  # noqa: E402

pytestmark = pytest.mark.container

PROBE = _REPO / "tests/hosts/escape_probe.py"
REPORT = "/run/runas-agent/escape.json"
#: Files whose content must be exactly what it was before the service ran.
WATCHED = ("/etc/sudoers", "/etc/crontab", "/etc/environment", "/etc/profile", "/etc/login.defs", "/etc/ld.so.cache",
           "/etc/pam.d/common-auth", "/etc/ssh/sshd_config")


def _fingerprint(host: Host) -> dict[str, str]:
    out = {}
    for path in WATCHED:
        proc = host.sh("cat", path, check=False)
        out[path] = hashlib.sha256(proc.stdout.encode()).hexdigest() if proc.returncode == 0 else "absent"
    for directory in ("/etc/systemd/system", "/etc/cron.d", "/etc/pam.d", "/root", "/home/admin"):
        out[directory] = host.sh("ls", "-A", directory, check=False).stdout
    return out


@pytest.fixture
def host(container_factory, wheelhouse) -> Host:  # noqa: F811
    ct = container_factory(bind_ro=[*binds(wheelhouse), (str(PROBE), "/opt/test/escape_probe.py")], ip_firewall=True)
    return install(ct)


def test_a_sync_succeeds_while_every_path_to_root_is_closed(host):
    # The cloud image's administrator, and a cron directory, as on a real host.
    host.sh("useradd", "--create-home", "--shell", "/bin/bash", "admin")
    host.sh("mkdir", "-p", "/etc/cron.d")
    host.ct.write_file("/etc/crontab", "# the host's crontab\n")
    # Routes for the probe's datagrams: without one the kernel refuses before the firewall does.
    iface = host.sh("ip", "-o", "-4", "route", "show", "scope", "link").stdout.split()[2]
    for net in ("169.254.0.0/16", "10.0.0.0/8"):
        host.sh("ip", "route", "add", net, "dev", iface)
    assert host.sh("test", "-e", "/etc/ld.so.preload", check=False).returncode == 1
    before = _fingerprint(host)

    env = "\n".join(f"Environment={k}={v}" for k, v in AWS_ENV.items())
    host.drop_in(f"[Service]\n{env}\nRestartSec=1s\nExecStartPost=/usr/bin/python3 /opt/test/escape_probe.py {REPORT}\n")
    host.set_directory(directory(["user001", "user002", "user003"]))
    host.write_config(config(sudo={"rules": [{"run_as": "user001", "commands": ["/usr/bin/journalctl"],
                                              "nopasswd": True}]}))
    host.sh("systemctl", "start", UNIT, timeout=120)

    # The agent did its job inside the sandbox.
    assert sorted(host.accounts()) == ["user001", "user002", "user003"]
    assert host.sh("stat", "-c", "%U", "/home/user001").stdout.strip() == "user001"
    drop_ins = [d for d in host.sh("ls", "/etc/sudoers.d").stdout.split() if d.startswith("runas-agent-user001-")]
    assert len(drop_ins) == 1, drop_ins
    assert "NOPASSWD: /usr/bin/journalctl" in host.sh("sudo", "-l", "-U", "user001").stdout
    host.sh("visudo", "-c")
    pwck = host.sh("pwck", "-r", check=False)   # 2: the minimal image's system accounts lack their homes
    assert pwck.returncode in (0, 2) and "user00" not in pwck.stdout + pwck.stderr, pwck.stdout
    host.sh("grpck", "-r")
    (record,) = host.wait_records(f"MESSAGE_ID={MESSAGE_SYNC}")
    assert record["SYNC_RESULT"] == "ok" and record["SYNC_CREATED"] == "3", record

    # ...and could do nothing else.
    report = json.loads(host.ct.read_file(REPORT))
    checks = report["checks"]
    failures = {check: r["detail"] for check, r in checks.items() if not r["ok"]}
    assert failures == {}, json.dumps(report, indent=1)
    for must in ("create in /etc/systemd/system", "create in /etc/cron.d", "create in /etc/pam.d", "write /etc/sudoers",
                 "replace /etc/sudoers", "put /etc/ld.so.preload", "put /etc/rc.local", "read /etc/ssh",
                 "create in /root", "create in /home/admin", "agent writes in /etc", "agent writes in /etc/sudoers.d"):
        assert must in checks, must
    # Instance metadata and the Amazon DNS resolver stay reachable, the ECS credentials endpoint
    # does not; private addresses (the VPC resolver, interface endpoints, proxies) by default do.
    assert report["network"] == {"169.254.169.254": "sent", "169.254.169.253": "sent", "169.254.170.2": "EPERM",
                                 "127.0.0.1": "sent", "10.0.0.2": "sent", "10.0.0.3": "sent"}, report["network"]

    # Nothing changed on the host: the probe's attempts, had any succeeded, would show here.
    assert _fingerprint(host) == before
    for path in ("/etc/ld.so.preload", "/etc/rc.local"):
        # systemd made an empty file the mount point: nothing to preload, nothing to run.
        assert host.sh("stat", "-c", "%s %a", path).stdout.split() == ["0", "644"], path

    props = host.show("PrivateMounts", "MemoryMax", "IPAddressDeny", "ProtectSystem")
    assert props["PrivateMounts"] == "yes" and props["ProtectSystem"] == "strict"
    assert props["MemoryMax"] not in ("", "infinity"), props


def test_the_allow_list_is_adjustable_by_a_drop_in(host):
    """An operator denies the private ranges too and allows back the one address the host uses
    (the VPC resolver, a proxy or an interface endpoint): the firewall follows the drop-in, and
    the sync still runs."""
    iface = host.sh("ip", "-o", "-4", "route", "show", "scope", "link").stdout.split()[2]
    for net in ("169.254.0.0/16", "10.0.0.0/8"):
        host.sh("ip", "route", "add", net, "dev", iface)
    env = "\n".join(f"Environment={k}={v}" for k, v in AWS_ENV.items())
    host.drop_in(f"[Service]\n{env}\nIPAddressDeny=10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 100.64.0.0/10\n"
                 "IPAddressAllow=10.0.0.2\n"
                 f"ExecStartPost=/usr/bin/python3 /opt/test/escape_probe.py {REPORT}\n")
    host.write_config(config())
    host.sh("systemctl", "start", UNIT, timeout=120)
    report = json.loads(host.ct.read_file(REPORT))
    assert report["network"]["10.0.0.2"] == "sent" and report["network"]["10.0.0.3"] == "EPERM", report["network"]
    assert report["network"]["169.254.169.254"] == "sent" and report["network"]["169.254.170.2"] == "EPERM"
    assert sorted(host.accounts()) == ["user001", "user002", "user003"]
