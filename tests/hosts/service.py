"""runas-agent installed as a service in a booted container (tests/hosts/container.py), the way a
package installs it: a venv over the distro's python3-systemd, wheels only, no network; the unit
from systemd/ unchanged, test-only settings in a drop-in; and a local Identity Store endpoint whose
speed the caller controls (tests/hosts/slow_identitystore.py). Used by the service tests and by
bench/bench_idle_service.py."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import yaml

from tests.hosts.container import BootedContainer

REPO = Path(__file__).resolve().parents[2]

UNIT = "runas-agent.service"
PORT = 8400
STORE_ID = "d-1234567890"
CONTROL = "/run/test-ids/control.json"
DIRECTORY = "/run/test-ids/directory.json"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true"}
MESSAGE_SYNC = "0e6032291cf94883be9c2a9b28aa4889"
MESSAGE_SYNC_FAILED = "3c5c59abeda54efe88465408b9f48471"
MESSAGE_RELOAD = "5a92e7e8eb604a3199c154af424f3c59"


# -- fixtures and helpers ----------------------------------------------------------------------------


def directory(names: list[str], disabled: tuple[str, ...] = ()) -> dict:
    users = [{"UserId": str(uuid.uuid5(uuid.NAMESPACE_DNS, n)), "UserName": n, "IdentityStoreId": STORE_ID,
              "UserStatus": "DISABLED" if n in disabled else "ENABLED", "DisplayName": n.title()} for n in names]
    return {"Users": users, "Groups": [], "GroupMemberships": []}


def config(**overrides) -> dict:
    source = {"type": "identitystore", "region": "eu-west-1", "identity_store_id": STORE_ID,
              "endpoint_url": f"http://127.0.0.1:{PORT}", "max_attempts": 2, "read_timeout": 10, "read_deadline": 60}
    source.update(overrides.pop("source", {}))
    data = {"source": source, "run_as": {"expression": "${path:userName}"},
            "daemon": {"interval_seconds": 3600, "jitter_seconds": 0, "backoff_initial_seconds": 1,
                       "backoff_max_seconds": 2}}
    data.update(overrides)
    return data


class Host:
    """The container with runas-agent installed."""

    def __init__(self, ct: BootedContainer):
        self.ct = ct

    def sh(self, *argv: str, check: bool = True, timeout: float = 60, env: dict | None = None):
        return self.ct.exec(list(argv), check=check, timeout=timeout, env=env)

    def write_config(self, data: dict, path: str = "/etc/runas-agent/config.yaml") -> None:
        self.ct.write_file(path, yaml.safe_dump(data), mode=0o600)

    def set_directory(self, doc: dict) -> None:
        self.ct.write_file(DIRECTORY, json.dumps(doc))

    def control(self, **settings) -> None:
        self.ct.write_file(CONTROL, json.dumps(settings))

    def drop_in(self, text: str) -> None:
        self.ct.write_file(f"/etc/systemd/system/{UNIT}.d/50-test.conf", text)
        self.sh("systemctl", "daemon-reload")

    def show(self, *props: str) -> dict[str, str]:
        out = self.sh("systemctl", "show", UNIT, *[f"--property={p}" for p in props]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def state(self) -> str:
        return self.show("ActiveState")["ActiveState"]

    def records(self, *matches: str) -> list[dict]:
        out = self.sh("journalctl", "--no-pager", "-o", "json", f"_SYSTEMD_UNIT={UNIT}", *matches).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_records(self, *matches: str, count: int = 1, timeout: float = 30) -> list[dict]:
        """The unit's journal records matching, once there are at least `count` (journald receives
        them asynchronously: a record sent before READY=1 may be stored after the unit is active)."""
        def enough() -> list[dict] | None:
            records = self.records(*matches)
            return records if len(records) >= count else None

        return self.wait_for(enough, timeout=timeout, what=f"{count} journal record(s) {' '.join(matches)}")

    def wait_for(self, predicate, timeout: float = 30, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                log = self.sh("journalctl", "--no-pager", "-u", UNIT, "-n", "60", check=False).stdout
                raise AssertionError(f"timed out waiting for {what}; journal:\n{log}")
            time.sleep(0.1)

    def accounts(self, prefix: str = "user") -> dict[str, list[str]]:
        out = self.sh("getent", "passwd").stdout
        rows = [line.split(":") for line in out.splitlines()]
        return {r[0]: r for r in rows if r[0].startswith(prefix)}


def binds(wheelhouse: Path) -> list[tuple[str, str]]:
    """bind_ro entries of a container for `install`."""
    return [(str(wheelhouse), "/opt/wheels"),
            (str(REPO / "tests/hosts/slow_identitystore.py"), "/opt/test/slow_identitystore.py")]


def install(ct: BootedContainer, page_size: int = 5) -> Host:
    """Install runas-agent and its unit into a container booted with `binds(...)`, and start the
    local Identity Store endpoint (serving user001..user003). The service is not started."""
    ct.wait_for_system_running()
    wheels = sorted(ct.exec(["ls", "/opt/wheels"]).stdout.split())
    ct.exec(["python3", "-m", "venv", "--without-pip", "--system-site-packages", "/opt/runas-agent/venv"])
    ct.exec(["python3", "-m", "pip", "--python", "/opt/runas-agent/venv/bin/python", "install", "--quiet",
             "--no-index", "--no-deps", *[f"/opt/wheels/{w}" for w in wheels]], timeout=300)
    ct.exec(["ln", "-sf", "/opt/runas-agent/venv/bin/runas-agent", "/usr/bin/runas-agent"])
    ct.copy_in(REPO / "systemd" / UNIT, f"/etc/systemd/system/{UNIT}")
    h = Host(ct)
    env = "\n".join(f"Environment={k}={v}" for k, v in AWS_ENV.items())
    h.drop_in(f"[Service]\n{env}\nRestartSec=1s\n")
    h.control()
    h.set_directory(directory(["user001", "user002", "user003"]))
    h.sh("systemd-run", "--unit=test-ids", "--property=Type=exec", "/usr/bin/python3",
         "/opt/test/slow_identitystore.py", str(PORT), DIRECTORY, CONTROL, str(page_size))
    h.wait_for(lambda: h.sh("python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {PORT}), 1)",
                            check=False).returncode == 0, what="the test endpoint")
    return h


