"""Reads that cannot be trusted as they are, against the real runas-agent in isolated hosts:
an Identity Store endpoint that drops `Extensions` or `UserStatus` (through real boto3), malformed
records of known people, and hostile directory files and configurations. Each ends with nothing
changed on the host that should not change, and a message naming the cause."""

from __future__ import annotations

import hashlib
import json

import pytest

from runas_agent.exitcodes import Exit
from tests.endpoint.directories import user_id

pytest_plugins = ["tests.endpoint.fixtures"]
pytestmark = pytest.mark.host

STORE = "d-1234567890"


def person(index: int, name: str, org: str | None = None, status: str = "ENABLED") -> dict:
    record = {"IdentityStoreId": STORE, "UserId": user_id(index), "UserName": name, "UserStatus": status}
    if org is not None:
        record["Extensions"] = {"aws:identitystore:enterprise": {"organization": org}}
    return record


def directory(*users: dict) -> dict:
    return {"IdentityStoreId": STORE, "Users": list(users), "Groups": [], "GroupMemberships": []}


ALICE, BOB, DAVE = person(1, "alice", "iret"), person(2, "bob", "iret"), person(3, "dave", "acme")
ERIN = person(4, "erin", "acme", "DISABLED")


def host_state(host) -> dict[str, str]:
    out = {name: hashlib.sha256((host.etc / name).read_bytes()).hexdigest() for name in ("passwd", "shadow", "group", "gshadow")}
    for name in ("ledger.json", "directory.json"):
        path = host.state_dir / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"
    return out


def once(host, cfg, *args):
    return host.agent("--config", str(cfg), "--once", *args)


# --- an Identity Store endpoint that drops fields -------------------------------------------------

def identitystore_config(host, endpoint, expression):
    return host.write_config({
        "source": {"type": "identitystore", "region": endpoint.region, "identity_store_id": STORE,
                   "endpoint_url": endpoint.url, "max_attempts": 1},
        "run_as": {"expression": expression},
        # wide open: only the refusal of the read itself can keep the accounts
        "safety": {"max_disable_fraction": 1.0, "max_disable_count": 1000}})


@pytest.mark.parametrize("member, expression, accounts, message", [
    ("Extensions", "${path:enterprise.organization}", ("iret", "acme"),
     "run_as.expression reads enterprise.organization, but none of the 4 users carries the enterprise extension"),
    ("UserStatus", "${path:userName}", ("alice", "bob", "dave"),
     "none of the 4 users carries UserStatus, which the Identity Store always returns"),
])
def test_a_read_that_dropped_a_field_changes_nothing(isolated_host, identitystore_endpoint, member, expression, accounts, message):
    identitystore_endpoint.seed(directory(ALICE, BOB, DAVE, ERIN))
    cfg = identitystore_config(isolated_host, identitystore_endpoint, expression)
    first = once(isolated_host, cfg)
    assert first.returncode == Exit.OK, first.stdout + first.stderr
    assert all(isolated_host.id(name).returncode == 0 for name in accounts)
    before = host_state(isolated_host)

    identitystore_endpoint.inject("ListUsers", "drop_field", member=member)
    for command in (["plan"], ["--once"]):
        result = isolated_host.agent("--config", str(cfg), *command)
        assert result.returncode == Exit.ERROR, result.stdout + result.stderr
        assert message in result.stderr
        assert "an SDK older than botocore 1.42.5, a proxy, or an endpoint that is not the Identity Store" in result.stderr
    assert host_state(isolated_host) == before
    assert isolated_host.id("erin").returncode != 0  # disabled, and still without an account


def test_an_unknown_status_of_a_known_person_keeps_their_account(isolated_host, identitystore_endpoint):
    """A UserStatus the agent does not know (a future one, served through real boto3) neither
    disables nor changes the person's account; the rest of the sync proceeds."""
    identitystore_endpoint.seed(directory(ALICE, BOB, DAVE))
    cfg = identitystore_config(isolated_host, identitystore_endpoint, "${path:userName}")
    assert once(isolated_host, cfg).returncode == Exit.OK
    alice = isolated_host.passwd()["alice"]

    identitystore_endpoint.seed(directory(ALICE, BOB, person(5, "frank")))  # dave leaves, frank joins
    identitystore_endpoint.inject("ListUsers", "user_field", member="UserStatus", user_id=ALICE["UserId"], value="SUSPENDED")
    result = once(isolated_host, cfg)
    assert result.returncode == Exit.PARTIAL, result.stdout + result.stderr
    assert f"! skip user alice ({ALICE['UserId']}): unknown UserStatus 'SUSPENDED': the record is malformed; " \
           "the person's account, if any, is kept as it is" in result.stdout
    assert isolated_host.passwd()["alice"] == alice
    assert isolated_host.id("frank").returncode == 0 and isolated_host.id("dave").returncode != 0


# --- malformed records of known people (file source) ----------------------------------------------

def file_config(host, document, expression="${path:userName}"):
    path = host.write_directory(document)
    return host.write_config({"source": {"type": "file", "path": str(path)}, "run_as": {"expression": expression},
                              "safety": {"max_disable_fraction": 1.0, "max_disable_count": 1000}})


def malformed(change):
    record = dict(ALICE)
    change(record)
    return record


TIED = {
    "UserStatus WEIRD": (malformed(lambda r: r.update(UserStatus="WEIRD")), "unknown UserStatus 'WEIRD'"),
    "UserName a number": (malformed(lambda r: r.update(UserName=42)), "UserName is a number"),
    "no UserStatus": (malformed(lambda r: r.pop("UserStatus")), "the record has no UserStatus"),
    "Extensions not an object": (malformed(lambda r: r.update(Extensions=["x"])), "Extensions is a list, not an object"),
}
UNTIED = {
    "no UserId": (malformed(lambda r: r.pop("UserId")), "Users[0]: UserId is missing"),
    "null": (None, "Users[0]: the record is null, not an object"),
    "UserId a number": (malformed(lambda r: r.update(UserId=7)), "Users[0]: UserId is a number"),
}


@pytest.mark.parametrize("case", sorted(TIED))
def test_a_malformed_record_naming_its_userid_keeps_that_account_only(isolated_host, case):
    record, reason = TIED[case]
    cfg = file_config(isolated_host, directory(ALICE, BOB, DAVE))
    assert once(isolated_host, cfg).returncode == Exit.OK
    alice = isolated_host.passwd()["alice"]

    cfg = file_config(isolated_host, directory(record, BOB, person(5, "frank")))  # dave leaves, frank joins
    result = once(isolated_host, cfg)
    assert result.returncode == Exit.PARTIAL, result.stdout + result.stderr
    assert reason in result.stdout and "the person's account, if any, is kept as it is" in result.stdout
    assert "kept as in the last applied snapshot: alice (their records in this read are malformed)" in result.stdout
    assert isolated_host.passwd()["alice"] == alice                      # kept, unchanged
    assert isolated_host.id("dave").returncode != 0                       # really gone: disabled
    assert isolated_host.id("frank").returncode == 0                      # the rest proceeds


@pytest.mark.parametrize("case", sorted(UNTIED))
def test_a_record_that_names_nobody_keeps_everyone_missing(isolated_host, case):
    """It could be anyone's: while it is there, nobody missing from the read is disabled (dave, who
    really left, included); new people still get accounts."""
    record, reason = UNTIED[case]
    cfg = file_config(isolated_host, directory(ALICE, BOB, DAVE))
    assert once(isolated_host, cfg).returncode == Exit.OK
    passwd = isolated_host.passwd()

    cfg = file_config(isolated_host, directory(record, BOB, person(5, "frank")))
    result = once(isolated_host, cfg)
    assert result.returncode == Exit.PARTIAL, result.stdout + result.stderr
    assert reason in result.stdout and "the record cannot be tied to a person" in result.stdout
    assert "kept as in the last applied snapshot: alice, dave (this read holds 1 user record(s) that name no UserId)" in result.stdout
    assert isolated_host.passwd()["alice"] == passwd["alice"] and isolated_host.passwd()["dave"] == passwd["dave"]
    assert isolated_host.id("frank").returncode == 0

    # once the record is fixed, dave's departure is applied
    cfg = file_config(isolated_host, directory(ALICE, BOB, person(5, "frank")))
    assert once(isolated_host, cfg).returncode == Exit.OK
    assert isolated_host.id("dave").returncode != 0 and isolated_host.id("alice").returncode == 0


def test_without_an_earlier_record_a_disable_of_a_held_person_is_refused(isolated_host):
    """No last snapshot to keep alice as she was (removed, e.g. by `runas-agent image`): the plan
    that would disable her account is refused as a whole."""
    cfg = file_config(isolated_host, directory(ALICE, BOB))
    assert once(isolated_host, cfg).returncode == Exit.OK
    (isolated_host.state_dir / "directory.json").unlink()
    before = host_state(isolated_host)
    cfg = file_config(isolated_host, directory(TIED["UserStatus WEIRD"][0], BOB))
    result = once(isolated_host, cfg)
    assert result.returncode == Exit.REFUSED, result.stdout + result.stderr
    assert f"the plan would disable alice, but the record of {ALICE['UserId']} is malformed" in result.stdout
    assert host_state(isolated_host) == before


# --- hostile directory files and configurations ---------------------------------------------------

def _yaml_document() -> bytes:
    import yaml

    return yaml.safe_dump(directory(ALICE, BOB)).encode()


def _truncated_at_a_line() -> bytes:
    text = json.dumps(directory(ALICE, BOB, DAVE), indent=1)
    lines = text.splitlines(keepends=True)
    return "".join(lines[: len(lines) // 2]).encode()


HOSTILE = {
    "YAML": (_yaml_document, "not a JSON directory document"),
    "truncated at a line boundary": (_truncated_at_a_line, "not a JSON directory document"),
    "a key twice": (lambda: b'{"IdentityStoreId": "d-1234567890", "Users": [], "Users": []}',
                    "the key 'Users' appears twice in one object"),
    "nested too deeply": (lambda: b'{"Users": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "nested too deeply"),
    "NaN": (lambda: b'{"Users": [], "FormatVersion": NaN}', "NaN is not a JSON number"),
    "larger than the cap": (lambda: b'{"Users": []' + b" " * 70_000 + b"}", "more than source.max_document_bytes (65536); not read"),
    "not UTF-8": (lambda: b'{"Users": ["\xff"]}', "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_directory_file_changes_nothing(isolated_host, case):
    make, message = HOSTILE[case]
    cfg = file_config(isolated_host, directory(ALICE, BOB, DAVE))
    assert once(isolated_host, cfg).returncode == Exit.OK
    before = host_state(isolated_host)
    path = isolated_host.root / "directory.json"
    path.write_bytes(make())
    config = isolated_host.write_config({"source": {"type": "file", "path": str(path), "max_document_bytes": 65536},
                                         "run_as": {"expression": "${path:userName}"},
                                         "safety": {"max_disable_fraction": 1.0, "max_disable_count": 1000}})
    result = once(isolated_host, config)
    assert result.returncode == Exit.ERROR, result.stdout + result.stderr
    assert message in result.stderr and "cannot read the directory, nothing was changed" in result.stderr
    assert host_state(isolated_host) == before


ALIAS_BOMB = """\
source: {type: file, path: /nonexistent.json}
run_as: {expression: "${path:userName}"}
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize("text, message", [
    (ALIAS_BOMB, "the anchor &a is refused: the configuration takes no anchors or aliases"),
    ("source: {type: file, path: /srv/d.json}\nrun_as: {expression: '${path:userName}'}\n"
     "run_as: {expression: '${path:enterprise.organization}'}\n", "the key 'run_as' appears twice in one mapping"),
])
def test_a_hostile_configuration_is_refused_before_anything_runs(isolated_host, text, message):
    path = isolated_host.root / "config.yaml"
    path.write_text(text)
    for command in (["check-config", str(path)], ["--config", str(path), "--once"]):
        result = isolated_host.agent(*command)
        assert result.returncode == Exit.CONFIG, result.stdout + result.stderr
        assert message in result.stderr
    assert not (isolated_host.state_dir / "ledger.json").exists()
