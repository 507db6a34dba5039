"""The daemon as a real systemd service, in a booted Debian container (systemd 252 as PID 1).

Each test boots its own container, installs the project the way a package would (a venv over the
distro's python3-systemd, wheels only, no network), installs systemd/runas-agent.service unchanged
(test-only settings go in a drop-in), and serves the Identity Store from a local endpoint whose
speed the test controls (tests/hosts/slow_identitystore.py).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tests.hosts.fixtures import container_factory, container_rootfs  # noqa: E402,F401
from tests.hosts.service import (  # noqa: E402
    AWS_ENV, MESSAGE_RELOAD, MESSAGE_SYNC, MESSAGE_SYNC_FAILED, UNIT, Host, binds, config, directory, install)

pytestmark = pytest.mark.container


@pytest.fixture
def host(container_factory, wheelhouse) -> Host:  # noqa: F811
    return install(container_factory(bind_ro=binds(wheelhouse)))


# -- the unit ----------------------------------------------------------------------------------------


def test_unit_passes_systemd_analyze_verify(host):
    # --man=no: the unit's Documentation=man:runas-agent(8) is installed by the packages (their tests
    # check it with man); this container has the project but not the packages.
    proc = host.sh("systemd-analyze", "verify", "--man=no", f"/etc/systemd/system/{UNIT}", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "runas-agent" not in proc.stderr, proc.stderr
    before = host.show("Before")["Before"].split()
    assert {"amazon-ssm-agent.service", "snap.amazon-ssm-agent.amazon-ssm-agent.service"} <= set(before)


def test_security_exposure(host):
    host.write_config(config())
    host.sh("systemctl", "start", UNIT, timeout=90)
    out = host.sh("systemd-analyze", "security", "--no-pager", UNIT, check=False).stdout
    score = float(out.strip().splitlines()[-1].split("exposure level for")[1].split(":")[1].split()[0])
    print(f"\nsystemd-analyze security {UNIT}: {out.strip().splitlines()[-1]}")
    assert score <= 4.0, out


# -- start: READY only after the first sync, before the SSM agent ------------------------------------


def test_active_only_after_the_first_sync_and_before_the_ssm_agent(host):
    names = [f"user{i:03d}" for i in range(1, 21)]
    host.set_directory(directory(names))
    host.write_config(config())
    host.control(delay=0.6)  # 4 pages of users + 1 of groups: about 3 s
    # A stand-in for the SSM agent, enabled like the real one: started in the same transaction.
    # Both are pulled in by one target, as multi-user.target does at boot.
    # Its first act is to note which accounts exist: what the first session could find.
    host.ct.write_file("/etc/systemd/system/amazon-ssm-agent.service",
                       "[Unit]\nDescription=stand-in\n[Service]\n"
                       "ExecStart=/bin/sh -c 'getent passwd > /run/ssm-saw-passwd; exec sleep infinity'\n")
    host.ct.write_file("/etc/systemd/system/test-boot.target",
                       f"[Unit]\nDescription=first boot\nWants=amazon-ssm-agent.service {UNIT}\n")
    host.sh("systemctl", "daemon-reload")
    host.sh("systemctl", "start", "--no-block", "test-boot.target")

    seen = []
    while True:
        # the SSM agent's state first: if it is up, runas-agent (read after it) must be up too
        ssm = host.sh("systemctl", "is-active", "amazon-ssm-agent.service", check=False).stdout.strip()
        state = host.state()
        seen.append((state, ssm, len(host.accounts())))
        assert not (ssm == "active" and state != "active"), seen
        if state in ("active", "failed"):
            break
        time.sleep(0.1)
    assert state == "active"
    assert any(s == "activating" and n < len(names) for s, _, n in seen), seen
    props = host.show("ActiveEnterTimestampMonotonic", "StatusText")
    assert "20 created" in props["StatusText"]
    (record,) = host.wait_records(f"MESSAGE_ID={MESSAGE_SYNC}")
    assert record["SYNC_CREATED"] == "20" and record["SYNC_RESULT"] == "ok"
    host.wait_for(lambda: host.sh("test", "-s", "/run/ssm-saw-passwd", check=False).returncode == 0,
                  what="the SSM agent stand-in")
    ssm = host.sh("systemctl", "show", "amazon-ssm-agent.service", "--property=ExecMainStartTimestampMonotonic").stdout
    assert int(ssm.strip().split("=")[1]) >= int(props["ActiveEnterTimestampMonotonic"])
    # every account existed when the SSM agent started
    saw = {line.split(":")[0] for line in host.ct.read_file("/run/ssm-saw-passwd").decode().splitlines()}
    assert set(names) <= saw


def test_failed_first_sync_is_reported_then_ready_and_nothing_changes(host):
    host.write_config(config())
    host.sh("systemctl", "start", UNIT, timeout=90)
    assert sorted(host.accounts()) == ["user001", "user002", "user003"]
    passwd = host.ct.read_file("/etc/passwd")
    host.control(status=500)
    host.sh("systemctl", "restart", UNIT, timeout=90)  # the first sync of this run fails
    assert host.state() == "active"
    status = host.show("StatusText")["StatusText"]
    assert "failed, nothing changed" in status and "InternalServerException" in status
    assert host.ct.read_file("/etc/passwd") == passwd
    failed = host.wait_records(f"MESSAGE_ID={MESSAGE_SYNC_FAILED}")
    assert failed[-1]["SYNC_RESULT"] == "failed" and failed[-1]["PRIORITY"] == "3"
    # retried with backoff while failing; recovers on its own
    host.control()
    host.wait_for(lambda: len(host.records(f"MESSAGE_ID={MESSAGE_SYNC}")) >= 2, what="a sync after the outage")


# -- account actions work inside the sandbox ---------------------------------------------------------


def test_sandbox_allows_create_disable_and_reenable(host):
    host.write_config(config())
    host.sh("systemctl", "start", UNIT, timeout=90)
    accounts = host.accounts()
    assert sorted(accounts) == ["user001", "user002", "user003"]
    home = host.sh("stat", "-c", "%U %a", "/home/user001").stdout.split()
    assert home[0] == "user001"

    host.set_directory(directory(["user001", "user002", "user003"], disabled=("user002",)))
    host.sh("systemctl", "reload", UNIT)  # a reload syncs at once
    host.wait_for(lambda: "user002" not in host.accounts(), what="user002 disabled")
    assert host.sh("id", "user002", check=False).returncode != 0

    host.set_directory(directory(["user001", "user002", "user003"]))
    host.sh("systemctl", "reload", UNIT)
    host.wait_for(lambda: "user002" in host.accounts(), what="user002 re-enabled")
    assert host.accounts()["user002"][2] == accounts["user002"][2]  # same UID
    results = [r["SYNC_RESULT"] for r in host.wait_records(f"MESSAGE_ID={MESSAGE_SYNC}", count=3)]
    assert results == ["ok", "ok", "ok"], results
    counts = [(r["SYNC_CREATED"], r["SYNC_DISABLED"], r["SYNC_ENABLED"]) for r in host.records(f"MESSAGE_ID={MESSAGE_SYNC}")]
    assert counts == [("3", "0", "0"), ("0", "1", "0"), ("0", "0", "1")]
    assert not [r for r in host.records("PRIORITY=3")], "errors in the journal"
    log = host.sh("journalctl", "--no-pager", "-u", UNIT).stdout
    assert "Traceback" not in log and "did not start" not in log, log


# -- reload ------------------------------------------------------------------------------------------


def test_reload_with_a_good_and_a_bad_config(host):
    host.write_config(config())
    host.sh("systemctl", "start", UNIT, timeout=90)
    pid = host.show("MainPID")["MainPID"]
    assert host.accounts()["user001"][6] == "/bin/bash"

    host.write_config(config(accounts={"shell": "/bin/sh"}))
    host.sh("systemctl", "reload", UNIT)
    host.wait_for(lambda: host.accounts()["user001"][6] == "/bin/sh", what="the new shell")
    assert host.show("MainPID")["MainPID"] == pid
    assert [r["RELOAD_RESULT"] for r in host.wait_records(f"MESSAGE_ID={MESSAGE_RELOAD}")] == ["ok"]

    # a bad config: `systemctl reload` fails and the daemon is not even signalled
    host.write_config(config(daemon={"interval_seconds": 1}))
    proc = host.sh("systemctl", "reload", UNIT, check=False)
    assert proc.returncode != 0
    assert host.state() == "active" and host.show("MainPID")["MainPID"] == pid
    # a SIGHUP sent another way: the daemon refuses the file and keeps the previous configuration
    host.sh("kill", "-HUP", pid)
    host.wait_for(lambda: [r for r in host.records(f"MESSAGE_ID={MESSAGE_RELOAD}") if r["RELOAD_RESULT"] == "invalid"],
                  what="the refused reload")
    (bad,) = [r for r in host.records(f"MESSAGE_ID={MESSAGE_RELOAD}") if r["RELOAD_RESULT"] == "invalid"]
    assert "daemon.interval_seconds: must be at least 10" in bad["CONFIG_PROBLEMS"]
    host.wait_for(lambda: "reload refused" in host.show("StatusText")["StatusText"], what="STATUS after the refusal")
    assert host.state() == "active" and host.show("MainPID")["MainPID"] == pid
    assert host.accounts()["user001"][6] == "/bin/sh"  # still the last good configuration


# -- watchdog ----------------------------------------------------------------------------------------


def test_a_hung_sync_is_killed_by_the_watchdog_and_restarted(host):
    # read_timeout far beyond WatchdogSec: a request that never answers blocks the working thread
    host.write_config(config(source={"read_timeout": 300, "read_deadline": 600}))
    env = "\n".join(f"Environment={k}={v}" for k, v in AWS_ENV.items())
    host.drop_in(f"[Service]\n{env}\nRestartSec=1s\nWatchdogSec=3s\n")
    host.sh("systemctl", "start", UNIT, timeout=90)
    first_pid = host.show("MainPID")["MainPID"]
    host.control(hang=True)
    host.sh("systemctl", "reload", UNIT)  # sync now: its first request never gets an answer
    host.wait_for(lambda: int(host.show("NRestarts")["NRestarts"]) >= 1, timeout=30, what="a watchdog restart")
    log = host.sh("journalctl", "--no-pager", "-u", UNIT).stdout
    assert "Watchdog timeout" in log, log
    # faulthandler put the stuck Python stack in the journal
    assert "in fetch" in log or "in _send" in log or "recv_into" in log, log
    host.control()  # the endpoint answers again
    host.wait_for(lambda: host.state() == "active" and host.show("MainPID")["MainPID"] not in ("0", first_pid),
                  timeout=60, what="the restarted service")
    assert sorted(host.accounts()) == ["user001", "user002", "user003"]


def test_a_hanging_first_sync_holds_the_ssm_agent_for_one_watchdog_interval_at_most(host):
    host.write_config(config(source={"read_timeout": 300, "read_deadline": 600}))
    env = "\n".join(f"Environment={k}={v}" for k, v in AWS_ENV.items())
    host.drop_in(f"[Service]\n{env}\nRestartSec=1s\nWatchdogSec=4s\n")
    host.ct.write_file("/etc/systemd/system/amazon-ssm-agent.service",
                       "[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/sleep infinity\n")
    host.ct.write_file("/etc/systemd/system/test-boot.target",
                       f"[Unit]\nDescription=first boot\nWants=amazon-ssm-agent.service {UNIT}\n")
    host.sh("systemctl", "daemon-reload")
    host.control(hang=True)
    host.sh("systemctl", "start", "--no-block", "test-boot.target")
    time.sleep(2)
    assert host.state() == "activating"
    assert host.sh("systemctl", "is-active", "amazon-ssm-agent.service", check=False).stdout.strip() != "active"
    host.wait_for(lambda: host.sh("systemctl", "is-active", "amazon-ssm-agent.service", check=False).stdout.strip()
                  == "active", timeout=15, what="the SSM agent stand-in after the first watchdog kill")
    host.wait_for(lambda: int(host.show("NRestarts")["NRestarts"]) >= 1, what="runas-agent to restart")
    host.control()  # the endpoint recovers: runas-agent comes up on its own
    host.wait_for(lambda: host.state() == "active", timeout=30, what="runas-agent active")
    assert sorted(host.accounts()) == ["user001", "user002", "user003"]


# -- stop --------------------------------------------------------------------------------------------


def _consistent(host: Host) -> None:
    """passwd/shadow/group/gshadow agree, no shadow-utils lock or temporary files are left, and
    the agent's state files parse."""
    files = {name: host.ct.read_file(f"/etc/{name}").decode() for name in ("passwd", "shadow", "group", "gshadow")}
    users = [line.split(":") for line in files["passwd"].splitlines()]
    assert all(len(u) == 7 for u in users)
    assert {u[0] for u in users} == {line.split(":")[0] for line in files["shadow"].splitlines()}
    groups = [line.split(":") for line in files["group"].splitlines()]
    assert all(len(g) == 4 for g in groups)
    assert {g[0] for g in groups} == {line.split(":")[0] for line in files["gshadow"].splitlines()}
    gids = {g[2] for g in groups}
    assert all(u[3] in gids for u in users), "an account whose primary group is missing"
    # /etc/.pwd.lock is lckpwdf(3)'s permanent lock file; passwd.lock & co. are per-run locks.
    leftovers = host.sh("find", "/etc", "-maxdepth", "1", "(", "-name", "*.lock", "-o", "-name", "*+", "-o",
                        "-name", "*.tmp", ")", "!", "-name", ".pwd.lock").stdout.split()
    assert leftovers == []
    state = host.sh("find", "/var/lib/runas-agent", "-name", ".*.tmp").stdout.split()
    assert state == []
    ledger = json.loads(host.ct.read_file("/var/lib/runas-agent/ledger.json"))
    assert isinstance(ledger, dict)
    assert host.sh("pwck", "-r", "-q", check=False).returncode in (0, 2)  # 2: warnings about system accounts' homes
    assert host.sh("grpck", "-r", check=False).returncode == 0


def test_sigterm_mid_sync_leaves_a_valid_host_and_exits_zero(host):
    """A stop while a first sync makes its homes: the daemon abandons at the next home, before the
    account databases are written, and exits 0; no account exists without its home, and the next
    start finishes the work (the homes already made are used as they are)."""
    names = [f"user{i:03d}" for i in range(1, 301)]
    host.sh("sh", "-c", "for i in $(seq 1 150); do echo x > /etc/skel/.f$i; done")  # a copy that takes a while
    host.set_directory(directory(names))
    host.write_config(config())
    host.sh("systemctl", "start", "--no-block", UNIT)
    made = lambda: [n for n in host.sh("ls", "-A", "/home").stdout.split() if n.startswith("user")]  # noqa: E731
    host.wait_for(lambda: len(made()) >= 5, timeout=90, what="the sync to be making homes")
    host.sh("systemctl", "stop", UNIT, timeout=120)
    assert 5 <= len(made()) < len(names), f"{len(made())} homes made: the stop did not land mid-sync"
    props = host.show("ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, props
    assert host.wait_records("SYNC_RESULT=abandoned")
    assert host.accounts() == {}  # the databases are written once, after every home
    _consistent(host)
    # the next start completes the work
    host.sh("systemctl", "start", UNIT, timeout=180)
    assert sorted(host.accounts()) == names
    owners = host.sh("stat", "-c", "%U %a", *[f"/home/{n}" for n in names]).stdout.splitlines()
    assert owners == [f"{n} 700" for n in names]
    assert host.sh("ls", "-A", f"/home/{names[-1]}").stdout.split().count(".f150") == 1
    _consistent(host)


# -- the shared lock ---------------------------------------------------------------------------------


def test_once_during_the_daemons_sync_refuses_or_waits(host):
    host.write_config(config())
    host.control(delay=1.0)  # 1 page of users + 1 of groups: about 2 s
    host.sh("systemctl", "start", "--no-block", UNIT)
    host.wait_for(lambda: host.sh("test", "-e", "/var/lib/runas-agent/sync.lock", check=False).returncode == 0,
                  what="the daemon's first sync")
    time.sleep(0.3)
    refused = host.sh("runas-agent", "--once", "--wait", "0", check=False, env=AWS_ENV)
    assert refused.returncode == 75, (refused.stdout, refused.stderr)
    assert "another runas-agent sync holds" in refused.stderr
    started = time.monotonic()
    waited = host.sh("runas-agent", "--once", "--wait", "30", check=False, env=AWS_ENV, timeout=60)
    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    assert time.monotonic() - started >= 0.5  # it waited for the daemon, then ran its own sync
    assert "0 created" in waited.stdout  # the daemon had already created the accounts
    assert host.state() == "active"
    assert sorted(host.accounts()) == ["user001", "user002", "user003"]


# -- the session watcher inside the service ----------------------------------------------------------

MESSAGE_SESSION_START = "464551acb08b4c05b513582234ec34e3"
MESSAGE_SESSION_END = "4f05f0a8ba2249d4952fb598f8b82ee5"
WORKER_SCRIPT = """set -u
setpriv --reuid="$1" --regid="$2" --clear-groups sh -c 'sleep 100000; :' &
wait
"""


def _stage_session(host: Host, user: str, n: int) -> str:
    """What the SSM agent leaves for a live Run As session: its state file, and a root process
    `ssm-session-worker <sessionId>` with the run-as shell beneath it."""
    sid = f"{user}-{n:017x}"
    owner = f"arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Vendor_0123456789abcdef/{user}"
    state = {"DocumentInformation": {"DocumentID": sid, "InstanceID": "i-0123456789abcdef0",
                                     "DocumentName": "SSM-SessionManagerRunShell", "DocumentStatus": "InProgress",
                                     "RunAsUser": user, "SessionOwner": owner},
             "DocumentType": "StartSession", "SchemaVersion": "1.0"}
    host.ct.write_file(f"/var/lib/amazon/ssm/i-0123456789abcdef0/document/state/current/{sid}",
                       json.dumps(state), mode=0o600)
    host.sh("mkdir", "-p", "/opt/ssm/bin", "/opt/ssm/scripts")
    host.sh("ln", "-sf", "/bin/bash", "/opt/ssm/bin/ssm-session-worker")
    host.ct.write_file(f"/opt/ssm/scripts/{sid}", WORKER_SCRIPT)
    uid = host.accounts()[user][2]
    # KillMode=process: when the worker dies, systemd leaves the shell beneath it alone, so only
    # runas-agent can have ended that shell.
    host.sh("systemd-run", f"--unit=worker-{n}", "--property=WorkingDirectory=/opt/ssm/scripts",
            "--property=KillMode=process", "/opt/ssm/bin/ssm-session-worker", sid, uid, uid)
    host.wait_for(lambda: host.sh("pgrep", "-U", uid, "sleep", check=False).returncode == 0, what="the run-as shell")
    return sid


def test_session_watcher_records_sessions_and_ends_a_disabled_persons(host):
    names = ["user001", "user002", "user003"]
    host.write_config(config(sessions={"end_sessions_of_disabled_people": True}))
    host.sh("systemctl", "start", UNIT, timeout=90)
    sid1 = _stage_session(host, "user001", 1)
    sid2 = _stage_session(host, "user002", 2)
    starts = host.wait_for(lambda: len(host.records(f"MESSAGE_ID={MESSAGE_SESSION_START}")) >= 2 and
                           host.records(f"MESSAGE_ID={MESSAGE_SESSION_START}"), what="session start records")
    by_sid = {r["RUNAS_SESSION_ID"]: r for r in starts}
    assert set(by_sid) == {sid1, sid2}
    assert by_sid[sid1]["RUNAS_IDENTITY_USER"] == "user001" and by_sid[sid1]["RUNAS_ACCOUNT"] == "user001"
    assert by_sid[sid1]["RUNAS_IDENTITY_ID"] == str(uuid.uuid5(uuid.NAMESPACE_DNS, "user001"))

    # user001 is disabled in the directory: their session (and only theirs) is ended from the sandbox
    uid1 = host.accounts()["user001"][2]
    host.set_directory(directory(names, disabled=("user001",)))
    host.sh("systemctl", "reload", UNIT)
    ends = host.wait_for(lambda: host.records(f"MESSAGE_ID={MESSAGE_SESSION_END}"), what="the session end record")
    assert [r["RUNAS_SESSION_ID"] for r in ends] == [sid1]
    assert "disabled" in ends[0]["RUNAS_END_REASON"]
    host.wait_for(lambda: host.sh("pgrep", "-U", uid1, check=False).returncode == 1,
                  what="user001's run-as shell to end")
    assert host.sh("systemctl", "is-active", "worker-1", check=False).stdout.strip() != "active"
    assert host.sh("systemctl", "is-active", "worker-2", check=False).stdout.strip() == "active"
    assert host.sh("pgrep", "-u", "user002", "sleep", check=False).returncode == 0
    log = host.sh("journalctl", "--no-pager", "-u", UNIT).stdout
    assert "Traceback" not in log, log


# -- the capability bounding set is minimal ----------------------------------------------------------


def _unit_capabilities() -> list[str]:
    for line in (_REPO / "systemd" / UNIT).read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            return line.split("=", 1)[1].split()
    raise AssertionError("no CapabilityBoundingSet in the unit")


@pytest.mark.parametrize("dropped", ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL"])
def test_each_capability_is_needed(host, dropped):
    """Without any one of them, creating accounts or ending a disabled person's session fails."""
    caps = [c for c in _unit_capabilities() if c != dropped]
    assert len(caps) == len(_unit_capabilities()) - 1
    env = "\n".join(f"Environment={k}={v}" for k, v in AWS_ENV.items())
    host.drop_in(f"[Service]\n{env}\nCapabilityBoundingSet=\nCapabilityBoundingSet={' '.join(caps)}\n")
    names = [f"user{i:03d}" for i in range(1, 26)]
    if dropped == "CAP_DAC_OVERRIDE":  # as on RHEL and Amazon Linux; Debian's are root:shadow 0640
        host.sh("chmod", "0000", "/etc/shadow", "/etc/gshadow")
    host.set_directory(directory(names))
    host.write_config(config(sessions={"end_sessions_of_disabled_people": True}))
    host.sh("systemctl", "start", UNIT, timeout=90)
    records = host.wait_records(f"MESSAGE_ID={MESSAGE_SYNC}", f"MESSAGE_ID={MESSAGE_SYNC_FAILED}")
    assert len(records) == 1, host.sh("journalctl", "--no-pager", "-u", UNIT).stdout
    first = records[0]
    owners = host.sh("stat", "-c", "%U", *[f"/home/{n}" for n in names], check=False).stdout.split()
    accounts_ok = first["SYNC_RESULT"] == "ok" and owners == names
    if dropped != "CAP_KILL":
        assert not accounts_ok, (first, owners)
        return
    assert accounts_ok, (first, owners)
    _stage_session(host, "user001", 1)
    host.wait_for(lambda: host.records(f"MESSAGE_ID={MESSAGE_SESSION_START}"), what="the session start record")
    uid = host.accounts()["user001"][2]
    host.set_directory(directory(names, disabled=("user001",)))
    host.sh("systemctl", "reload", UNIT)
    time.sleep(8)  # more than the watcher's grace before it gives up on a process
    assert host.sh("pgrep", "-U", uid, check=False).returncode == 0, "the shell was ended without CAP_KILL"
