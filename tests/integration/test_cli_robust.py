"""The command line as people use it, through the real entry point in a subprocess: config files that
cannot be read, options in any position, output piped to a reader that leaves, debug logs without
credentials. Everything runs inside isolated hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runas_agent.exitcodes import Exit
from tests.hosts.namespace import REPO
from tests.integration.test_doctor_links import USERS, directory
from tests.integration.test_sync_host import IRET, setup

pytestmark = pytest.mark.host
pytest_plugins = ["tests.endpoint.fixtures"]


def closed_stdout(host, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in `host` with a standard output whose reader has already gone (`| head` after
    it read its lines)."""
    merged = {**os.environ, "PYTHONPATH": str(REPO / "agent"), **(env or {})}
    proc = host.popen([sys.executable, "-m", "runas_agent", *args], env=merged, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=300)
    return subprocess.CompletedProcess(args, proc.returncode, "", stderr)


@pytest.mark.parametrize("command", [("check-config",), ("plan",), ("--once",), ("run",), ("export",), ("sessions",)])
def test_a_config_that_is_not_utf8_exits_78_with_the_line(isolated_host, command):
    path = isolated_host.root / "config.yaml"
    path.write_bytes(b"source:\n  type: file\n  path: /srv/caf\xe9.json\nrun_as: {expression: '${path:userName}'}\n")
    result = isolated_host.agent("--config", str(path), *command)
    assert result.returncode == Exit.CONFIG, result.stdout + result.stderr
    assert "not UTF-8: byte 0xe9 on line 3" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_doctor_reports_a_config_that_is_not_utf8_and_does_not_crash(isolated_host):
    path = isolated_host.root / "config.yaml"
    path.write_bytes(b"state_dir: /var/lib/\xff\n")
    result = isolated_host.agent("doctor", "--json", "--config", str(path))
    assert result.returncode == Exit.UNHEALTHY, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["config"]["status"] == "failed" and "not UTF-8" in " ".join(checks["config"]["details"])
    assert "Traceback" not in result.stderr


def test_global_options_work_before_and_after_the_command(isolated_host):
    cfg = str(setup(isolated_host, IRET))
    before = isolated_host.agent("-c", cfg, "--json", "plan")
    after = isolated_host.agent("plan", "--config", cfg, "--json")
    assert before.returncode == after.returncode == Exit.CHANGES, before.stderr + after.stderr
    assert json.loads(before.stdout)["actions"] == json.loads(after.stdout)["actions"]
    assert json.loads(before.stdout)["actions"], before.stdout


def test_force_before_plan_is_plan_force(isolated_host):
    cfg = str(setup(isolated_host, IRET))
    assert isolated_host.agent("-c", cfg, "--once").returncode == Exit.OK
    # acme's only person leaves: one of two accounts, over what this configuration lets a sync disable
    gone = str(setup(isolated_host, IRET[:3], safety={"max_disable_count": 0}))
    refused = isolated_host.agent("-c", gone, "plan")
    assert refused.returncode == Exit.REFUSED, refused.stdout + refused.stderr
    for argv in (("--force", "-c", gone, "plan"), ("plan", "-c", gone, "--force")):
        forced = isolated_host.agent(*argv)
        assert forced.returncode == Exit.CHANGES, (argv, forced.stdout + forced.stderr)


@pytest.mark.parametrize("argv, message", [
    (("--once", "plan"), "--once runs one sync by itself; it does not combine with the command 'plan'"),
    (("--force", "doctor"), "--force does not apply to the command 'doctor'; it is for plan and --once"),
    (("--wait", "5", "plan"), "--wait does not apply to the command 'plan'"),
    (("--json", "check-config"), "--json does not apply to the command 'check-config'"),
    (("--once", "--wait", "-1"), "argument --wait: must be a finite number of seconds, zero or more, not -1"),
    (("--once", "--wait", "inf"), "argument --wait: must be a finite number of seconds"),
    (("plan", "--bogus"), "unrecognized arguments: --bogus"),
])
def test_options_that_mean_nothing_are_a_usage_error(isolated_host, argv, message):
    cfg = str(setup(isolated_host, IRET))
    result = isolated_host.agent("-c", cfg, *argv)
    assert result.returncode == Exit.USAGE and message in result.stderr, result.stderr
    assert not isolated_host.ledger() and "iret" not in isolated_host.passwd()


def test_a_reader_that_leaves_changes_neither_the_sync_nor_its_exit_status(isolated_host):
    cfg = str(setup(isolated_host, IRET))
    plan = closed_stdout(isolated_host, "-c", cfg, "plan")
    assert plan.returncode == Exit.CHANGES and "Traceback" not in plan.stderr, plan.stderr
    once = closed_stdout(isolated_host, "-c", cfg, "--once", "--json")
    assert once.returncode == Exit.OK and "Traceback" not in once.stderr, once.stderr
    assert {"iret", "acme"} <= set(isolated_host.passwd())
    again = closed_stdout(isolated_host, "-c", cfg, "--once")
    assert again.returncode == Exit.OK, again.stderr
    doctor = closed_stdout(isolated_host, "-c", cfg, "doctor")
    assert doctor.returncode in (Exit.OK, Exit.UNHEALTHY) and "Traceback" not in doctor.stderr, doctor.stderr


def test_verbose_logs_carry_no_credentials(isolated_host, identitystore_endpoint):
    endpoint = identitystore_endpoint
    endpoint.seed(directory(USERS))
    token = "FQoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789"
    path = isolated_host.write_config({
        "source": {"type": "identitystore", "region": endpoint.region, "identity_store_id": "d-1234567890",
                   "endpoint_url": endpoint.url, "max_attempts": 1},
        "run_as": {"expression": "${path:userName}"}})
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    result = isolated_host.agent("-v", "-c", str(path), "plan", env={**env, "AWS_SESSION_TOKEN": token})
    assert result.returncode in (Exit.OK, Exit.CHANGES, Exit.PARTIAL), result.stderr[-2000:]
    assert "DEBUG" in result.stderr and "X-Amz-Security-Token" in result.stderr  # the requests were logged
    for secret in (token, os.environ["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in result.stderr
    assert "Signature=<redacted>" in result.stderr or "Signature" not in result.stderr


def test_a_mistyped_shell_is_a_check_config_warning_and_a_refused_sync(isolated_host):
    cfg = str(setup(isolated_host, IRET, accounts={"shell": "/bin/nosuchshell"}))
    checked = isolated_host.agent("check-config", cfg)
    assert checked.returncode == Exit.OK and "ok" in checked.stdout, checked.stderr
    assert "warning: accounts.shell: /bin/nosuchshell does not exist on this host" in checked.stderr
    once = isolated_host.agent("-c", cfg, "--once")
    assert once.returncode == Exit.REFUSED, once.stdout + once.stderr
    assert "refused: accounts.shell /bin/nosuchshell does not exist on this host" in once.stdout
    assert "iret" not in isolated_host.passwd() and not isolated_host.ledger().get("accounts")
    forced = isolated_host.agent("-c", cfg, "--once", "--force")
    assert forced.returncode == Exit.REFUSED and "iret" not in isolated_host.passwd(), forced.stdout


def test_a_shell_missing_from_etc_shells_is_refused_once_accounts_exist(isolated_host):
    cfg = str(setup(isolated_host, IRET))
    assert isolated_host.agent("-c", cfg, "--once").returncode == Exit.OK
    shell = "/usr/bin/env"  # exists and runs, but is no login shell
    changed = str(setup(isolated_host, IRET, accounts={"shell": shell}))
    plan = isolated_host.agent("-c", changed, "plan")
    assert plan.returncode == Exit.REFUSED and f"accounts.shell {shell} is not listed in /etc/shells" in plan.stdout
    assert isolated_host.passwd()["iret"][6] == "/bin/bash"
    (isolated_host.etc / "shells").write_text((isolated_host.etc / "shells").read_text() + shell + "\n")
    assert isolated_host.agent("-c", changed, "--once").returncode == Exit.OK
    assert isolated_host.passwd()["iret"][6] == shell


def test_check_config_warns_about_a_directory_as_source_path_and_explains_keys(isolated_host):
    cfg = isolated_host.write_config({"source": {"type": "file", "path": str(isolated_host.root)},
                                      "run_as": {"expression": "${path:userName}"}})
    checked = isolated_host.agent("check-config", str(cfg))
    assert checked.returncode == Exit.OK, checked.stderr
    assert f"warning: source.path: {isolated_host.root} is a directory on this host" in checked.stderr
    explained = isolated_host.agent("check-config", "--explain", "accounts.shell")
    assert explained.returncode == Exit.OK and explained.stdout.startswith("accounts.shell  (a string; default /bin/bash)")
    typo = isolated_host.write_config({"source": {"type": "file", "path": "/srv/d.json"},
                                       "run_as": {"expression": "${path:usrName}"}, "acounts": {}})
    bad = isolated_host.agent("check-config", str(typo))
    assert bad.returncode == Exit.CONFIG, bad.stderr
    assert "acounts: unknown key (did you mean accounts?)" in bad.stderr
    assert "(did you mean ${path:userName}?)" in bad.stderr


HOSTILE = "eve\x1b]0;pwned\x07\x1b[2J\u202e\x00"


def test_hostile_directory_values_reach_the_terminal_escaped_and_cut(isolated_host):
    users = IRET + [{"IdentityStoreId": "d-1234567890", "UserId": "id-eve", "UserName": HOSTILE, "UserStatus": "ENABLED"},
                    {"IdentityStoreId": "d-1234567890", "UserId": "id-long", "UserName": "m" * 1_000_000,
                     "UserStatus": "ENABLED"}]
    cfg = str(setup(isolated_host, users, expression="${path:userName}"))
    for argv in (("plan",), ("--once",)):
        result = isolated_host.agent("-c", cfg, *argv)
        assert result.returncode in (Exit.CHANGES, Exit.PARTIAL), result.stderr[-2000:]
        out = result.stdout + result.stderr
        assert "\x1b" not in out and "\x00" not in out and "\u202e" not in out, out[-2000:]
        assert max(len(line) for line in out.splitlines()) < 2000
        assert "eve\\x1b]0;pwned\\x07" in out and "…[+" in out
    plan = isolated_host.agent("-c", cfg, "--json", "plan")
    names = {s["name"] for s in json.loads(plan.stdout)["skips"]}
    assert HOSTILE in names and "m" * 1_000_000 in names  # JSON output stays exact
    identities = {s["identity"] for s in json.loads(plan.stdout)["skips"]}
    assert f"{HOSTILE} (id-eve)" in identities


def test_plan_and_once_agree_on_skipped_identities_and_the_summary_counts_updates(isolated_host):
    bad = [{"IdentityStoreId": "d-1234567890", "UserId": "id-x", "UserName": "bad:name", "UserStatus": "ENABLED"}]
    only_skips = str(setup(isolated_host, IRET[:1] + bad, expression="${path:userName}"))
    assert isolated_host.agent("-c", only_skips, "--once").returncode == Exit.PARTIAL
    plan = isolated_host.agent("-c", only_skips, "plan")
    assert plan.returncode == Exit.PARTIAL and "Plan: no changes, 1 skipped." in plan.stdout, plan.stdout
    once = isolated_host.agent("-c", only_skips, "--once")
    assert once.returncode == Exit.PARTIAL, once.stdout
    cfg = str(setup(isolated_host, IRET))
    assert isolated_host.agent("-c", cfg, "--once").returncode == Exit.OK
    zsh = str(setup(isolated_host, IRET, accounts={"shell": "/bin/sh"}))
    changed = isolated_host.agent("-c", zsh, "--once")
    assert changed.returncode == Exit.OK and "Sync: 0 created, 0 re-enabled, 0 disabled, 2 updated, 0 skipped" in changed.stdout, \
        changed.stdout


@pytest.mark.parametrize("output, message", [
    ("{root}", "--output: {root} is a directory; give the file to write"),
    ("{root}/missing/directory.json", "--output: the directory {root}/missing does not exist"),
    ("s3://ab/snapshot.json", "a bucket name has 3 to 63 characters, 'ab' has 2"),
    ("s3://bucket", "there is no object key after the bucket name"),
])
def test_export_says_why_it_cannot_write_output(isolated_host, output, message):
    cfg = str(setup(isolated_host, IRET))
    root = str(isolated_host.root)
    result = isolated_host.agent("-c", cfg, "export", "-o", output.format(root=root))
    assert result.returncode == Exit.ERROR and message.format(root=root) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (isolated_host.root / "missing").exists()


def test_auto_shared_accounts_holding_several_people_are_warned_about(isolated_host):
    alices = [{"IdentityStoreId": "d-1234567890", "UserId": f"id-{n}", "UserName": f"{n}@example.com",
               "UserStatus": "ENABLED", "Name": {"GivenName": "alice"}} for n in ("alice.a", "alice.b")]
    cfg = str(setup(isolated_host, alices, expression="${path:name.givenName}"))
    plan = isolated_host.agent("-c", cfg, "plan")
    assert plan.returncode == Exit.CHANGES, plan.stderr
    assert "! warning: run_as.account_kind auto made accounts shared" in plan.stdout
    assert "(alice: alice.a@example.com, alice.b@example.com)" in plan.stdout
    chosen = str(isolated_host.write_config({"source": {"type": "file", "path": str(isolated_host.root / "directory.json")},
                                             "run_as": {"expression": "${path:name.givenName}", "account_kind": "shared"}},
                                            name="chosen.yaml"))
    assert "account_kind auto" not in isolated_host.agent("-c", chosen, "plan").stdout


def test_check_config_warns_about_sudo_rules_that_grant_a_shell_or_erase_the_journal(isolated_host):
    rules = [{"identity_store_group": "Ops", "commands": ["/usr/bin/journalctl"], "nopasswd": True},
             {"identity_store_group": "Ops", "commands": ["/usr/bin/journalctl --no-pager -u nginx"], "nopasswd": True}]
    cfg = str(setup(isolated_host, IRET, sudo={"rules": rules}))
    checked = isolated_host.agent("check-config", cfg)
    assert checked.returncode == Exit.OK, checked.stderr
    assert "warning: sudo.rules[0]: /usr/bin/journalctl with any arguments" in checked.stderr
    assert "journalctl --vacuum-time=1s deletes the session records" in checked.stderr
    assert "sudo.rules[1]" not in checked.stderr


def test_journal_records_carry_directory_values_escaped_and_cut(isolated_host):
    if not os.path.exists("/lib/systemd/systemd-journald"):
        pytest.skip("needs systemd-journald")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "agent")])}
    proc = isolated_host.run([sys.executable, "-m", "tests.hosts.journal_hostile"], env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["where"] == "journal" and len(report["records"]) == 1, report
    record = report["records"][0]
    assert record["MESSAGE"] == "sync partial: skip eve\\x1b]0;pwned\\x07\\x1b[2J\\u202e\\x00\\nFORGED_FIELD=1"
    assert "FORGED_FIELD" not in record
    user = record["RUNAS_IDENTITY_USER"]
    assert isinstance(user, str) and user.startswith("eve\\x1b]0;pwned") and len(user) < 4200 and "…[+" in user
