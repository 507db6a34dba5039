"""Scoped sudo against real visudo and real `sudo -l -U`, inside isolated hosts whose /etc/sudoers and
/etc/sudoers.d are private copies (never this machine's)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap

import pytest

from runas_agent.core import sudoers as core
from runas_agent.exitcodes import Exit
from tests.hosts.namespace import REPO

pytestmark = pytest.mark.host
STORE = "d-1234567890"


@pytest.fixture(autouse=True)
def _need_sudo():
    if not shutil.which("sudo") or not shutil.which("visudo"):
        if os.environ.get("CI"):
            pytest.fail("sudo tests need sudo and visudo (apt-get install sudo)")
        pytest.skip("sudo tests need sudo and visudo (apt-get install sudo)")


def user(user_id, name, status="ENABLED", org=None):
    record = {"IdentityStoreId": STORE, "UserId": user_id, "UserName": name, "UserStatus": status}
    if org is not None:
        record["Extensions"] = {"aws:identitystore:enterprise": {"organization": org}}
    return record


def directory(users, groups):
    """groups: DisplayName -> member UserIds."""
    return {"IdentityStoreId": STORE, "Users": users,
            "Groups": [{"GroupId": f"g-{name.lower()}", "DisplayName": name} for name in groups],
            "GroupMemberships": [{"GroupId": f"g-{name.lower()}", "MemberId": {"UserId": uid}}
                                 for name, members in groups.items() for uid in members]}


JOHN = user("id-john", "john.doe")
JANE = user("id-jane", "jane")
BOB = user("id-bob", "bob")
GROUPS = {"Ops": ["id-john", "id-jane"], "Dev": ["id-jane"]}

OPS_RULE = {"identity_store_group": "Ops", "commands": ["/usr/bin/journalctl", "/usr/bin/kill --signal=HUP 1"], "nopasswd": True}
JANE_RULE = {"user": "jane", "commands": ['/usr/bin/id ""'], "sudo_as": ["root", "nobody"], "noexec": True, "setenv": True}
DEV_RULE = {"identity_store_group": "Dev", "commands": ["/usr/bin/systemctl restart nginx"], "nopasswd": True}


def setup(host, users, groups=GROUPS, rules=(OPS_RULE, JANE_RULE), expression="${path:userName}", **sudo):
    path = host.write_directory(directory(list(users), groups))
    return host.write_config({"source": {"type": "file", "path": str(path)}, "run_as": {"expression": expression},
                              "sudo": {"rules": list(rules), **sudo}})


def once(host, cfg, expect=Exit.OK):
    result = host.agent("--config", str(cfg), "--once")
    assert result.returncode == expect, result.stdout + result.stderr
    assert_tree_valid(host)
    return result


def assert_tree_valid(host):
    check = host.run(["visudo", "-c"], check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def rights(host, name):
    """Every sudoers entry `sudo -ll -U name` lists, as (run-as users, options, commands)."""
    out = host.run(["sudo", "-ll", "-U", name]).stdout
    entries, current, in_commands = [], None, False
    for line in out.splitlines():
        if line.strip() == "Sudoers entry:":
            current = {"runas": (), "options": frozenset(), "commands": []}
            entries.append(current)
            in_commands = False
        elif current is None:
            continue
        elif line.strip().startswith("RunAsUsers:"):
            current["runas"] = tuple(line.split(":", 1)[1].strip().split(", "))
        elif line.strip().startswith("Options:"):
            current["options"] = frozenset(line.split(":", 1)[1].strip().split(", "))
        elif line.strip() == "Commands:":
            in_commands = True
        elif in_commands and line.startswith("\t"):
            current["commands"].append(line.strip())
    return sorted((e["runas"], e["options"], tuple(e["commands"])) for e in entries)


def expected(*rules):
    out = []
    for r in rules:
        runas = r.get("sudo_as", r.get("runas", ["root"]))  # runas: the deprecated spelling
        runas = (runas,) if isinstance(runas, str) else tuple(runas)
        options = frozenset(["!authenticate" if r.get("nopasswd") else "authenticate",
                             "noexec" if r.get("noexec") else "!noexec",
                             "setenv" if r.get("setenv") else "!setenv"])
        commands = tuple(core.render_command(c) for c in r["commands"])
        out.append((runas, options, commands))
    return sorted(out)


def may_run(host, name, *command):
    return host.run(["sudo", "-l", "-U", name, *command], check=False).returncode == 0


def drop_ins(host):
    d = host.etc / "sudoers.d"
    return {p.name: p for p in d.iterdir() if p.name.startswith(core.FILE_PREFIX)}


def test_rights_equal_the_policy_and_nothing_more(isolated_host):
    host = isolated_host
    cfg = setup(host, [JOHN, JANE, BOB])
    plan = host.agent("--config", str(cfg), "plan")
    assert plan.returncode == Exit.CHANGES
    assert f"+ sudoers john.doe: {core.file_name('john.doe')}: + " in plan.stdout
    assert f"+ sudoers jane: {core.file_name('jane')}: + " in plan.stdout
    assert "sudoers bob" not in plan.stdout

    once(host, cfg)
    assert rights(host, "john.doe") == expected(OPS_RULE)
    assert rights(host, "jane") == expected(OPS_RULE, JANE_RULE)
    assert rights(host, "bob") == []
    # a dotted name's rules are really in effect (sudo skips dotted file names; ours has none)
    assert may_run(host, "john.doe", "/usr/bin/journalctl")
    assert may_run(host, "john.doe", "/usr/bin/kill", "--signal=HUP", "1")
    assert not may_run(host, "john.doe", "/usr/bin/kill", "--signal=HUP", "2")
    assert not may_run(host, "john.doe", "/usr/bin/id")
    assert may_run(host, "jane", "/usr/bin/id") and not may_run(host, "jane", "/usr/bin/id", "-u")
    files = drop_ins(host)
    assert set(files) == {core.file_name("john.doe"), core.file_name("jane")}
    for path in files.values():
        st = os.stat(path)
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o440, 0, 0)
        assert "." not in path.name
    assert not [n for n in os.listdir(host.etc / "sudoers.d") if n.startswith(core.TEMP_PREFIX)]

    # an unchanged sync changes and writes nothing
    stamps = {n: p.stat().st_mtime_ns for n, p in files.items()}
    ledger_stamp = (host.state_dir / "sudoers.json").stat().st_mtime_ns
    again = host.agent("--config", str(cfg), "plan")
    assert again.returncode == Exit.OK and "sudoers" not in again.stdout, again.stdout
    once(host, cfg)
    assert {n: p.stat().st_mtime_ns for n, p in drop_ins(host).items()} == stamps
    assert (host.state_dir / "sudoers.json").stat().st_mtime_ns == ledger_stamp
    assert not list((host.etc / "sudoers.d").glob(core.TEMP_PREFIX + "*"))


def test_policy_change_rewrites_only_changed_files(isolated_host):
    host = isolated_host
    once(host, setup(host, [JOHN, JANE]))
    stamps = {n: p.stat().st_mtime_ns for n, p in drop_ins(host).items()}
    cfg = setup(host, [JOHN, JANE], rules=(OPS_RULE, DEV_RULE))
    plan = host.agent("--config", str(cfg), "plan")
    assert plan.returncode == Exit.CHANGES
    added = core.Rule(1, tuple(DEV_RULE["commands"]), nopasswd=True).spec()
    removed = core.Rule(1, tuple(JANE_RULE["commands"]), tuple(JANE_RULE["sudo_as"]), noexec=True, setenv=True).spec()
    assert [l for l in plan.stdout.splitlines() if "sudoers" in l and not l.startswith("Plan")] == [
        f"~ sudoers jane: {core.file_name('jane')}: + {added}; - {removed}"]
    once(host, cfg)
    assert rights(host, "jane") == expected(OPS_RULE, DEV_RULE)
    assert rights(host, "john.doe") == expected(OPS_RULE)
    after = {n: p.stat().st_mtime_ns for n, p in drop_ins(host).items()}
    assert after[core.file_name("john.doe")] == stamps[core.file_name("john.doe")]
    assert after[core.file_name("jane")] != stamps[core.file_name("jane")]


def test_a_mode_changed_by_hand_is_put_back(isolated_host):
    host = isolated_host
    cfg = setup(host, [JOHN])
    once(host, cfg)
    path = drop_ins(host)[core.file_name("john.doe")]
    os.chmod(path, 0o640)
    assert "mode 0640 -> 0440" in host.agent("--config", str(cfg), "plan").stdout
    once(host, cfg)
    assert os.stat(path).st_mode & 0o7777 == 0o440


def test_disabled_and_out_of_scope_accounts_lose_their_rules(isolated_host):
    host = isolated_host
    once(host, setup(host, [JOHN, JANE, BOB]))
    assert may_run(host, "john.doe", "/usr/bin/journalctl")
    cfg = setup(host, [user("id-john", "john.doe", status="DISABLED"), JANE, BOB])
    plan = host.agent("--config", str(cfg), "plan").stdout
    assert "- disable john.doe" in plan and f"- sudoers-remove john.doe: {core.file_name('john.doe')} (account no longer active)" in plan
    once(host, cfg)
    assert core.file_name("john.doe") not in drop_ins(host)
    assert host.id("john.doe").returncode != 0
    parked = [n for n, f in host.passwd().items() if n.startswith("runas-off-")]
    assert len(parked) == 1 and rights(host, parked[0]) == []
    assert rights(host, "jane") == expected(OPS_RULE, JANE_RULE)
    ledger = (host.state_dir / "sudoers.json").read_text()
    assert "john.doe" not in ledger and "jane" in ledger

    # out of scope (jane leaves the scope group): account parked, drop-in gone in the same sync
    cfg = setup(host, [user("id-john", "john.doe", status="DISABLED"), JANE, BOB],
                groups={**GROUPS, "Staff": ["id-bob", "id-john"]})
    data = (host.root / "config.yaml").read_text() + "scope:\n  groups: [Staff]\n"
    (host.root / "config.yaml").write_text(data)
    once(host, cfg)
    assert drop_ins(host) == {}
    assert host.id("jane").returncode != 0


def test_hostile_names_never_produce_a_file_that_grants_anything(isolated_host):
    host = isolated_host
    hostile = ["ALL", "%sudo", "#0", "+admins", "a b", "a,b", "a=b", "a!b", "a\nroot", "root", "ssm-user", "OPS"]
    users = [user(f"id-{i}", f"person{i}@example.com", org=name) for i, name in enumerate(hostile)]
    everyone = {"Everyone": [u["UserId"] for u in users]}
    # written with the deprecated spelling of sudo_as, which is still accepted
    grant_all = {"identity_store_group": "Everyone", "commands": ["ALL"], "runas": "ALL", "nopasswd": True,
                 "shared_accounts": "all_members"}
    by_name = [{"run_as": name, "commands": ["/usr/bin/id"]} for name in ("OPS",)]
    host.run(["useradd", "-M", "ssm-user"])
    root_before = rights(host, "root")
    cfg = setup(host, users, groups=everyone, rules=[grant_all, *by_name],
                expression="${path:enterprise.organization}")
    result = once(host, cfg, expect=Exit.PARTIAL)
    files = drop_ins(host)
    # only OPS, a legal shared account, gets a file; all-capitals is quoted, not read as an alias
    assert set(files) == {core.file_name("OPS")}
    assert rights(host, "OPS") == expected(grant_all, by_name[0])
    assert rights(host, "root") == root_before
    assert rights(host, "ssm-user") == []
    # a=b is a legal account on Debian, but never a sudoers name
    assert host.id("a=b").returncode == 0 and rights(host, "a=b") == []
    assert "no sudo rights written: the account name contains '='" in result.stdout
    for name in hostile:
        if name not in ("OPS",):
            assert f"as {name!r}" in result.stdout, (name, result.stdout)
    content = "".join(p.read_text() for p in files.values())
    assert "ALL=(ALL)" in content and '"OPS" ALL=' in content and "#0" not in content and "%sudo" not in content


def test_shared_account_gets_run_as_rules_not_its_members_rules(isolated_host):
    host = isolated_host
    users = [user("id-ann", "ann@example.com", org="iret"), user("id-ben", "ben@example.com", org="iret")]
    groups = {"Admins": ["id-ann"], "Staff": ["id-ann", "id-ben"]}
    rules = [{"identity_store_group": "Admins", "commands": ["ALL"], "nopasswd": True},
             {"identity_store_group": "Staff", "commands": ["/usr/bin/uptime"], "nopasswd": True, "shared_accounts": "all_members"},
             {"run_as": "iret", "commands": ["/usr/bin/systemctl restart app"], "nopasswd": True}]
    once(host, setup(host, users, groups=groups, rules=rules, expression="${path:enterprise.organization}"))
    assert rights(host, "iret") == expected(rules[1], rules[2])
    assert not may_run(host, "iret", "/bin/sh")


def test_files_the_agent_did_not_write_are_never_touched(isolated_host):
    host = isolated_host
    d = host.etc / "sudoers.d"
    squatter = d / core.file_name("john.doe")
    squatter.write_text("# the admin's own file\n")
    os.chmod(squatter, 0o440)
    other = d / "zz-admin"
    other.write_text("Defaults:backup-admin !lecture\n")
    os.chmod(other, 0o440)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in d.iterdir()}
    cfg = setup(host, [JOHN, JANE, BOB])
    result = once(host, cfg, expect=Exit.PARTIAL)
    assert "was not written by runas-agent; left alone" in result.stdout
    assert {n: (p.read_bytes(), p.stat().st_mtime_ns) for n, p in ((q.name, q) for q in d.iterdir()) if n in before} == before
    assert rights(host, "john.doe") == []
    assert rights(host, "jane") == expected(OPS_RULE, JANE_RULE)
    # the account goes away: the admin's file stays
    once(host, setup(host, [JANE, BOB]), expect=Exit.OK)
    assert squatter.read_text() == "# the admin's own file\n" and other.exists()


CRASH = textwrap.dedent("""
    import os, sys
    from runas_agent.host import sudoers
    def crash(src, dst):
        os._exit(9)  # the process dies between writing the temp file and renaming it
    sudoers.os.rename = crash
    from runas_agent.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_crash_between_write_and_rename_leaves_a_valid_tree(isolated_host):
    host = isolated_host
    once(host, setup(host, [JOHN, JANE]))
    cfg = setup(host, [JOHN, JANE], rules=(OPS_RULE, DEV_RULE))
    env = dict(os.environ, PYTHONPATH=str(REPO / "agent"))
    crashed = host.run([sys.executable, "-c", CRASH, "--config", str(cfg), "--once"], check=False, env=env)
    assert crashed.returncode == 9, crashed.stdout + crashed.stderr
    leftovers = [n for n in os.listdir(host.etc / "sudoers.d") if n.startswith(core.TEMP_PREFIX)]
    assert leftovers and all("." in n for n in leftovers)
    assert_tree_valid(host)
    assert rights(host, "jane") == expected(OPS_RULE, JANE_RULE)  # the old rights, whole
    once(host, cfg)
    assert rights(host, "jane") == expected(OPS_RULE, DEV_RULE)
    assert not [n for n in os.listdir(host.etc / "sudoers.d") if n.startswith(core.TEMP_PREFIX)]


FAKE_VISUDO = textwrap.dedent("""\
    #!/bin/sh
    # visudo that fails the whole-tree check while a drop-in holds /usr/bin/fail-tree-check
    if [ "$#" -eq 1 ] && [ "$1" = "-c" ]; then
        for f in /etc/sudoers.d/runas-agent-*; do
            n=$(grep -n fail-tree-check "$f" 2>/dev/null | head -1 | cut -d: -f1)
            if [ -n "$n" ]; then echo "$f:$n:1: syntax error" >&2; exit 1; fi
        done
    fi
    exec visudo "$@"
""")


def test_failed_tree_check_restores_the_previous_file_and_names_account_and_rule(isolated_host):
    host = isolated_host
    fake = host.root / "fake-visudo"
    fake.write_text(FAKE_VISUDO)
    fake.chmod(0o755)
    once(host, setup(host, [JOHN, JANE], visudo=str(fake)))
    path = drop_ins(host)[core.file_name("jane")]
    before = path.read_bytes()
    bad = {"user": "jane", "commands": ["/usr/bin/fail-tree-check"]}
    cfg = setup(host, [JOHN, JANE], rules=(OPS_RULE, JANE_RULE, bad), visudo=str(fake))
    result = once(host, cfg, expect=Exit.PARTIAL)
    line = [l for l in result.stdout.splitlines() if "FAILED" in l]
    assert len(line) == 1 and "sudoers jane" in line[0]
    assert "sudo rights of jane" in line[0] and "sudo.rules[2]" in line[0] and "previous state restored" in line[0]
    assert path.read_bytes() == before and os.stat(path).st_mode & 0o7777 == 0o440
    assert rights(host, "jane") == expected(OPS_RULE, JANE_RULE)


def test_someone_elses_broken_file_neither_blocks_nor_is_touched(isolated_host):
    host = isolated_host
    once(host, setup(host, [JOHN, JANE]))
    broken = host.etc / "sudoers.d" / "zz-broken"
    broken.write_text("this is not sudoers (((\n")
    os.chmod(broken, 0o440)
    cfg = setup(host, [user("id-john", "john.doe", status="DISABLED"), JANE], rules=(OPS_RULE, DEV_RULE))
    result = host.agent("--config", str(cfg), "--once")
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert core.file_name("john.doe") not in drop_ins(host)  # rights taken away regardless
    assert "/usr/bin/systemctl restart nginx" in drop_ins(host)[core.file_name("jane")].read_text()
    assert broken.read_text() == "this is not sudoers (((\n"
    broken.unlink()
    assert_tree_valid(host)
    assert rights(host, "jane") == expected(OPS_RULE, DEV_RULE)


UNATTRIBUTED_VISUDO = textwrap.dedent("""\
    #!/bin/sh
    # visudo whose whole-tree check fails without naming a file
    if [ "$#" -eq 1 ] && [ "$1" = "-c" ] && [ -e /etc/visudo-broken ]; then echo "visudo: out of memory" >&2; exit 1; fi
    exec visudo "$@"
""")


def test_a_tree_check_that_names_no_file_blocks_writes_but_not_removals(isolated_host):
    host = isolated_host
    fake = host.root / "fake-visudo"
    fake.write_text(UNATTRIBUTED_VISUDO)
    fake.chmod(0o755)
    once(host, setup(host, [JOHN, JANE], visudo=str(fake)))
    before = drop_ins(host)[core.file_name("jane")].read_bytes()
    (host.etc / "visudo-broken").write_text("")
    cfg = setup(host, [user("id-john", "john.doe", status="DISABLED"), JANE], rules=(OPS_RULE, DEV_RULE), visudo=str(fake))
    result = host.agent("--config", str(cfg), "--once")
    assert result.returncode == Exit.PARTIAL, result.stdout + result.stderr
    failed = [l for l in result.stdout.splitlines() if "FAILED" in l]
    assert len(failed) == 1 and "sudoers jane" in failed[0] and "names no file" in failed[0]
    assert core.file_name("john.doe") not in drop_ins(host)
    assert drop_ins(host)[core.file_name("jane")].read_bytes() == before
    (host.etc / "visudo-broken").unlink()
    once(host, cfg)
    assert rights(host, "jane") == expected(OPS_RULE, DEV_RULE)


SSM_BLANKET = "# User rules for ssm-user\nssm-user ALL=(ALL) NOPASSWD:ALL\n"


def test_ssm_user_blanket_removed_only_when_opted_in_and_backed_up(isolated_host):
    host = isolated_host
    host.run(["useradd", "-M", "ssm-user"])
    blanket = host.etc / "sudoers.d" / core.SSM_USER_FILE
    blanket.write_text(SSM_BLANKET)
    os.chmod(blanket, 0o440)
    assert rights(host, "ssm-user") == [(("ALL",), frozenset({"!authenticate"}), ("ALL",))]

    once(host, setup(host, [JOHN]))
    assert blanket.read_text() == SSM_BLANKET  # default: left alone

    cfg = setup(host, [JOHN], remove_ssm_user_blanket=True)
    plan = host.agent("--config", str(cfg), "plan").stdout
    assert f"- sudoers-remove ssm-user: {core.SSM_USER_FILE}, the SSM agent's blanket drop-in" in plan
    once(host, cfg)
    assert not blanket.exists()
    assert rights(host, "ssm-user") == []
    backups = list((host.state_dir / "sudoers-backup").iterdir())
    assert [b.read_text() for b in backups] == [SSM_BLANKET]
    assert backups[0].stat().st_mode & 0o777 == 0o600
    assert rights(host, "john.doe") == expected(OPS_RULE)

    again = host.agent("--config", str(cfg), "plan")
    assert again.returncode == Exit.OK, again.stdout

    # the SSM agent writes it again: removed again, the identical backup kept once
    blanket.write_text(SSM_BLANKET)
    os.chmod(blanket, 0o440)
    once(host, cfg)
    assert not blanket.exists() and len(list((host.state_dir / "sudoers-backup").iterdir())) == 1


def test_ssm_user_file_edited_by_hand_is_left_alone(isolated_host):
    host = isolated_host
    blanket = host.etc / "sudoers.d" / core.SSM_USER_FILE
    blanket.write_text(SSM_BLANKET + "deploy ALL=(root) NOPASSWD: /usr/bin/systemctl\n")
    os.chmod(blanket, 0o440)
    result = once(host, setup(host, [JOHN], remove_ssm_user_blanket=True))
    assert "leaves it alone" in result.stdout and blanket.exists()


COUNTING_VISUDO = textwrap.dedent("""\
    #!/bin/sh
    # visudo that logs each call, and fails the whole-tree check while a drop-in holds /usr/bin/fail-tree-check
    echo "$*" >> /etc/visudo-calls
    if [ "$#" -eq 1 ] && [ "$1" = "-c" ]; then
        for f in /etc/sudoers.d/runas-agent-*; do
            n=$(grep -n fail-tree-check "$f" 2>/dev/null | head -1 | cut -d: -f1)
            if [ -n "$n" ]; then echo "$f:$n:1: syntax error" >&2; exit 1; fi
        done
    fi
    exec visudo "$@"
""")


def _many(n):
    users = [user(f"id-{i}", f"user{i}.x") for i in range(n)]
    return users, {"Ops": [u["UserId"] for u in users]}


def test_many_drop_ins_are_checked_together(isolated_host):
    host = isolated_host
    fake = host.root / "fake-visudo"
    fake.write_text(COUNTING_VISUDO)
    fake.chmod(0o755)
    users, groups = _many(30)
    once(host, setup(host, users, groups=groups, rules=(OPS_RULE,), visudo=str(fake)))
    calls = (host.etc / "visudo-calls").read_text().splitlines()
    assert len(calls) <= 4, calls  # not two or three per file
    assert len(drop_ins(host)) == 30
    assert rights(host, "user0.x") == rights(host, "user29.x") == expected(OPS_RULE)


def test_a_failing_batch_falls_back_and_isolates_the_bad_drop_in(isolated_host):
    host = isolated_host
    fake = host.root / "fake-visudo"
    fake.write_text(COUNTING_VISUDO)
    fake.chmod(0o755)
    users, groups = _many(25)
    bad = {"user": "user7.x", "commands": ["/usr/bin/fail-tree-check"]}
    result = once(host, setup(host, users, groups=groups, rules=(OPS_RULE, bad), visudo=str(fake)), expect=Exit.PARTIAL)
    failed = [l for l in result.stdout.splitlines() if "FAILED" in l]
    assert len(failed) == 1 and "sudoers user7.x" in failed[0] and "sudo.rules[1]" in failed[0], result.stdout
    files = drop_ins(host)
    assert len(files) == 24 and core.file_name("user7.x") not in files
    assert rights(host, "user7.x") == []
    assert rights(host, "user8.x") == expected(OPS_RULE)
    assert json_ledger(host) == {f"user{i}.x": core.file_name(f"user{i}.x") for i in range(25) if i != 7}


def json_ledger(host):
    return json.loads((host.state_dir / "sudoers.json").read_text())["files"]


def test_many_drop_ins_removed_together_when_a_rule_goes(isolated_host):
    host = isolated_host
    fake = host.root / "fake-visudo"
    fake.write_text(COUNTING_VISUDO)
    fake.chmod(0o755)
    users, groups = _many(30)
    once(host, setup(host, users + [JANE], groups=groups, rules=(OPS_RULE, JANE_RULE), visudo=str(fake)))
    (host.etc / "visudo-calls").unlink()
    plan = host.agent("--config", str(setup(host, users + [JANE], groups=groups, rules=(JANE_RULE,), visudo=str(fake))), "plan")
    assert plan.stdout.count("- sudoers-remove user") == 30 and "no rule of the policy applies any more" in plan.stdout
    once(host, setup(host, users + [JANE], groups=groups, rules=(JANE_RULE,), visudo=str(fake)))
    # baseline, one check for all 30 removals, and jane's rewrite (-cf, -c): not one check per file
    assert len((host.etc / "visudo-calls").read_text().splitlines()) <= 4
    assert set(drop_ins(host)) == {core.file_name("jane")}
    assert rights(host, "user3.x") == [] and rights(host, "jane") == expected(JANE_RULE)
    assert json_ledger(host) == {"jane": core.file_name("jane")}


def test_real_sudo_runs_exactly_what_the_policy_grants_and_nothing_after_disable(isolated_host):
    host = isolated_host
    rule = {"identity_store_group": "Ops", "commands": ["/usr/bin/id -u"], "nopasswd": True}
    once(host, setup(host, [JOHN], rules=(rule,)))

    def sudo_as(name, *command):
        return host.run(["runuser", "-u", name, "--", "sudo", "-n", *command], check=False)

    granted = sudo_as("john.doe", "/usr/bin/id", "-u")
    assert (granted.returncode, granted.stdout) == (0, "0\n"), granted.stderr
    for other in (["/usr/bin/id", "-g"], ["/usr/bin/id"], ["/usr/bin/whoami"], ["/bin/sh", "-c", "id -u"]):
        refused = sudo_as("john.doe", *other)
        assert refused.returncode != 0 and refused.stdout == "", other

    uid = host.passwd()["john.doe"][2]
    once(host, setup(host, [user("id-john", "john.doe", status="DISABLED")], rules=(rule,)))
    parked = f"runas-off-{uid}"
    assert parked in host.passwd()
    after = sudo_as(parked, "/usr/bin/id", "-u")
    assert after.returncode != 0 and after.stdout == ""
    # the real risk of a drop-in left behind: whoever takes the name next would inherit the rights
    host.run(["useradd", "-M", "john.doe"])
    newcomer = sudo_as("john.doe", "/usr/bin/id", "-u")
    assert newcomer.returncode != 0 and newcomer.stdout == "", newcomer.stdout
