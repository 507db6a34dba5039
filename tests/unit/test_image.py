"""image-clean: what it removes, what it keeps, and how it treats the service (systemctl faked)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from runas_agent import cli, image
from runas_agent.host import systemctl
from runas_agent.host.subp import Result


class FakeSystemctl:
    """Answers systemctl like a host whose unit is `active` and `enabled` as given."""

    def __init__(self, active: bool, enabled: str = "enabled"):
        self.is_active = active
        self.enabled = enabled
        self.calls: list[list[str]] = []

    def __call__(self, argv, ok=(0,), timeout=60.0, **kwargs):
        self.calls.append(list(argv))
        verb = argv[1]
        if verb == "is-active":
            rc, out = (0, "active") if self.is_active else (3, "inactive")
        elif verb == "is-enabled":
            rc, out = (0 if self.enabled == "enabled" else 1), self.enabled
        elif verb == "stop":
            self.is_active = False
            rc, out = 0, ""
        else:
            raise AssertionError(f"unexpected systemctl call {argv}")
        assert rc in ok
        return Result(tuple(argv), rc, out + "\n", "")


def _host(tmp_path: Path) -> dict[str, Path]:
    state = tmp_path / "var/lib/runas-agent"
    (state / "sudoers-backup").mkdir(parents=True)
    paths = {
        "snapshot": state / "directory.json",
        "sessions": state / "sessions.json",
        "memo": state / "plan-memo.json",
        "ledger": state / "ledger.json",
        "sudoers": state / "sudoers.json",
        "backup": state / "sudoers-backup" / "ssm-agent-users",
        "audit": tmp_path / "var/log/runas-agent/sessions.jsonl",
        "runtime": tmp_path / "run/runas-agent",
    }
    for key, path in paths.items():
        if key == "runtime":
            (path / "sub").mkdir(parents=True)
            (path / "sub" / "status").write_text("x")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{key}\n")
    paths["state"] = state
    return paths


def _clean(paths, service, dry_run=False):
    return image.image_clean(str(paths["state"]), str(paths["audit"]), service=service, dry_run=dry_run,
                             runtime_dir=str(paths["runtime"]), lock_wait=0)


def test_removes_host_state_and_keeps_accounts_ledgers(tmp_path):
    paths = _host(tmp_path)
    systemctl = FakeSystemctl(active=True)
    report = _clean(paths, image.Service(run=systemctl, booted=lambda: True))

    for key in ("snapshot", "sessions", "memo", "audit", "runtime"):
        assert not paths[key].exists(), key
    for key in ("ledger", "sudoers", "backup"):
        assert paths[key].read_text() == f"{key}\n", key
    assert report["stopped"] is True
    assert ["systemctl", "stop", "runas-agent.service"] in systemctl.calls
    assert sorted(i["path"] for i in report["removed"]) == sorted(
        str(paths[k]) for k in ("snapshot", "sessions", "memo", "audit", "runtime"))
    assert {i["path"] for i in report["kept"]} == {str(paths[k]) for k in ("ledger", "sudoers")} | {
        str(paths["state"] / "sudoers-backup")}
    assert report["warnings"] == []


def test_second_run_finds_nothing_to_remove(tmp_path):
    paths = _host(tmp_path)
    service = image.Service(run=FakeSystemctl(active=False), booted=lambda: True)
    _clean(paths, service)
    again = _clean(paths, service)
    assert again["removed"] == []
    assert len(again["absent"]) == 5
    assert again["stopped"] is False


def test_dry_run_changes_nothing(tmp_path):
    paths = _host(tmp_path)
    systemctl = FakeSystemctl(active=True)
    report = _clean(paths, image.Service(run=systemctl, booted=lambda: True), dry_run=True)
    assert report["stopped"] is True and len(report["removed"]) == 5
    assert all(p.exists() for p in paths.values())
    assert not any(call[1] == "stop" for call in systemctl.calls)


@pytest.mark.parametrize("enabled", ["disabled", "masked"])
def test_warns_when_instances_would_not_sync_on_first_boot(tmp_path, enabled):
    paths = _host(tmp_path)
    report = _clean(paths, image.Service(run=FakeSystemctl(active=False, enabled=enabled), booted=lambda: True))
    assert len(report["warnings"]) == 1
    assert enabled in report["warnings"][0] and "first boot" in report["warnings"][0]


def test_without_systemd_no_systemctl_is_called(tmp_path):
    paths = _host(tmp_path)
    systemctl = FakeSystemctl(active=True)
    report = _clean(paths, image.Service(run=systemctl, booted=lambda: False))
    assert systemctl.calls == []
    assert report["stopped"] is False and not paths["snapshot"].exists()


def test_symlinked_runtime_dir_is_unlinked_not_followed(tmp_path):
    paths = _host(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep")
    os.rename(paths["runtime"], tmp_path / "old-runtime")
    paths["runtime"].symlink_to(elsewhere)
    _clean(paths, image.Service(run=FakeSystemctl(active=False), booted=lambda: False))
    assert not os.path.lexists(paths["runtime"])
    assert (elsewhere / "precious").read_text() == "keep"


def test_cli_uses_the_configured_state_dir(tmp_path, monkeypatch, capsys):
    paths = _host(tmp_path)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"source: {{type: file, path: /dev/null}}\nrun_as: {{expression: '${{path:userName}}'}}\n"
                   f"state_dir: {paths['state']}\nsessions: {{audit_file: {paths['audit']}}}\n")
    monkeypatch.setattr(image, "RUNTIME_DIR", str(paths["runtime"]))
    monkeypatch.setattr(systemctl, "SYSTEMD_RUN_DIR", str(tmp_path / "no-systemd"))
    rc = cli.main(["--config", str(cfg), "image-clean", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert not paths["snapshot"].exists() and paths["ledger"].exists()
    assert {i["path"] for i in out["removed"]} == {str(paths[k]) for k in ("snapshot", "sessions", "memo", "audit", "runtime")}


def test_cli_with_unreadable_config_falls_back_to_defaults_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(systemctl, "SYSTEMD_RUN_DIR", str(tmp_path / "no-systemd"))
    monkeypatch.setattr(image, "RUNTIME_DIR", str(tmp_path / "run"))
    seen = {}

    def fake_clean(state_dir, audit_file, **kwargs):
        seen.update(state_dir=state_dir, audit_file=audit_file)
        return {"dry_run": True, "stopped": False, "removed": [], "absent": [], "kept": [], "warnings": []}

    monkeypatch.setattr(image, "image_clean", fake_clean)
    rc = cli.main(["--config", str(tmp_path / "missing.yaml"), "image-clean", "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 0
    assert seen == {"state_dir": "/var/lib/runas-agent", "audit_file": "/var/log/runas-agent/sessions.jsonl"}
    assert "missing.yaml: file not found; using the default paths" in err
