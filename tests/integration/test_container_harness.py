"""Tests of the booted-container harness itself (tests/hosts/container.py).

They boot real bookworm containers with systemd as PID 1 (root needed;
skipped outside CI when the tools are missing, failing under CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.hosts import container as harness
from tests.hosts.container import BootedContainer
from tests.hosts.fixtures import (  # noqa: F401  (fixtures used by name)
    booted_container,
    container_factory,
    container_rootfs,
    running_in_ci,
)

pytestmark = pytest.mark.container

_REPO = str(Path(__file__).resolve().parents[2])


def _journal_records(ct: BootedContainer, *matches: str, timeout: float = 10.0) -> list[dict]:
    """``journalctl -o json MATCH...`` in the container, polled until non-empty."""
    deadline = time.monotonic() + timeout
    while True:
        out = ct.exec(["journalctl", "--no-pager", "-o", "json", *matches]).stdout
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        if records or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def _netns_names() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _nspawn_pids_for(name: str) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"systemd-nspawn") and name.encode() in argv:
                pids.append(int(entry.name))
    return pids


def _assert_nothing_left(name: str, netns: str, host_if: str, pids: list[int],
                         cgroups: list[Path]) -> None:
    assert netns not in _netns_names()
    assert not Path("/run/netns", netns).exists()
    assert not Path("/sys/class/net", host_if).exists(), f"veth {host_if} left behind"
    assert _nspawn_pids_for(name) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z", \
            f"process {pid} of {name} still running"
    for cg in cgroups:
        assert not cg.exists(), f"cgroup {cg} left behind"
    assert not (harness.NSPAWN_PROPAGATE / name).exists()


# ---------------------------------------------------------------------------


def test_boots_to_running_with_systemd_as_pid1(booted_container: BootedContainer):
    ct = booted_container
    assert ct.wait_for_system_running(timeout=30) in ("running", "degraded")
    state = ct.exec(["systemctl", "is-system-running"], check=False).stdout.strip()
    assert state in ("running", "degraded"), ct.exec(["systemctl", "--failed"], check=False).stdout
    assert ct.exec(["readlink", "/proc/1/exe"]).stdout.strip().endswith("/systemd")
    version = ct.exec(["systemctl", "--version"]).stdout.split()[1]
    assert version == "252"
    assert "bookworm" in ct.exec(["cat", "/etc/os-release"]).stdout
    # /etc/hosts knows the host name: nothing waits on DNS
    assert ct.exec(["hostname"]).stdout.strip() == harness.CONTAINER_HOSTNAME
    hosts = ct.exec(["getent", "hosts", harness.CONTAINER_HOSTNAME]).stdout
    assert hosts.split()[0] == "127.0.1.1"
    assert ct.exec(["cat", "/etc/resolv.conf"]).stdout == ""
    # its own network namespace, reachable only through our /30
    addrs = ct.exec(["ip", "-4", "-o", "addr", "show"]).stdout
    assert f"{ct.ip}/30" in addrs
    assert "default" not in ct.exec(["ip", "route", "show"]).stdout
    # tools the later tests (service, .deb, Ansible) rely on
    ct.exec(["python3", "-c", "import systemd.journal, systemd.daemon, venv"])
    ct.exec(["sudo", "--version"])
    ct.exec(["python3", "-m", "pip", "--version"])


def test_exec_copy_in_and_errors(booted_container: BootedContainer, tmp_path: Path):
    ct = booted_container
    tag = uuid.uuid4().hex[:8]
    assert ct.exec(["sh", "-c", "echo $FOO"], env={"FOO": tag}).stdout.strip() == tag
    assert ct.exec(["cat"], input=b"stdin-" + tag.encode(), text=False).stdout == \
        b"stdin-" + tag.encode()
    with pytest.raises(subprocess.CalledProcessError) as err:
        ct.exec(["sh", "-c", "echo oops >&2; exit 3"])
    assert err.value.returncode == 3 and "oops" in str(err.value)
    assert ct.exec(["false"], check=False).returncode == 1
    with pytest.raises(subprocess.TimeoutExpired):
        ct.exec(["sleep", "30"], timeout=0.5)
    with pytest.raises(TypeError):
        ct.exec("echo not-a-list")  # type: ignore[arg-type]

    # a file and a directory tree
    (tmp_path / "one.txt").write_text("one " + tag)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "two.txt").write_text("two " + tag)
    ct.copy_in(tmp_path / "one.txt", f"/opt/harness-{tag}/one.txt", mode=0o600)
    ct.copy_in(tree, f"/opt/harness-{tag}/tree")
    assert ct.read_file(f"/opt/harness-{tag}/one.txt") == f"one {tag}".encode()
    assert ct.read_file(f"/opt/harness-{tag}/tree/sub/two.txt") == f"two {tag}".encode()
    st = ct.exec(["stat", "-c", "%a %U:%G", f"/opt/harness-{tag}/one.txt"]).stdout.split()
    assert st == ["600", "root:root"]
    ct.write_file(f"/opt/harness-{tag}/w.txt", "written", mode=0o640)
    assert ct.exec(["stat", "-c", "%a", f"/opt/harness-{tag}/w.txt"]).stdout.strip() == "640"
    # nothing reached the cached root tree (volatile overlay)
    assert not (ct.root / f"opt/harness-{tag}").exists()


def test_journald_records_with_custom_fields(booted_container: BootedContainer):
    ct = booted_container
    tag = uuid.uuid4().hex

    # systemd-cat: the identifier is the field it lets one set
    ct.exec(["systemd-cat", "-t", f"harness-{tag}", "-p", "warning", "echo", "hello " + tag])
    recs = _journal_records(ct, f"SYSLOG_IDENTIFIER=harness-{tag}")
    assert [r["MESSAGE"] for r in recs] == [f"hello {tag}"]
    assert recs[0]["PRIORITY"] == "4"

    # a custom field (systemd-cat can't set one; logger --journald can)
    ct.exec(["logger", "--journald"],
            input=f"MESSAGE=custom {tag}\nRUNAS_HARNESS_FIELD={tag}\nPRIORITY=6\n")
    recs = _journal_records(ct, f"RUNAS_HARNESS_FIELD={tag}")
    assert len(recs) == 1 and recs[0]["MESSAGE"] == f"custom {tag}"

    # python3-systemd, as the agent will use it, from inside a unit
    ct.exec(["systemd-run", "--wait", "--quiet", "--unit", f"harness-journal-{tag[:8]}",
             "python3", "-c",
             "import sys; from systemd import journal; "
             "journal.send('from python', RUNAS_HARNESS_PY=sys.argv[1])", tag])
    recs = _journal_records(ct, f"RUNAS_HARNESS_PY={tag}")
    assert len(recs) == 1
    assert recs[0]["MESSAGE"] == "from python"
    assert recs[0]["_SYSTEMD_UNIT"] == f"harness-journal-{tag[:8]}.service"


NOTIFY_SCRIPT = textwrap.dedent("""\
    import os, sys, time
    from systemd import daemon
    flag = sys.argv[1]
    daemon.notify("READY=1")
    while True:
        if os.path.exists(flag):
            os.unlink(flag)          # hang once: the restarted process is healthy
            daemon.notify("STATUS=hanging")
            time.sleep(3600)
        daemon.notify("WATCHDOG=1")
        time.sleep(0.2)
""")


def test_notify_unit_with_watchdog(booted_container: BootedContainer):
    ct = booted_container
    unit = f"harness-notify-{uuid.uuid4().hex[:8]}"
    flag = f"/run/{unit}.hang"
    ct.write_file(f"/usr/local/lib/{unit}.py", NOTIFY_SCRIPT)
    ct.write_file(f"/etc/systemd/system/{unit}.service", textwrap.dedent(f"""\
        [Unit]
        Description=harness Type=notify watchdog test

        [Service]
        Type=notify
        ExecStart=/usr/bin/python3 /usr/local/lib/{unit}.py {flag}
        WatchdogSec=1s
        Restart=on-failure
        RestartSec=100ms
        LimitCORE=0
        """))
    ct.exec(["systemctl", "daemon-reload"])
    ct.exec(["systemctl", "start", f"{unit}.service"], timeout=30)  # returns at READY=1

    def show() -> dict:
        out = ct.exec(["systemctl", "show", f"{unit}.service", "-p",
                       "ActiveState,SubState,Type,WatchdogUSec,NRestarts,MainPID"]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    props = show()
    assert ct.exec(["systemctl", "is-active", f"{unit}.service"]).stdout.strip() == "active"
    assert props["Type"] == "notify" and props["WatchdogUSec"] == "1s"
    time.sleep(1.5)  # longer than WatchdogSec: the pings keep it alive
    props = show()
    assert props["ActiveState"] == "active" and props["NRestarts"] == "0"
    first_pid = props["MainPID"]

    # a hung service is killed by the watchdog (SIGABRT) and restarted
    ct.exec(["touch", flag])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        props = show()
        if props["NRestarts"] != "0" and props["ActiveState"] == "active":
            break
        time.sleep(0.2)
    assert props["NRestarts"] == "1" and props["ActiveState"] == "active", props
    assert props["MainPID"] != first_pid
    msgs = [r.get("MESSAGE", "") for r in _journal_records(ct, f"UNIT={unit}.service")]
    assert any("Watchdog timeout" in m for m in msgs), msgs
    assert any("SIGABRT" in m or "ABRT" in m for m in msgs), msgs
    ct.exec(["systemctl", "stop", f"{unit}.service"])


def test_ssh_with_paramiko(booted_container: BootedContainer):
    try:
        import paramiko  # noqa: F401
    except ImportError:
        if running_in_ci():
            pytest.fail("paramiko is a test dependency: pip install paramiko", pytrace=False)
        pytest.skip("paramiko not installed (pip install paramiko)")
    ct = booted_container
    client = ct.paramiko_client()
    try:
        _stdin, stdout, _stderr = client.exec_command(
            "id -u; hostname; systemctl is-system-running; echo $SSH_CONNECTION", timeout=20)
        lines = stdout.read().decode().split("\n")
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()
    assert lines[0] == "0"
    assert lines[1] == harness.CONTAINER_HOSTNAME
    assert lines[2] in ("running", "degraded")
    assert lines[3].split()[0] == ct.host_ip and lines[3].split()[2] == ct.ip


def test_ssh_with_openssh_client(booted_container: BootedContainer):
    proc = subprocess.run(booted_container.ssh_argv("echo", "ok-from-ssh"),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok-from-ssh"


def test_two_containers_are_isolated(booted_container: BootedContainer, container_factory):
    other = container_factory(wait_ssh=False)
    assert other.ip != booted_container.ip and other.network != booted_container.network
    assert other.wait_for_system_running() in ("running", "degraded")
    marker = f"/run/harness-{uuid.uuid4().hex[:8]}"
    other.exec(["touch", marker])
    assert booted_container.exec(["test", "-e", marker], check=False).returncode == 1
    # own cgroup trees: one container's systemd cannot touch the other's units
    cg_a = booted_container.exec(["cat", "/proc/1/cgroup"]).stdout
    assert Path(f"/proc/{other.pid}/cgroup").read_text().count(other.name) >= 1
    assert Path(f"/proc/{booted_container.pid}/cgroup").read_text().count(other.name) == 0
    assert "init.scope" in cg_a


def test_bind_ro_from_the_caller(container_factory, tmp_path: Path):
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "marker.txt").write_text("wheel")
    ct = container_factory(bind_ro=[(wheelhouse, "/opt/wheelhouse")], wait_ssh=False)
    assert ct.read_file("/opt/wheelhouse/marker.txt") == b"wheel"
    assert ct.exec(["touch", "/opt/wheelhouse/x"], check=False).returncode != 0
    assert not (wheelhouse / "x").exists()


def test_poweroff_leaves_nothing_behind(container_factory):
    ct = container_factory()
    name, netns, host_if = ct.name, ct.netns, ct.host_ifname
    pids = [ct.nspawn.pid, ct.pid]
    cgroups = list(ct._cgroups)
    assert netns in _netns_names() and Path("/sys/class/net", host_if).exists()
    assert all(cg.is_dir() for cg in cgroups)
    t0 = time.monotonic()
    assert ct.poweroff() is True
    elapsed = time.monotonic() - t0
    assert ct.clean_shutdown is True and not ct.running
    assert elapsed < 20, f"poweroff took {elapsed:.1f} s"
    _assert_nothing_left(name, netns, host_if, pids, cgroups)
    ct.close()  # idempotent
    with pytest.raises(harness.ContainerError):
        ct.exec(["true"])


def test_nspawn_killed_from_outside_is_still_cleaned(container_factory):
    ct = container_factory(wait_ssh=False)
    name, netns, host_if, pids, cgroups = (ct.name, ct.netns, ct.host_ifname,
                                          [ct.nspawn.pid, ct.pid], list(ct._cgroups))
    os.kill(ct.nspawn.pid, 9)   # leaves the container's PID 1 orphaned
    ct.nspawn.wait(timeout=10)
    ct.close()
    assert ct.clean_shutdown is False
    _assert_nothing_left(name, netns, host_if, pids, cgroups)


def test_killed_test_process_is_cleaned_up_by_the_next_run(container_rootfs: Path, tmp_path: Path):
    """A harness process killed with SIGKILL: the container powers itself off
    (parent-death signal) and cleanup_stale() removes the namespace and cgroups."""
    info = tmp_path / "info.json"
    child = textwrap.dedent(f"""\
        import json, os, signal, sys
        sys.path.insert(0, {_REPO!r})
        from tests.hosts.container import BootedContainer
        ct = BootedContainer(root={str(container_rootfs)!r}, wait_ssh=False).start()
        json.dump({{"name": ct.name, "netns": ct.netns, "host_if": ct.host_ifname,
                   "pids": [ct.nspawn.pid, ct.pid],
                   "cgroups": [str(c) for c in ct._cgroups]}}, open({str(info)!r}, "w"))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    data = json.loads(info.read_text())
    # the orphaned nspawn got SIGTERM and shut the container down by itself
    deadline = time.monotonic() + 30
    while _nspawn_pids_for(data["name"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _nspawn_pids_for(data["name"]) == []
    assert data["netns"] in _netns_names()  # what atexit could not remove...
    cleaned = harness.cleanup_stale()       # ...the next harness run does
    assert data["name"] in cleaned
    _assert_nothing_left(data["name"], data["netns"], data["host_if"], data["pids"],
                         [Path(c) for c in data["cgroups"]])


def test_missing_support_skips_outside_ci_and_fails_under_ci(monkeypatch):
    from tests.hosts import fixtures

    monkeypatch.setattr(fixtures, "missing_tools", lambda: ["systemd-nspawn", "mmdebstrap"])
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install mmdebstrap systemd-container"):
        fixtures.require_container_support()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        fixtures.require_container_support()
    monkeypatch.setattr(fixtures, "missing_tools", lambda: [])
    monkeypatch.setattr(fixtures.os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception, match="root"):
        fixtures.require_container_support()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="root"):
        fixtures.require_container_support()
