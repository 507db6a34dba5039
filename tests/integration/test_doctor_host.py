"""`runas-agent doctor`, the host links, inside isolated hosts (a private copy of /etc where real
useradd, visudo and pwd run), with the AWS side on the local endpoint: the all-good host after a real
sync, then the sudoers tree broken, ssm-user's blanket sudo, an ignored drop-in, the SSM agent
stopped, and a conflicting account, each on its own. Also the CLI itself, both output forms."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from runas_agent.exitcodes import Exit
from tests.endpoint import ssm_documents, ssoadmin_abac
from tests.hosts.namespace import REPO
from tests.integration.test_doctor_links import STORE, USERS, directory

pytest_plugins = ["tests.endpoint.fixtures"]
pytestmark = pytest.mark.host
OK, WARNING, FAILED = "ok", "warning", "failed"


@pytest.fixture(autouse=True)
def _need_sudo():
    if not shutil.which("visudo"):
        if os.environ.get("CI"):
            pytest.fail("doctor host tests need visudo (apt-get install sudo)")
        pytest.skip("doctor host tests need visudo (apt-get install sudo)")


class Staged:
    """An isolated host, the endpoint in the all-good state, and a running stand-in SSM agent."""

    def __init__(self, host, endpoint):
        import boto3

        self.host = host
        self.endpoint = endpoint
        self.region = endpoint.region
        endpoint.seed(directory(USERS))
        ssoadmin_abac.set_attributes(self.region, {"SSMSessionRunAs": "${path:userName}"})
        self.ssm = boto3.client("ssm", endpoint_url=endpoint.url, region_name=self.region)
        ssm_documents.put_preferences(self.ssm, ssm_documents.preferences_content(True, "ops"))
        host.run(["useradd", "--no-create-home", "ops"])
        # A stand-in amazon-ssm-agent: a copy of sleep under that name, so the process table shows it.
        bin_dir = host.root / "usr-bin"
        bin_dir.mkdir()
        self.agent_binary = bin_dir / "amazon-ssm-agent"
        shutil.copy("/bin/sleep", self.agent_binary)
        self.units = host.root / "units"
        self.units.mkdir()
        (self.units / "amazon-ssm-agent.service").write_text("[Service]\nExecStart=/usr/bin/amazon-ssm-agent\n")
        self.agent = subprocess.Popen([str(self.agent_binary), "600"])
        self.last_sync = {"SYNC_RESULT": "ok", "SYNC_CREATED": "2", "REALTIME": time.time() - 30}
        self.config(**{})

    def config(self, **sudo):
        self.config_path = self.host.write_config({
            "source": {"type": "identitystore", "region": self.region, "identity_store_id": STORE,
                       "endpoint_url": self.endpoint.url, "max_attempts": 1, "read_deadline": 30},
            "run_as": {"expression": "${path:userName}"},
            "accounts": {"allowed_names": "^[a-z][a-z0-9._-]*$"},
            "sudo": sudo,
        })
        return self.config_path

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "agent"), env.get("PYTHONPATH", "")])
        return env

    def sync(self):
        result = self.host.agent("--config", str(self.config_path), "--once")
        assert result.returncode == Exit.OK, result.stdout + result.stderr
        return result

    def doctor(self, processes_of_uids=(), **probe) -> dict:
        spec = {"config": str(self.config_path), "ssm_region": self.region, "last_sync": self.last_sync,
                "processes_under": str(self.host.root), "processes_of_uids": list(processes_of_uids),
                "probe": {"agent_binaries": [str(self.agent_binary)], "snap_dir": str(self.host.root / "no-snap"),
                          "unit_dirs": [str(self.units)], **probe}}
        path = self.host.root / "doctor-spec.json"
        path.write_text(json.dumps(spec))
        proc = self.host.run([sys.executable, "-m", "tests.hosts.doctor_probe", str(path)], env=self.env(), check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(proc.stdout)
        self.exit = report["exit"]
        return {c["name"]: c for c in report["checks"]}

    def stop(self):
        self.agent.kill()
        self.agent.wait()


@pytest.fixture
def staged(isolated_host, identitystore_endpoint, monkeypatch):
    ssm_documents.reset(identitystore_endpoint.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", identitystore_endpoint.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", identitystore_endpoint.url)
    stage = Staged(isolated_host, identitystore_endpoint)
    yield stage
    stage.stop()
    ssm_documents.reset(identitystore_endpoint.region)


def statuses(checks: dict) -> dict:
    return {name: c["status"] for name, c in checks.items()}


def assert_only(checks: dict, broken: dict[str, str]) -> None:
    wrong = {name: (c["status"], c["summary"]) for name, c in checks.items() if c["status"] != broken.get(name, OK)}
    assert not wrong, wrong


def test_all_good_after_a_real_sync(staged):
    staged.sync()
    checks = staged.doctor()
    assert_only(checks, {})
    assert staged.exit == Exit.OK
    assert checks["accounts"]["summary"] == ("runas-agent owns 2 accounts (2 active); 0 conflicts; "
                                             "the next sync would make 0 changes")
    assert "passes `visudo -c`" in checks["sudoers"]["summary"]
    assert "running (pid " + str(staged.agent.pid) in checks["ssm-agent"]["summary"]
    assert "default user ops exists on this host" in checks["session-preferences"]["summary"]


def test_a_person_removed_from_the_directory_shows_as_a_disabled_owned_account(staged):
    staged.sync()
    staged.endpoint.seed(directory(USERS[:1]))
    ssoadmin_abac.set_attributes(staged.region, {"SSMSessionRunAs": "${path:userName}"})
    checks = staged.doctor()
    assert checks["accounts"]["summary"] == ("runas-agent owns 2 accounts (2 active); 0 conflicts; "
                                             "the next sync would make 1 change")
    staged.sync()
    checks = staged.doctor()
    assert_only(checks, {})
    assert checks["accounts"]["summary"] == ("runas-agent owns 2 accounts (1 active, 1 disabled); 0 conflicts; "
                                             "the next sync would make 0 changes")


def test_a_broken_sudoers_tree(staged):
    staged.sync()
    bad = staged.host.etc / "sudoers.d" / "zz-broken"
    bad.write_text("this is not sudoers\n")
    os.chmod(bad, 0o440)
    checks = staged.doctor()
    assert_only(checks, {"sudoers": FAILED})
    assert staged.exit == Exit.UNHEALTHY
    assert any("zz-broken" in line for line in checks["sudoers"]["details"]), checks["sudoers"]
    assert "sudo refuses to run for everyone" in checks["sudoers"]["summary"]


def test_a_drop_in_sudo_never_reads(staged):
    staged.sync()
    dotted = staged.host.etc / "sudoers.d" / "john.doe"
    dotted.write_text("john ALL=(ALL) ALL\n")
    os.chmod(dotted, 0o440)
    checks = staged.doctor()
    assert_only(checks, {"sudoers": WARNING})
    assert checks["sudoers"]["details"] == [
        "sudo ignores /etc/sudoers.d/john.doe: #includedir skips names containing '.' or ending in '~'"]


def test_ssm_user_blanket_sudo_then_removed_by_a_sync(staged):
    blanket = staged.host.etc / "sudoers.d" / "ssm-agent-users"
    blanket.write_text("# User rules for ssm-user\nssm-user ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(blanket, 0o440)
    staged.sync()
    checks = staged.doctor()
    assert_only(checks, {"ssm-user-sudo": WARNING})
    assert "ssm-user ALL=(ALL) NOPASSWD:ALL" in checks["ssm-user-sudo"]["summary"]
    assert "sudo.remove_ssm_user_blanket: true" in checks["ssm-user-sudo"]["remedy"]
    staged.config(remove_ssm_user_blanket=True)
    checks = staged.doctor()
    assert "the next sync removes it" in checks["ssm-user-sudo"]["summary"]
    assert blanket.exists()  # the doctor changes nothing
    staged.sync()
    assert not blanket.exists()
    checks = staged.doctor()
    assert_only(checks, {})


def test_ssm_agent_installed_but_stopped(staged):
    staged.sync()
    staged.stop()
    checks = staged.doctor()
    assert_only(checks, {"ssm-agent": FAILED})
    assert "installed (deb/rpm) but not running" in checks["ssm-agent"]["summary"]
    assert "systemctl enable --now amazon-ssm-agent" in checks["ssm-agent"]["remedy"]
    checks = staged.doctor(agent_binaries=[], snap_dir=str(staged.host.root / "nothing"))
    assert "not installed" in checks["ssm-agent"]["summary"]


def test_a_snap_install_is_recognised(staged):
    staged.sync()
    snap = staged.host.root / "snap-amazon-ssm-agent"
    (snap / "current").mkdir(parents=True)
    checks = staged.doctor(agent_binaries=[], snap_dir=str(snap))
    assert checks["ssm-agent"]["status"] == OK
    assert "installed (snap) and running" in checks["ssm-agent"]["summary"]


def test_an_account_made_by_hand_conflicts(staged):
    staged.host.run(["useradd", "--no-create-home", "bob"])
    result = staged.host.agent("--config", str(staged.config_path), "--once")
    assert result.returncode == Exit.PARTIAL, result.stdout + result.stderr
    staged.last_sync = {"SYNC_RESULT": "partial", "SYNC_CREATED": "1", "SYNC_SKIPPED": "1", "REALTIME": time.time() - 5}
    checks = staged.doctor()
    assert_only(checks, {"accounts": WARNING, "last-sync": WARNING})
    assert checks["accounts"]["summary"].startswith("runas-agent owns 1 account (1 active); 1 conflict;")
    assert "an existing account named 'bob'" in checks["accounts"]["details"][0]


def test_the_cli_in_both_forms(staged):
    """The real command with the real probe: this machine has no SSM agent installed (unless it has)."""
    staged.sync()
    installed = os.path.exists("/usr/bin/amazon-ssm-agent") or os.path.isdir("/snap/amazon-ssm-agent")
    result = staged.host.agent("--config", str(staged.config_path), "doctor", "--json", "--ssm-region", staged.region)
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["ssm-agent"]["status"] == (OK if installed else FAILED)
    assert checks["sudoers"]["status"] == OK
    assert checks["identities"]["status"] == OK
    assert report["healthy"] == (result.returncode == Exit.OK)
    assert report["counts"]["failed"] == sum(1 for c in report["checks"] if c["status"] == FAILED)
    assert result.returncode == (Exit.OK if report["counts"]["failed"] == 0 else Exit.UNHEALTHY)
    human = staged.host.agent("--config", str(staged.config_path), "doctor", "--ssm-region", staged.region)
    assert human.returncode == result.returncode
    lines = human.stdout.splitlines()
    marks = [line for line in lines if line.startswith("[")]
    assert len(marks) == len(report["checks"])
    for line, check in zip(marks, report["checks"]):
        assert line.split("]", 1)[1].split()[0] == check["name"]
    assert lines[-1].startswith(f"{len(report['checks'])} checks: {report['counts']['ok']} ok")


@pytest.mark.parametrize("kinds, status, words", [
    (["failed", "ok"], OK, "ok (2 created, 0 enabled, 0 disabled, 0 skipped, 0 failed)"),
    (["ok", "failed", "abandoned"], FAILED, "failed: Identity Store d-1234567890: ListUsers page 1: access denied"),
    (["ok", "partial"], WARNING, "partial (2 created, 0 enabled, 0 disabled, 1 skipped, 0 failed)"),
])
def test_the_last_sync_is_read_from_the_journal_the_daemon_writes(isolated_host, kinds, status, words):
    if not os.path.exists("/lib/systemd/systemd-journald"):
        pytest.skip("needs systemd-journald")
    cfg = isolated_host.write_config({"source": {"type": "file", "path": "/nonexistent.json"},
                                      "run_as": {"expression": "${path:userName}"}})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "agent"), env.get("PYTHONPATH", "")])
    proc = isolated_host.run([sys.executable, "-m", "tests.hosts.doctor_journal", str(cfg), *kinds], env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["record"]["SYNC_RESULT"] == [k for k in kinds if k != "abandoned"][-1]
    check = report["check"]
    assert check["status"] == status, check
    assert words in check["summary"], check
    assert check["summary"].startswith("last sync 0s ago") or check["summary"].startswith("last sync 1s ago")


def test_a_long_first_sync_under_the_daemon_journals_its_progress(isolated_host):
    """The real daemon, the real sync and a real journald: while it makes homes, progress records
    (their own MESSAGE_ID) say how far it is, and the unit's status line says the same."""
    if not os.path.exists("/lib/systemd/systemd-journald"):
        pytest.skip("needs systemd-journald")
    people = [{"IdentityStoreId": "d-1234567890", "UserId": f"id-{i:04d}", "UserName": f"p{i:04d}",
               "DisplayName": f"P {i}", "UserStatus": "ENABLED"} for i in range(300)]
    path = isolated_host.write_directory({"IdentityStoreId": "d-1234567890", "Users": people, "Groups": [],
                                          "GroupMemberships": []})
    cfg = isolated_host.write_config({"source": {"type": "file", "path": str(path)},
                                      "run_as": {"expression": "${path:userName}"}})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "agent"), env.get("PYTHONPATH", "")])
    proc = isolated_host.run([sys.executable, "-m", "tests.hosts.progress_journal", str(cfg), "0.001"], env=env,
                             check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    progress = [r for r in lines if r.get("MESSAGE_ID") == "96a5c843b4aa4938b15764e96e70640f"]
    assert progress, lines
    homes = [r for r in progress if r["SYNC_PHASE"] == "making homes"]
    assert homes and {r["SYNC_TOTAL"] for r in homes} == {"300"}
    done = [int(r["SYNC_DONE"]) for r in homes]
    assert done == sorted(done) and 0 <= done[0] and done[-1] <= 300
    assert homes[0]["MESSAGE"] == f"sync in progress: making homes, {done[0]} of 300"
    (sync,) = [r for r in lines if r.get("MESSAGE_ID") == "0e6032291cf94883be9c2a9b28aa4889"]
    assert sync["SYNC_CREATED"] == "300"
    assert any(n.startswith("STATUS=sync in progress: making homes") for n in lines[-1]["notes"])
