"""The account engine against the real system, inside isolated hosts: what it writes passes
`pwck -r` and `grpck -r`, resolves through NSS (`id`, `getent`), and shadow-utils (`useradd`,
`usermod`, `userdel`, `gpasswd`, as a package's maintainer script would run them) keeps working on
it; a concurrent `useradd` never interleaves with its write; glibc's own lckpwdf() excludes it;
nscd is told."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.hosts.engine import (UID_BASE, add_op, assert_consistent, entries, env, getent, run_engine, start_engine,
                                tool_complaints, wait_for)

pytestmark = pytest.mark.host
NOLOGIN = "/usr/sbin/nologin"


def test_what_the_engine_writes_passes_the_real_tools(isolated_host):
    host = isolated_host
    baseline = tool_complaints(host)
    names = ["alice@example.com", "bob.b", "Carol", "dave"]
    ops = [add_op(n, UID_BASE + i) for i, n in enumerate(names)]
    ops.append(["change_group_members", ["adm"], {"add": ["alice@example.com", "bob.b"]}])
    report = run_engine(host, {"ops": ops})
    assert report["refused"] == [] and report["written"] == ["gshadow", "group", "shadow", "passwd"]
    assert tool_complaints(host) == baseline
    assert_consistent(host)
    for i, name in enumerate(names):
        uid = UID_BASE + i
        ident = host.id(name)
        assert ident.returncode == 0 and f"uid={uid}({name}) gid={uid}({name})" in ident.stdout
        assert getent(host, "passwd", name) == [name, "x", str(uid), str(uid), "runas-agent test", f"/home/{name}", "/bin/bash"]
        assert getent(host, "group", name) == [name, "x", str(uid), ""]
        assert getent(host, "shadow", name)[:2] == [name, "!"]
        assert getent(host, "gshadow", name) == [name, "!", "", ""]
        home = host.home / name
        st = os.stat(home)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (uid, uid, 0o700)
        assert sorted(os.listdir(home)) == sorted(os.listdir("/etc/skel"))
    assert "4(adm)" in host.id("alice@example.com").stdout
    # the SSM agent's check, name unquoted in a shell
    assert host.run(["sh", "-c", "id alice@example.com"], check=False).returncode == 0


def test_park_rename_and_unpark_resolve_as_they_should(isolated_host):
    host = isolated_host
    baseline = tool_complaints(host)
    run_engine(host, {"ops": [add_op("alice@example.com", UID_BASE), add_op("bob", UID_BASE + 1),
                              ["change_group_members", ["adm"], {"add": ["alice@example.com", "bob"]}]]})
    report = run_engine(host, {"ops": [["park", [UID_BASE], {"shell": NOLOGIN}],
                                       ["rename_account", [UID_BASE + 1, "robert"], {}],
                                       ["update_account", [UID_BASE + 1], {"comment": "runas-agent robert"}]]})
    assert report["refused"] == []
    parked = f"runas-off-{UID_BASE}"
    assert host.id("alice@example.com").returncode != 0
    assert f"uid={UID_BASE}({parked}) gid={UID_BASE}({parked})" in host.id(parked).stdout
    shadow = getent(host, "shadow", parked)
    assert shadow[1].startswith("!") and shadow[7] == "1"
    assert getent(host, "passwd", parked)[6] == NOLOGIN
    assert host.id("bob").returncode != 0
    assert f"uid={UID_BASE + 1}(robert) gid={UID_BASE + 1}(robert)" in host.id("robert").stdout
    assert "4(adm)" in host.id("robert").stdout
    assert getent(host, "gshadow", "robert") is not None and getent(host, "gshadow", "bob") is None
    assert tool_complaints(host) == baseline
    run_engine(host, {"ops": [["unpark", [UID_BASE, "alice@example.com"], {"shell": "/bin/bash", "comment": "runas-agent test"}]]})
    assert f"uid={UID_BASE}(alice@example.com) gid={UID_BASE}(alice@example.com)" in host.id("alice@example.com").stdout
    assert getent(host, "shadow", "alice@example.com")[7] == ""
    assert tool_complaints(host) == baseline
    assert_consistent(host)


def test_shadow_utils_keeps_working_on_the_result_and_the_engine_on_theirs(isolated_host):
    host = isolated_host
    baseline = tool_complaints(host)
    run_engine(host, {"ops": [add_op("alice@example.com", UID_BASE), add_op("bob", UID_BASE + 1)]})
    for argv in (["useradd", "-m", "-s", "/bin/sh", "pkguser"], ["groupadd", "-r", "pkggroup"],
                 ["usermod", "-aG", "pkggroup", "bob"], ["gpasswd", "-a", "alice@example.com", "pkggroup"],
                 ["usermod", "-c", "changed by hand", "bob"], ["chage", "-M", "90", "alice@example.com"],
                 ["useradd", "-m", "leaver"], ["userdel", "-r", "leaver"], ["groupmod", "-n", "pkggroup2", "pkggroup"]):
        proc = host.run(argv, check=False)
        assert proc.returncode == 0, (argv, proc.stderr)
    assert tool_complaints(host) == baseline
    report = run_engine(host, {"ops": [add_op("carol", UID_BASE + 2), ["park", [UID_BASE + 1], {"shell": NOLOGIN}]]})
    assert report["refused"] == []
    groups = entries(host, "group")
    assert groups["pkggroup2"][3] == f"runas-off-{UID_BASE + 1},alice@example.com"
    assert entries(host, "passwd")["pkguser"][6] == "/bin/sh"
    assert entries(host, "shadow")["alice@example.com"][4] == "90"
    assert tool_complaints(host) == baseline
    assert host.run(["userdel", "carol"], check=False).returncode == 0
    assert_consistent(host)


def test_a_concurrent_useradd_waits_for_the_write_and_both_land(isolated_host):
    """The engine holds the locks in the middle of its write (sleeping after its first file); a
    useradd started then must wait, and both sets of accounts end up complete."""
    host = isolated_host
    baseline = tool_complaints(host)
    engine = start_engine(host, {"ops": [add_op(f"e{i}", UID_BASE + i) for i in range(20)],
                                 "sleep_at": ["db:group:rename", 2.0]})
    wait_for(engine, "sleeping")
    started = time.monotonic()
    proc = host.run(["useradd", "-m", "racer"], check=False)
    waited = time.monotonic() - started
    out, err = engine.communicate(timeout=60)
    assert engine.returncode == 0, err
    assert proc.returncode == 0, proc.stderr
    assert waited > 1.0, f"useradd did not wait for the engine's lock ({waited:.2f}s)"
    users = entries(host, "passwd")
    assert "racer" in users and all(f"e{i}" in users for i in range(20))
    assert tool_complaints(host) == baseline
    assert_consistent(host)


def test_useradd_between_read_and_write_is_kept_and_the_engine_replays_on_it(isolated_host):
    host = isolated_host
    baseline = tool_complaints(host)
    engine = start_engine(host, {"ops": [add_op(f"e{i}", UID_BASE + i) for i in range(20)] + [add_op("racer", UID_BASE + 99)],
                                 "sleep_at": ["commit", 1.0]})
    wait_for(engine, "sleeping")
    assert host.run(["useradd", "-m", "-u", str(UID_BASE + 5), "-o", "racer"], check=False).returncode == 0
    out, err = engine.communicate(timeout=60)
    report = __import__("json").loads(out.strip().splitlines()[-1])
    assert report["replayed"] is True
    refused = {(r["account"], r["type"]) for r in report["refused"]}
    assert refused == {("e5", "IdTaken"), ("racer", "NameTaken")}
    users = entries(host, "passwd")
    assert users["racer"][2] == str(UID_BASE + 5) and "e5" not in users and "e6" in users
    complaints = tool_complaints(host)
    # e5's home was made before the write and stays (nothing deletes a home); pwck has nothing to add
    assert complaints == baseline
    assert_consistent(host)


def test_a_storm_of_useradds_racing_the_engine_loses_nothing(isolated_host):
    host = isolated_host
    baseline = tool_complaints(host)
    script = 'i=0; while [ $i -lt 40 ]; do useradd -m "loop$i" || exit 1; i=$((i + 1)); done'
    errors = []

    def storm():
        proc = host.run(["sh", "-c", script], check=False, timeout=300)
        if proc.returncode:
            errors.append(proc.stderr)

    thread = threading.Thread(target=storm)
    thread.start()
    reports = [run_engine(host, {"ops": [add_op(f"r{round}x{i}", UID_BASE + 1000 * round + i) for i in range(150)]})
               for round in range(3)]
    thread.join()
    assert not errors, errors
    users = entries(host, "passwd")
    assert all(f"loop{i}" in users for i in range(40))
    assert all(f"r{r}x{i}" in users for r in range(3) for i in range(150))
    assert all(not r["refused"] for r in reports)
    assert tool_complaints(host) == baseline
    assert_consistent(host)


_LCKPWDF = textwrap.dedent("""
    import ctypes, sys, time
    libc = ctypes.CDLL(None)
    assert libc.lckpwdf() == 0
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
    libc.ulckpwdf()
""")


def test_glibc_lckpwdf_excludes_the_engine(isolated_host):
    host = isolated_host
    holder = host.popen([sys.executable, "-c", _LCKPWDF, "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (host.etc / "passwd").read_bytes()
        report = run_engine(host, {"ops": [add_op("alice", UID_BASE)], "lock_timeout": 1.0})
        assert report["type"] == "LockBusyError" and ".pwd.lock is locked" in report["error"]
        assert (host.etc / "passwd").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    assert run_engine(host, {"ops": [add_op("alice", UID_BASE)], "lock_timeout": 5.0})["written"]


_HOLD_ENGINE_LOCK = textwrap.dedent("""
    import sys, time
    from runas_agent.host.accountdb import DatabaseLock
    with DatabaseLock("/etc"):
        print("held", flush=True)
        time.sleep(float(sys.argv[1]))
""")


def test_the_engines_lock_excludes_useradd_and_glibc_lckpwdf(isolated_host):
    host = isolated_host
    holder = host.popen([sys.executable, "-c", _HOLD_ENGINE_LOCK, "120"], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        results = {}
        probes = {"lckpwdf": [sys.executable, "-c", "import ctypes; print(ctypes.CDLL(None).lckpwdf())"],
                  "useradd": ["useradd", "blocked"]}
        threads = [threading.Thread(target=lambda k=k, a=a: results.setdefault(k, host.run(a, check=False, timeout=60)))
                   for k, a in probes.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results["lckpwdf"].stdout.strip() == "-1"  # glibc gave up after its 15 seconds
        useradd = results["useradd"]
        assert useradd.returncode != 0 and "cannot lock /etc/passwd" in useradd.stderr
        assert "blocked" not in entries(host, "passwd")
    finally:
        holder.kill()
        holder.wait()
    assert host.run(["useradd", "unblocked"], check=False).returncode == 0  # the stale lock files are recognised


# --- nscd ------------------------------------------------------------------------------------

NSCD_CACHE = Path("/var/cache/runas-agent-tests/nscd")


def _nscd() -> Path:
    """nscd unpacked from Debian's package (never installed on this machine: it would cache the
    machine's own lookups)."""
    binary = NSCD_CACHE / "usr/sbin/nscd"
    if binary.exists():
        return binary
    download = NSCD_CACHE.with_name("nscd-download")
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    got = subprocess.run(["apt-get", "download", "nscd"], cwd=download, capture_output=True, text=True)
    debs = list(download.glob("nscd_*.deb"))
    if got.returncode or not debs:
        if os.environ.get("CI"):
            pytest.fail(f"apt-get download nscd failed: {got.stderr}")
        pytest.skip(f"nscd is not available: {got.stderr.strip()}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(NSCD_CACHE)], check=True)
    shutil.rmtree(download, ignore_errors=True)
    return binary


_WITH_NSCD = r'''
set -e
nscd=$1; shift
mount -t tmpfs tmpfs /run        # nscd's socket lives here: private to this host, never the machine's
mkdir -p /run/nscd
cat > /etc/nscd.conf <<EOF
enable-cache passwd yes
positive-time-to-live passwd 3600
negative-time-to-live passwd 3600
check-files passwd no
persistent passwd no
shared passwd no
enable-cache group yes
positive-time-to-live group 3600
negative-time-to-live group 3600
check-files group no
persistent group no
shared group no
EOF
"$nscd" -F &
pid=$!
trap 'kill $pid' EXIT
for i in $(seq 50); do [ -S /run/nscd/socket ] && break; sleep 0.1; done
getent passwd alice > /dev/null && echo "before: found" || echo "before: absent"
getent group alice > /dev/null && echo "group before: found" || echo "group before: absent"
PATH=$(dirname "$nscd"):$PATH "$@" > /dev/null
getent passwd alice > /dev/null && echo "after: found" || echo "after: absent"
getent group alice > /dev/null && echo "group: found" || echo "group: absent"
'''


@pytest.mark.parametrize("flush", [True, False])
def test_nscd_is_told_and_serves_the_new_account_at_once(isolated_host, flush):
    """With nscd caching `alice` as absent for an hour and watching no files, only `nscd -i` makes
    the new account resolve; without it (flush=False, the control) it stays absent."""
    nscd = _nscd()
    from tests.hosts.engine import driver_argv, write_spec
    spec = write_spec(isolated_host, {"ops": [add_op("alice", UID_BASE)], "flush": flush})
    proc = isolated_host.run(["sh", "-c", _WITH_NSCD, "sh", str(nscd), *driver_argv(spec)], env=env(), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "before: absent" in proc.stdout and "group before: absent" in proc.stdout
    expected = "found" if flush else "absent"
    assert f"after: {expected}" in proc.stdout and f"group: {expected}" in proc.stdout, proc.stdout
