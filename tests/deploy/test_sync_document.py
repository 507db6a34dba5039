"""deploy/ssm/runas-agent-sync.yaml run the way the SSM agent runs an aws:runShellScript step: the
parameters pasted into the lines, the lines written to a script, the script run by sh, as root, with
the real runas-agent on PATH reading /etc/runas-agent/config.yaml, in an isolated host."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from runas_agent.exitcodes import Exit
from tests.deploy.templates import ssm_document

pytestmark = pytest.mark.host
STORE = "d-1234567890"


def user(user_id: str, name: str) -> dict:
    return {"IdentityStoreId": STORE, "UserId": user_id, "UserName": name, "UserStatus": "ENABLED"}


def render(parameters: dict[str, str]) -> str:
    """The step's script as the SSM agent writes it: every {{ Name }} replaced by its value, after the
    value matched the parameter's allowedPattern."""
    document = ssm_document("runas-agent-sync.yaml")
    for name, spec in document["parameters"].items():
        value = parameters.get(name, spec["default"])
        assert re.search(spec["allowedPattern"], value), (name, value)
        parameters[name] = value
    script = "\n".join(document["mainSteps"][0]["inputs"]["runCommand"])
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: parameters[m.group(1)], script)


def configure(host, users: list[dict], **extra) -> None:
    directory = host.write_directory({"IdentityStoreId": STORE, "Users": users, "Groups": [], "GroupMemberships": []})
    config = {"source": {"type": "file", "path": str(directory)}, "run_as": {"expression": "${path:userName}"},
              "state_dir": str(host.state_dir), **extra}
    (host.etc / "runas-agent").mkdir(exist_ok=True)
    (host.etc / "runas-agent" / "config.yaml").write_text(yaml.safe_dump(config))


def run_document(host, hold_lock: bool = False, **parameters: str):
    """Run the document's script; with `hold_lock`, while another process holds the sync lock."""
    script = host.root / "_script.sh"
    script.write_text(render(dict(parameters)) + "\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin")
    started = time.monotonic()
    if not hold_lock:
        proc = host.run(["sh", "-c", 'exec sh "$0"', str(script)], check=False, env=env)
    else:
        holder = ("import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
                  "print('held', flush=True); time.sleep(60)")
        lock = host.state_dir / "sync.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        proc = host.run(["sh", "-c", '"$1" -c "$2" "$3" > "$3.held" & holder=$!; '
                         'while [ ! -s "$3.held" ]; do sleep 0.05; done; '
                         'sh "$0"; rc=$?; kill "$holder"; exit "$rc"', str(script), sys.executable, holder, str(lock)],
                        check=False, env=env)
    return proc, time.monotonic() - started


def test_the_document_syncs_the_instance(isolated_host):
    configure(isolated_host, [user("id-alice", "alice"), user("id-bob", "bob")])
    proc, _ = run_document(isolated_host, MaxDelaySeconds="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pausing" not in proc.stdout
    assert isolated_host.id("alice").returncode == 0 and isolated_host.id("bob").returncode == 0


def test_the_pause_is_random_and_bounded(isolated_host):
    configure(isolated_host, [user("id-alice", "alice")])
    proc, seconds = run_document(isolated_host, MaxDelaySeconds="2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (delay,) = re.findall(r"runas-agent: pausing (\d+)s \(random, at most 2s\)", proc.stdout)
    assert 0 <= int(delay) <= 2 and seconds >= int(delay)


def test_skipped_identities_do_not_fail_the_command_but_are_reported(isolated_host):
    configure(isolated_host, [user("id-alice", "alice"), user("id-root", "root")])
    proc, _ = run_document(isolated_host, MaxDelaySeconds="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "some identities were skipped or actions failed" in proc.stdout
    assert "root" in proc.stdout and "reserved" in proc.stdout
    assert isolated_host.id("alice").returncode == 0


def test_other_failures_are_the_commands_failure(isolated_host):
    configure(isolated_host, [user("id-alice", "alice")], run_as={"expression": "${path:shoeSize}"})
    proc, _ = run_document(isolated_host, MaxDelaySeconds="0")
    assert proc.returncode == Exit.CONFIG, proc.stdout + proc.stderr
    assert isolated_host.id("alice").returncode != 0


def test_a_sync_that_holds_the_lock_longer_than_wait_seconds_is_exit_75(isolated_host):
    configure(isolated_host, [user("id-alice", "alice")])
    proc, _ = run_document(isolated_host, hold_lock=True, MaxDelaySeconds="0", WaitSeconds="1")
    assert proc.returncode == Exit.BUSY, proc.stdout + proc.stderr
    assert isolated_host.id("alice").returncode != 0
