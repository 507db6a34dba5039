"""The sync against real hosts' account databases, inside isolated hosts (never this machine's /etc)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import time

import pytest

from runas_agent.exitcodes import Exit
from tests.hosts.engine import tool_complaints

pytestmark = pytest.mark.host
STORE = "d-1234567890"


def u(user_id, name, org=None, status="ENABLED", display=None):
    record = {"IdentityStoreId": STORE, "UserId": user_id, "UserName": name, "UserStatus": status,
              "DisplayName": display or name.split("@")[0].title()}
    if org is not None:
        record["Extensions"] = {"aws:identitystore:enterprise": {"organization": org}}
    return record


def doc(users, groups=(), memberships=()):
    return {"IdentityStoreId": STORE, "Users": list(users), "Groups": list(groups), "GroupMemberships": list(memberships)}


IRET = [u("id-alice", "alice@example.com", "iret"), u("id-bob", "bob@example.com", "iret"),
        u("id-carol", "carol@example.com", "iret"), u("id-dave", "dave@example.com", "acme")]


def setup(host, users, expression="${path:enterprise.organization}", **extra):
    path = host.write_directory(doc(users))
    cfg = {"source": {"type": "file", "path": str(path)}, "run_as": {"expression": expression}, **extra}
    return host.write_config(cfg)


def etc_digest(host):
    out = {}
    for name in ("passwd", "group", "shadow", "gshadow"):
        data = (host.etc / name).read_bytes()
        out[name] = (hashlib.sha256(data).hexdigest(), os.stat(host.etc / name).st_mtime_ns)
    return out


def test_organization_mode_seed_scenario(isolated_host):
    cfg = setup(isolated_host, IRET)
    plan = isolated_host.agent("--config", str(cfg), "plan")
    assert plan.returncode == Exit.CHANGES, plan.stderr
    assert "+ create iret" in plan.stdout and "+ create acme" in plan.stdout

    once = isolated_host.agent("--config", str(cfg), "--once")
    assert once.returncode == Exit.OK, once.stdout + once.stderr
    passwd = isolated_host.passwd()
    assert set(passwd) >= {"iret", "acme"}
    uid = int(passwd["iret"][2])
    assert 1_000_000_000 <= uid <= 1_799_999_999 and passwd["iret"][3] == str(uid)
    assert passwd["iret"][4].startswith("runas-agent")
    assert passwd["iret"][5] == "/home/iret" and passwd["iret"][6] == "/bin/bash"
    ident = isolated_host.id("iret")
    assert ident.returncode == 0 and f"uid={uid}(iret) gid={uid}(iret)" in ident.stdout
    home = isolated_host.home / "iret"
    assert (home / ".bashrc").exists() and os.stat(home).st_uid == uid
    ledger = isolated_host.ledger()
    assert sorted(ledger["accounts"]["iret"]["identities"]) == ["id-alice", "id-bob", "id-carol"]

    again = isolated_host.agent("--config", str(cfg), "plan")
    assert again.returncode == Exit.OK and "no changes" in again.stdout


def test_second_sync_changes_and_writes_nothing(isolated_host):
    cfg = setup(isolated_host, IRET)
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    before = etc_digest(isolated_host)
    state_before = {p.name: p.stat().st_mtime_ns for p in isolated_host.state_dir.iterdir()}
    time.sleep(0.05)
    second = isolated_host.agent("--config", str(cfg), "--once")
    assert second.returncode == Exit.OK
    assert etc_digest(isolated_host) == before
    # the first sync with nothing to do remembers that (core/memo.py); nothing else is written
    state_after = {p.name: p.stat().st_mtime_ns for p in isolated_host.state_dir.iterdir()}
    assert {n: t for n, t in state_after.items() if n != "plan-memo.json"} == state_before
    assert "plan-memo.json" in state_after
    third = isolated_host.agent("--config", str(cfg), "--once")
    assert third.returncode == Exit.OK
    assert etc_digest(isolated_host) == before
    assert {p.name: p.stat().st_mtime_ns for p in isolated_host.state_dir.iterdir()} == state_after


def test_per_person_accounts_with_user_ids_for_uids(isolated_host):
    users = [u("9067aa-1111", "alice"), u("9067aa-2222", "bob.smith"), u("9067aa-3333", "carol@example.com")]
    cfg = setup(isolated_host, users, "${path:userName}")
    result = isolated_host.agent("--config", str(cfg), "--once")
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    for name in ("alice", "bob.smith", "carol@example.com"):
        assert isolated_host.id(name).returncode == 0, name
    assert isolated_host.passwd()["alice"][4] == "runas-agent Alice (alice)"

    # Same directory on a second host: same UIDs (fleet-stable, shared EFS/NFS ownership agrees).
    from tests.hosts.namespace import IsolatedHost
    other = IsolatedHost(isolated_host.root.parent / "other")
    try:
        cfg2 = setup(other, list(reversed(users)), "${path:userName}")
        assert other.agent("--config", str(cfg2), "--once").returncode == Exit.OK
        for name in ("alice", "bob.smith", "carol@example.com"):
            assert other.passwd()[name][2] == isolated_host.passwd()[name][2]
    finally:
        other.destroy()


def test_disable_and_re_enable_keep_uid_and_home(isolated_host):
    cfg = setup(isolated_host, IRET)
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    uid = int(isolated_host.passwd()["acme"][2])
    isolated_host.run(["su", "-s", "/bin/sh", "-c", "echo precious > /home/acme/work.txt", "acme"])

    # dave (acme's only person) is disabled; alice leaves iret, which still serves bob and carol.
    users = copy.deepcopy(IRET)
    users[3]["UserStatus"] = "DISABLED"
    users = [x for x in users if x["UserName"] != "alice@example.com"]
    isolated_host.write_directory(doc(users))
    result = isolated_host.agent("--config", str(cfg), "--once")
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert "- disable acme" in result.stdout and "disabled in the directory" in result.stdout
    assert isolated_host.id("acme").returncode != 0          # what the SSM agent checks
    assert isolated_host.id("iret").returncode == 0
    parked = isolated_host.passwd()[f"runas-off-{uid}"]
    assert parked[2] == str(uid) and parked[5] == "/home/acme" and parked[6].endswith("nologin")
    assert isolated_host.shadow()[f"runas-off-{uid}"][1].startswith("!")
    assert (isolated_host.home / "acme" / "work.txt").read_text() == "precious\n"
    assert os.stat(isolated_host.home / "acme" / "work.txt").st_uid == uid

    isolated_host.write_directory(doc(IRET))
    back = isolated_host.agent("--config", str(cfg), "--once")
    assert back.returncode == Exit.OK and "~ enable acme" in back.stdout
    ident = isolated_host.id("acme")
    assert ident.returncode == 0 and f"uid={uid}(acme) gid={uid}(acme)" in ident.stdout
    assert isolated_host.passwd()["acme"][6] == "/bin/bash"
    assert not isolated_host.shadow()["acme"][1].startswith("!!")
    assert (isolated_host.home / "acme" / "work.txt").read_text() == "precious\n"


def test_unmanaged_account_is_left_alone_and_reported(isolated_host):
    isolated_host.run(["useradd", "-m", "-c", "hand made", "iret"])
    before = isolated_host.passwd()["iret"]
    cfg = setup(isolated_host, IRET)
    result = isolated_host.agent("--config", str(cfg), "--once")
    assert result.returncode == Exit.PARTIAL
    assert "not managed by runas-agent" in result.stdout and "iret" in result.stdout
    assert isolated_host.passwd()["iret"] == before
    assert "iret" not in isolated_host.ledger()["accounts"] and "acme" in isolated_host.ledger()["accounts"]

    # Even when nobody maps to it any more, the agent never disables what it does not own.
    isolated_host.write_directory(doc(IRET[3:]))
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    assert isolated_host.passwd()["iret"] == before


def test_hostile_values_are_skipped_others_sync(isolated_host):
    hostile = ["IRET, Inc.", "root", "", "x" * 40, "a/b", "$(touch /tmp/pwned)", "-rf", "ssm-user", "1234",
               "daemon", "runas-off-5", "new\nline", "sp ace"]
    users = [u(f"id-{i}", f"user{i}", org) for i, org in enumerate(hostile)] + [u("id-ok", "ok", "goodorg")]
    cfg = setup(isolated_host, users)
    names_before = set(isolated_host.passwd())
    result = isolated_host.agent("--config", str(cfg), "--once", "--json")
    assert result.returncode == Exit.PARTIAL
    data = json.loads(result.stdout)
    assert [a["name"] for a in data["actions"]] == ["goodorg"]
    skipped = {s["identity"].split(" ")[0]: s["reason"] for s in data["skips"]}
    assert len(skipped) == len(hostile)
    assert "session tag" in skipped["user0"] and "reserved" in skipped["user1"] and "empty" in skipped["user2"]
    assert isolated_host.id("goodorg").returncode == 0
    assert not os.path.exists("/tmp/pwned")
    assert set(isolated_host.passwd()) - names_before == {"goodorg"}


def test_supplementary_groups_only_remove_what_the_agent_added(isolated_host):
    isolated_host.run(["groupadd", "deploy"])
    isolated_host.run(["groupadd", "audit"])
    cfg = setup(isolated_host, IRET, groups=[{"run_as": "iret", "local_groups": ["deploy", "audit"]}])
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    assert "deploy" in isolated_host.run(["id", "-nG", "iret"]).stdout
    isolated_host.run(["groupadd", "extra"])
    isolated_host.run(["gpasswd", "-a", "iret", "extra"])          # an admin's own change

    cfg = setup(isolated_host, IRET, groups=[{"run_as": "iret", "local_groups": ["audit"]}])
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    groups = isolated_host.run(["id", "-nG", "iret"]).stdout.split()
    assert "deploy" not in groups and "audit" in groups and "extra" in groups


def test_empty_directory_and_mass_disable_are_refused(isolated_host):
    users = [u(f"id-{i}", f"user{i}", f"org{i}") for i in range(10)]
    cfg = setup(isolated_host, users)
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    before = etc_digest(isolated_host)

    isolated_host.write_directory(doc([]))
    empty = isolated_host.agent("--config", str(cfg), "--once")
    assert empty.returncode == Exit.REFUSED and "no users" in empty.stdout
    isolated_host.write_directory(doc(users[:5]))
    mass = isolated_host.agent("--config", str(cfg), "--once")
    assert mass.returncode == Exit.REFUSED and "disable 5 of 10" in mass.stdout
    assert etc_digest(isolated_host) == before

    forced = isolated_host.agent("--config", str(cfg), "--once", "--force")
    assert forced.returncode == Exit.OK
    assert all(isolated_host.id(f"org{i}").returncode != 0 for i in range(5, 10))


def test_unreadable_directory_changes_nothing(isolated_host):
    cfg = setup(isolated_host, IRET)
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    before = etc_digest(isolated_host)
    (isolated_host.root / "directory.json").write_text('{"Users": [')
    result = isolated_host.agent("--config", str(cfg), "--once")
    assert result.returncode == Exit.ERROR and "nothing was changed" in result.stderr
    assert etc_digest(isolated_host) == before


def test_a_busy_account_is_parked_at_once(isolated_host):
    """A process of the account does not stop the disable (usermod would refuse to rename it): the
    account is renamed, locked and expired in one edit while the process runs."""
    cfg = setup(isolated_host, IRET)
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    uid = int(isolated_host.passwd()["acme"][2])
    worker = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "sleep", "60"])
    try:
        isolated_host.write_directory(doc(IRET[:3]))
        busy = isolated_host.agent("--config", str(cfg), "--once")
        assert busy.returncode == Exit.OK and "- disable acme" in busy.stdout, busy.stdout + busy.stderr
        assert isolated_host.id("acme").returncode != 0
        parked = isolated_host.shadow()[f"runas-off-{uid}"]
        assert parked[1].startswith("!") and parked[7] == "1"
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()
    again = isolated_host.agent("--config", str(cfg), "--once")
    assert again.returncode == Exit.OK and "- disable" not in again.stdout


def test_concurrent_sync_refuses_instead_of_interleaving(isolated_host):
    cfg = setup(isolated_host, IRET)
    lock = isolated_host.state_dir / "sync.lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "30"])
    try:
        time.sleep(0.3)
        result = isolated_host.agent("--config", str(cfg), "--once", "--wait", "0.5")
        assert result.returncode == Exit.BUSY and "holds" in result.stderr
        assert "iret" not in isolated_host.passwd()
    finally:
        holder.kill()
        holder.wait()


def test_check_config_lists_every_problem(isolated_host, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: {type: file}\nrun_as: {expression: '${path:nope}'}\nextra: 1\n")
    result = isolated_host.agent("check-config", str(bad))
    assert result.returncode == Exit.CONFIG
    assert "extra: unknown key" in result.stderr
    good = setup(isolated_host, IRET)
    assert isolated_host.agent("check-config", str(good)).returncode == Exit.OK
    once = isolated_host.agent("--config", str(bad), "--once")
    assert once.returncode == Exit.CONFIG


def test_large_first_sync_is_batched_and_equivalent(isolated_host):
    """25 accounts in one sync: the same result as useradd (skel, no password, no subuids), homes 0700."""
    users = [u(f"id-{i:03d}", f"person{i}.x@example.com") for i in range(25)]
    cfg = setup(isolated_host, users, "${path:userName}")
    subuid = (isolated_host.etc / "subuid").read_bytes() if (isolated_host.etc / "subuid").exists() else b""
    result = isolated_host.agent("--config", str(cfg), "--once")
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    shadow = isolated_host.shadow()
    for i in range(25):
        name = f"person{i}.x@example.com"
        ident = isolated_host.id(name)
        assert ident.returncode == 0, name
        uid = int(isolated_host.passwd()[name][2])
        assert f"uid={uid}({name}) gid={uid}({name})" in ident.stdout
        assert shadow[name][1] == "!"
        assert oct(os.stat(isolated_host.home / name).st_mode & 0o7777) == oct(0o700)
        for dotfile in (".bashrc", ".profile"):
            st = os.stat(isolated_host.home / name / dotfile)
            assert st.st_uid == uid and st.st_gid == uid
    assert ((isolated_host.etc / "subuid").read_bytes() if (isolated_host.etc / "subuid").exists() else b"") == subuid
    assert isolated_host.agent("--config", str(cfg), "plan").returncode == Exit.OK


def test_export_writes_a_document_the_file_source_reads_back(isolated_host):
    cfg = setup(isolated_host, IRET)
    out = isolated_host.root / "snapshot.json"
    result = isolated_host.agent("--config", str(cfg), "export", "--output", str(out))
    assert result.returncode == Exit.OK and "4 users" in result.stderr
    exported = json.loads(out.read_text())
    assert [x["UserName"] for x in exported["Users"]] == [x["UserName"] for x in IRET]
    assert exported["Users"][0]["Extensions"]["aws:identitystore:enterprise"]["organization"] == "iret"
    cfg2 = isolated_host.write_config({"source": {"type": "file", "path": str(out)},
                                       "run_as": {"expression": "${path:enterprise.organization}"}}, "c2.yaml")
    plan = isolated_host.agent("--config", str(cfg2), "plan")
    assert plan.returncode == Exit.CHANGES and "+ create iret" in plan.stdout


def test_email_names_on_a_rhel_family_host_need_the_rhel_email_rules(isolated_host):
    """On a host whose os-release is Amazon Linux, `auto` means RHEL rules: an e-mail Run As name is
    skipped with a reason that names the way out. With accounts.name_rules rhel-email the engine
    writes the account, and parking and re-enabling it are renames like any other."""
    os_release = isolated_host.etc / "os-release"
    os_release.unlink()  # a link into /usr on Debian: never write through it
    os_release.write_text('NAME="Amazon Linux"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n')
    users = [u("id-alice", "alice@example.com"), u("id-carol", "carol")]
    cfg = setup(isolated_host, users, "${path:userName}")
    first = isolated_host.agent("--config", str(cfg), "--once")
    assert first.returncode == Exit.PARTIAL, first.stdout + first.stderr
    assert "alice@example.com" in first.stdout and "accounts.name_rules rhel-email allows '@'" in first.stdout
    assert isolated_host.id("alice@example.com").returncode != 0 and isolated_host.id("carol").returncode == 0
    doctor = json.loads(isolated_host.agent("--config", str(cfg), "doctor", "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["name"] == "name-rules"]
    assert check["status"] == "warning" and "(rhel, from /etc/os-release)" in check["summary"], check

    cfg = setup(isolated_host, users, "${path:userName}", accounts={"name_rules": "rhel-email"})
    second = isolated_host.agent("--config", str(cfg), "--once")
    assert second.returncode == Exit.OK, second.stdout + second.stderr
    ident = isolated_host.id("alice@example.com")
    assert ident.returncode == 0 and "(alice@example.com)" in ident.stdout
    uid = int(isolated_host.passwd()["alice@example.com"][2])
    assert os.stat(isolated_host.home / "alice@example.com").st_uid == uid
    doctor = json.loads(isolated_host.agent("--config", str(cfg), "doctor", "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["name"] == "name-rules"]
    assert check["status"] == "ok" and "1 account name with '@'" in check["summary"], check

    isolated_host.write_directory(doc([u("id-alice", "alice@example.com", status="DISABLED"), users[1]]))
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    assert isolated_host.id("alice@example.com").returncode != 0
    assert isolated_host.passwd()[f"runas-off-{uid}"][5] == "/home/alice@example.com"
    isolated_host.write_directory(doc(users))
    assert isolated_host.agent("--config", str(cfg), "--once").returncode == Exit.OK
    assert isolated_host.id("alice@example.com").returncode == 0
    complaints = tool_complaints(isolated_host)  # Debian's shadow-utils accepts '@'
    assert not [c for tool in complaints.values() for c in tool if "alice" in c or str(uid) in c], complaints
