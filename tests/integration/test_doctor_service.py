"""`runas-agent doctor` on a booted host: runas-agent installed as a service in a Debian container
with systemd as PID 1, a stand-in SSM agent enabled as a unit, the service's own syncs in the real
journal. The doctor must read the last sync the service journaled and see the agent's unit running."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.hosts.fixtures import container_factory, container_rootfs  # noqa: E402,F401,F811
from tests.hosts.service import AWS_ENV, MESSAGE_SYNC, PORT, UNIT, Host, binds, config, install  # noqa: E402

pytestmark = pytest.mark.container


@pytest.fixture
def host(container_factory, wheelhouse) -> Host:  # noqa: F811
    return install(container_factory(bind_ro=binds(wheelhouse)))


def doctor(host: Host) -> tuple[int, dict]:
    env = dict(AWS_ENV, AWS_ENDPOINT_URL_SSM=f"http://127.0.0.1:{PORT}", AWS_ENDPOINT_URL_STS=f"http://127.0.0.1:{PORT}")
    proc = host.sh("runas-agent", "doctor", "--json", "--ssm-region", "eu-west-1", check=False, env=env, timeout=120)
    report = json.loads(proc.stdout)
    return proc.returncode, {c["name"]: c for c in report["checks"]}


def test_doctor_on_a_booted_host_reads_the_service_journal(host):
    # A stand-in SSM agent where the deb puts it, enabled as a unit like the real one.
    host.sh("cp", "/bin/sleep", "/usr/bin/amazon-ssm-agent")
    host.ct.write_file("/etc/systemd/system/amazon-ssm-agent.service",
                       "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/usr/bin/amazon-ssm-agent infinity\n")
    host.sh("systemctl", "daemon-reload")
    host.sh("systemctl", "start", "amazon-ssm-agent.service")
    host.write_config(config())
    rc, checks = doctor(host)
    assert checks["last-sync"]["status"] == "warning"
    assert "no sync is recorded in the journal" in checks["last-sync"]["summary"]

    host.sh("systemctl", "start", UNIT, timeout=90)
    host.wait_for(lambda: host.records(f"MESSAGE_ID={MESSAGE_SYNC}"), what="the first sync record")
    rc, checks = doctor(host)
    status = {name: c["status"] for name, c in checks.items()}
    # This endpoint serves the Identity Store only: sso-admin and SSM answer ValidationException,
    # which the doctor reports as links it could not verify.
    assert status.pop("abac") == "warning"
    assert status.pop("session-preferences") == "warning"
    assert status.pop("session-documents") == "skipped"  # it reviews the preferences it could not read
    assert status.pop("allowed-names") == "warning"  # the service's configuration leaves it unset
    assert set(status.values()) == {"ok"}, checks
    assert rc == 0
    assert checks["last-sync"]["summary"].startswith("last sync ")
    assert ": ok (3 created" in checks["last-sync"]["summary"]
    assert "/etc/systemd/system/amazon-ssm-agent.service" in checks["ssm-agent"]["summary"]
    assert checks["accounts"]["summary"].startswith("runas-agent owns 3 accounts (3 active); 0 conflicts")

    host.sh("systemctl", "stop", "amazon-ssm-agent.service")
    rc, checks = doctor(host)
    assert checks["ssm-agent"]["status"] == "failed"
    assert rc == 5
