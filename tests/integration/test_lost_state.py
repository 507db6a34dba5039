"""Lost and unwritable state, with the real agent in isolated hosts: a deleted or emptied ledger is
rebuilt only from proof of ownership and the sync says so; a state directory that cannot be
written is a clear error, and the exit status says whether changes were applied."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runas_agent.exitcodes import Exit
from tests.hosts.namespace import REPO
from tests.security.common import configure, need_sudo, publish, uid_of, user

pytestmark = pytest.mark.host
PEOPLE = [user("id-ann", "ann"), user("id-bob", "bob"), user("id-cid", "cid")]


def once(host, cfg) -> subprocess.CompletedProcess:
    return host.agent("--config", str(cfg), "--once")


@pytest.mark.parametrize("loss", ["deleted", "emptied"])
def test_a_lost_ledger_is_rebuilt_from_proof_and_the_leaver_is_still_disabled(isolated_host, loss):
    host = isolated_host
    cfg = configure(host, PEOPLE)
    assert once(host, cfg).returncode == Exit.OK
    # an account that only claims to be the agent's: the marker, a UID in the range, derived from nothing
    host.run(["groupadd", "-g", "1000000007", "mal"])
    host.run(["useradd", "-u", "1000000007", "-g", "mal", "-c", "runas-agent Mallory (mal)", "mal"])
    ledger = host.state_dir / "ledger.json"
    if loss == "deleted":
        ledger.unlink()
    else:
        ledger.write_bytes(b"")
    publish(host, PEOPLE[:2])  # cid leaves
    result = once(host, cfg)
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert "the ledger was lost: rebuilt from proof of ownership" in result.stdout
    assert "- disable cid" in result.stdout and uid_of(host, "cid") is None
    assert "mal (uid 1000000007) carries the runas-agent marker, but its UID derives from no directory identity" in result.stdout
    assert uid_of(host, "mal") == 1000000007 and uid_of(host, "ann") is not None
    assert sorted(json.loads(ledger.read_text())["accounts"]) == ["ann", "bob", "cid"]
    again = once(host, cfg)
    assert again.returncode == Exit.OK and "ledger was lost" not in again.stdout


READ_ONLY = 'mount -o bind,ro "$1" "$1" && shift && exec "$@"'


def test_a_read_only_state_directory_changes_nothing_and_says_why(isolated_host):
    host = isolated_host
    cfg = configure(host, PEOPLE)
    result = host.run(["sh", "-c", READ_ONLY, "sh", str(host.state_dir), sys.executable, "-m", "runas_agent",
                       "--config", str(cfg), "--once"], check=False, env=dict(os.environ, PYTHONPATH=str(REPO / "agent")))
    assert result.returncode == Exit.ERROR, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert str(host.state_dir) in result.stderr and "Read-only file system" in result.stderr
    assert "nothing was changed" in result.stderr and uid_of(host, "ann") is None


def test_an_unreadable_ledger_changes_nothing_and_says_why(isolated_host):
    host = isolated_host
    cfg = configure(host, PEOPLE)
    ledger = host.state_dir / "ledger.json"
    ledger.mkdir()
    result = once(host, cfg)
    assert result.returncode == Exit.ERROR, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"{ledger}: cannot read" in result.stderr and "nothing was changed" in result.stderr
    assert uid_of(host, "ann") is None


def test_state_that_cannot_be_recorded_after_the_changes_says_they_were_applied(isolated_host):
    host = isolated_host
    cfg = configure(host, PEOPLE)
    snapshot = host.state_dir / "directory.json"
    snapshot.mkdir()  # the last step of the sync, the snapshot, cannot be written
    result = once(host, cfg)
    assert result.returncode == Exit.PARTIAL, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "the changes above were applied, but" in result.stderr and str(snapshot) in result.stderr
    assert uid_of(host, "ann") is not None
    os.rmdir(snapshot)
    assert once(host, cfg).returncode == Exit.OK


def test_a_lost_sudoers_ledger_is_rebuilt_and_the_leavers_drop_in_removed(isolated_host):
    need_sudo()
    host = isolated_host
    ops = {"identity_store_group": "Ops", "commands": ["/usr/bin/journalctl"], "nopasswd": True}
    cfg = configure(host, PEOPLE, directory_groups={"Ops": ["id-ann", "id-cid"]}, sudo={"rules": [ops]})
    assert once(host, cfg).returncode == Exit.OK
    drop_ins = host.etc / "sudoers.d"
    cid = [n for n in os.listdir(drop_ins) if n.startswith("runas-agent-cid-")]
    assert len(cid) == 1
    (host.state_dir / "sudoers.json").unlink()
    publish(host, PEOPLE[:2], {"Ops": ["id-ann"]})  # cid leaves
    result = once(host, cfg)
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert "the sudoers ledger was lost: rebuilt for 2 drop-in(s)" in result.stdout
    assert not (drop_ins / cid[0]).exists() and uid_of(host, "cid") is None
    assert any(n.startswith("runas-agent-ann-") for n in os.listdir(drop_ins))


def test_an_account_of_the_agents_missing_from_its_ledger_is_adopted_and_disabled_when_its_person_leaves(isolated_host):
    """What older versions left after a failed create: the account exists, with the marker, but the
    ledger dropped it; it would never be disabled."""
    host = isolated_host
    cfg = configure(host, PEOPLE)
    assert once(host, cfg).returncode == Exit.OK
    ledger = host.state_dir / "ledger.json"
    data = json.loads(ledger.read_text())
    del data["accounts"]["cid"]
    ledger.write_text(json.dumps(data))
    publish(host, PEOPLE[:2])  # cid leaves
    result = once(host, cfg)
    assert result.returncode == Exit.OK, result.stdout + result.stderr
    assert "the ledger did not name (left by an interrupted or older sync), adopted from proof of ownership: cid" in result.stdout
    assert "- disable cid" in result.stdout and uid_of(host, "cid") is None
    assert "cid" in json.loads(ledger.read_text())["accounts"]
