"""The remembered no-op plan (core/memo.py) against real hosts' account databases, in isolated hosts:
a sync with nothing to do is answered from the memo only while every input is the same, in any
process, and any change an administrator, a process or the directory makes is planned afresh."""

from __future__ import annotations

import json
import os

import pytest

from runas_agent.exitcodes import Exit
from tests.integration.test_sync_host import doc, setup, u

pytestmark = pytest.mark.host

PEOPLE = [u(f"id-{i}", f"p{i}@example.com") for i in range(12)] + [u("id-pg", "postgres")]  # postgres: reserved


def once(host, cfg, seed="0"):
    result = host.agent("--config", str(cfg), "--once", "--json", env={"PYTHONHASHSEED": seed})
    assert result.returncode in (Exit.OK, Exit.PARTIAL), result.stdout + result.stderr
    data = json.loads(result.stdout)
    data.pop("seconds")
    return result.returncode, data


def files(host):
    found = {}
    for top in (host.etc, host.state_dir):
        for name in sorted(os.listdir(top)):
            path = top / name
            if path.is_file():
                st = path.stat()
                found[str(path)] = (st.st_mtime_ns, st.st_ino, path.read_bytes())
    return found


def test_a_no_op_is_answered_from_the_memo_in_any_process_and_writes_nothing(isolated_host):
    cfg = setup(isolated_host, PEOPLE, "${path:userName}")
    status, first = once(isolated_host, cfg)
    assert status == Exit.PARTIAL and first["counts"]["created"] == 12 and not first["plan_remembered"]
    status, planned = once(isolated_host, cfg)  # nothing to do: planned, and remembered
    assert status == Exit.PARTIAL and planned["counts"]["actions"] == 0 and not planned["plan_remembered"]
    assert (isolated_host.state_dir / "plan-memo.json").exists()
    before = files(isolated_host)
    for seed in ("1", "2", "3"):  # other string hashing: the same fingerprint
        status, recalled = once(isolated_host, cfg, seed)
        assert status == Exit.PARTIAL and recalled["plan_remembered"]
        assert {**recalled, "plan_remembered": False} == planned  # the same skips, warnings and counts
    assert files(isolated_host) == before  # nothing written, the memo included
    plan = isolated_host.agent("--config", str(cfg), "plan", "--json")
    assert plan.returncode == Exit.PARTIAL and json.loads(plan.stdout)["plan_remembered"]


@pytest.mark.parametrize("change, expect", [
    # an administrator edits a managed account by hand: the shell is put back
    (lambda h, cfg: h.run(["usermod", "-s", "/bin/sh", "p3@example.com"]), ("update", "p3@example.com")),
    # a person leaves the directory: their account is disabled
    (lambda h, cfg: h.write_directory(doc([p for p in PEOPLE if p["UserId"] != "id-4"])), ("disable", "p4@example.com")),
    # a home is removed by hand (the plan leaves an active account's home to its owner)
    (lambda h, cfg: h.run(["rm", "-rf", "/home/p5@example.com"]), None),
    # the ledger is lost: rebuilt from proof, and said so
    (lambda h, cfg: (h.state_dir / "ledger.json").unlink(), "warning"),
    # a group an administrator edits by hand
    (lambda h, cfg: h.run(["gpasswd", "-a", "p6@example.com", "adm"]), None),
])
def test_any_change_after_a_remembered_no_op_is_planned_afresh(isolated_host, change, expect):
    cfg = setup(isolated_host, PEOPLE, "${path:userName}")
    once(isolated_host, cfg)
    once(isolated_host, cfg)
    assert once(isolated_host, cfg)[1]["plan_remembered"]
    change(isolated_host, cfg)
    status, after = once(isolated_host, cfg)
    assert not after["plan_remembered"]
    if expect == "warning":
        assert any("rebuilt" in w for w in after["warnings"]), after["warnings"]
    elif expect is not None:
        assert [(a["action"], a["name"]) for a in after["actions"]] == [expect]
    once(isolated_host, cfg)  # nothing left to do: planned and remembered again
    status, again = once(isolated_host, cfg)
    assert again["counts"]["actions"] == 0 and again["plan_remembered"]


def test_a_read_whose_malformed_record_is_carried_over_is_not_taken_for_the_read_it_merges_into(isolated_host):
    """A malformed record that names its UserId is replaced by that person's record in the last
    applied snapshot (sources/admission.py): the merged directory's document is then byte for byte
    the read before the record broke, but its problems are not. The malformed record is reported (a
    skip, exit 3) whether or not the read before it was a remembered no-op, and once it is mended
    the report of it goes."""
    people = PEOPLE[:3]
    cfg = setup(isolated_host, people, "${path:userName}")
    assert once(isolated_host, cfg)[1]["counts"]["created"] == 3
    status, planned = once(isolated_host, cfg)  # nothing to do: remembered
    assert status == Exit.OK and not planned["skips"]
    assert once(isolated_host, cfg)[1]["plan_remembered"]

    broken = dict(people[-1], UserName=5)  # the last record, so the merge puts it back where it was
    isolated_host.write_directory(doc(people[:-1] + [broken]))
    status, after = once(isolated_host, cfg)
    assert [s["identity"] for s in after["skips"]] == ["user id-2"], (status, after)
    assert status == Exit.PARTIAL and not after["plan_remembered"]

    once(isolated_host, cfg)  # the same malformed read again: now it may be remembered
    isolated_host.write_directory(doc(people))  # mended
    status, mended = once(isolated_host, cfg)
    assert status == Exit.OK and not mended["skips"], mended
