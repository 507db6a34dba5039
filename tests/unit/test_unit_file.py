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


def test_sandbox_keeps_what_account_management_needs_and_no_more():
    d = directives()
    assert d["ProtectSystem"] == ["strict"]
    assert d["ReadWritePaths"] == ["/etc /home"]
    assert set(d["CapabilityBoundingSet"][0].split()) == {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL",
                                                          "CAP_AUDIT_WRITE"}
    for relaxed in ("ProtectHome", "ProtectProc", "ProcSubset", "PrivateUsers"):
        assert relaxed not in d, f"{relaxed} would break account management or the session watcher"
    assert d["NoNewPrivileges"] == ["yes"] and d["SystemCallFilter"] == ["@system-service"]
