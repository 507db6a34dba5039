"""systemd/runas-agent.service agrees with the code (the booted-container tests run it for real)."""

from __future__ import annotations

from pathlib import Path

from runas_agent.exitcodes import Exit

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "runas-agent.service"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_the_reserved_config_exit_status_does_not_restart():
    d = directives()
    assert d["RestartPreventExitStatus"] == [str(int(Exit.CONFIG))]
    assert d["Restart"] == ["on-failure"]


def test_notify_with_watchdog_and_reload_that_checks_the_config_first():
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["WatchdogSec"] and d["WatchdogSec"][0] not in ("", "0", "infinity")
    assert d["ExecStart"] == ["/usr/bin/runas-agent run"]
    assert d["ExecReload"] == ["/usr/bin/runas-agent check-config", "/bin/kill -HUP $MAINPID"]
    assert d["KillMode"] == ["mixed"]


def test_ordered_before_every_ssm_agent_unit_name():
    before = " ".join(directives()["Before"]).split()
    assert {"amazon-ssm-agent.service", "snap.amazon-ssm-agent.amazon-ssm-agent.service"} <= set(before)


def _paths(d: dict[str, list[str]], key: str) -> set[str]:
    return {p.lstrip("-") for line in d.get(key, []) for p in line.split()}


def test_sandbox_keeps_what_account_management_needs_and_no_more():
    d = directives()
    assert d["ProtectSystem"] == ["strict"]
    assert d["ReadWritePaths"] == ["/etc /home"]
    assert set(d["CapabilityBoundingSet"][0].split()) == {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL",
                                                          "CAP_AUDIT_WRITE"}
    for relaxed in ("ProtectHome", "ProtectProc", "ProcSubset", "PrivateUsers"):
        assert relaxed not in d, f"{relaxed} would break account management or the session watcher"
    assert d["NoNewPrivileges"] == ["yes"] and d["SystemCallFilter"] == ["@system-service"]
    assert d["PrivateMounts"] == ["yes"]


#: What the agent writes in /etc: never under a read-only or inaccessible path.
AGENT_WRITES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/subuid", "/etc/subgid",
                "/etc/.pwd.lock", "/etc/passwd-", "/etc/passwd.lock", "/etc/sudoers.d/runas-agent-x")


def test_what_grants_root_under_etc_is_read_only_and_what_the_agent_writes_is_not():
    d = directives()
    read_only = _paths(d, "ReadOnlyPaths")
    hidden = _paths(d, "InaccessiblePaths")
    placeholders = {spec.split(":")[1] for line in d.get("BindReadOnlyPaths", []) for spec in line.split()}
    covered = read_only | hidden | placeholders
    for path in ("/etc/systemd", "/etc/cron.d", "/etc/crontab", "/etc/sudoers", "/etc/sudo.conf", "/etc/pam.d",
                 "/etc/security", "/etc/ld.so.conf.d", "/etc/ld.so.cache", "/etc/profile.d", "/etc/environment",
                 "/etc/udev", "/etc/sysctl.d", "/etc/modprobe.d", "/etc/apt", "/etc/yum.repos.d", "/etc/alternatives",
                 "/etc/runas-agent", "/etc/login.defs", "/etc/default", "/etc/init.d", "/etc/logrotate.d"):
        assert path in covered, path
    assert "/etc/ssh" in hidden
    assert {"/etc/ld.so.preload", "/etc/rc.local"} <= placeholders
    for written in AGENT_WRITES:
        for path in covered:
            assert not (written == path or written.startswith(path + "/")), (written, path)
    # ProtectSystem=strict leaves /root and /run/user writable: they are read-only here.
    assert {"/root", "/run/user"} <= read_only
    assert all(p.startswith(("/etc/", "/home/")) or p in ("/root", "/run/user") for p in covered)


def test_network_allows_metadata_and_dns_and_denies_other_link_local():
    d = directives()
    deny = _paths(d, "IPAddressDeny")
    allow = _paths(d, "IPAddressAllow")
    assert {"link-local", "fc00::/7"} <= deny and "any" not in deny
    assert {"localhost", "169.254.169.254", "fd00:ec2::254", "169.254.169.253", "fd00:ec2::253"} <= allow


def test_memory_is_bounded():
    d = directives()
    assert d["MemoryMax"] and d["MemoryMax"][0].endswith("M") and int(d["MemoryMax"][0][:-1]) >= 256
