"""`runas-agent doctor`, the AWS links, against the local endpoint (Identity Store, sso-admin with ABAC,
SSM documents) through the real boto3 clients: the all-good case, then each link broken on its own.

The host side here is a staged directory (passwd, group, os-release, state, sudoers.d) and a stand-in
process list; the checks that read the real /etc run in isolated hosts (test_doctor_host.py)."""

from __future__ import annotations

import gzip
import json
import shutil
import time
import types
import uuid
from pathlib import Path

import boto3
import botocore
import botocore.session
import pytest
import yaml

from runas_agent.directory import ENTERPRISE_EXTENSION
from runas_agent.doctor.chain import Doctor
from runas_agent.doctor.check import FAILED, OK, SKIPPED, WARNING
from runas_agent.doctor.cli import exit_status, render
from runas_agent.doctor.env import Probe
from runas_agent.exitcodes import Exit
from runas_agent.host.accounts import read_host
from runas_agent.sources.identitystore import fields_verdict
from tests import signing
from tests.endpoint import ssm_documents, ssoadmin_abac

pytest_plugins = ["tests.endpoint.fixtures"]
STORE = "d-1234567890"


def uid(name: str) -> str:
    """A UserId in the service's format, stable per name."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


def person(user_id: str, name: str, org: str | None = None, status: str = "ENABLED") -> dict:
    record = {"IdentityStoreId": STORE, "UserId": uid(user_id), "UserName": name, "UserStatus": status,
              "DisplayName": name.title()}
    if org is not None:
        record["Extensions"] = {ENTERPRISE_EXTENSION: {"organization": org}}
    return record


def directory(users: list[dict]) -> dict:
    return {"IdentityStoreId": STORE, "Users": users,
            "Groups": [{"IdentityStoreId": STORE, "GroupId": uid("g-ops"), "DisplayName": "Ops"}],
            "GroupMemberships": [{"IdentityStoreId": STORE, "MembershipId": uid("m-1"), "GroupId": uid("g-ops"),
                                  "MemberId": {"UserId": users[0]["UserId"]}}] if users else []}


USERS = [person("id-alice", "alice", "Acme"), person("id-bob", "bob", "Globex")]
#: accounts.allowed_names of the all-good state: every name the staged directories map to
ALLOWED = "^[A-Za-z][A-Za-z0-9._-]*$"


class World:
    """The endpoint in the all-good state, and a staged host; each test breaks one thing."""

    def __init__(self, endpoint, root: Path):
        self.endpoint = endpoint
        self.region = endpoint.region
        self.root = root
        self.etc = root / "etc"
        self.etc.mkdir()
        (self.etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nops:x:1001:1001:Ops:/home/ops:/bin/bash\n")
        (self.etc / "group").write_text("root:x:0:\nops:x:1001:\n")
        (self.etc / "os-release").write_text("ID=debian\n")
        (root / "sudoers.d").mkdir()
        self.problems: list[str] = []
        self.ssm = boto3.client("ssm", endpoint_url=endpoint.url, region_name=self.region)
        self.config_data = {
            "source": {"type": "identitystore", "region": self.region, "identity_store_id": STORE,
                       "endpoint_url": endpoint.url, "max_attempts": 1, "read_deadline": 30},
            "run_as": {"expression": "${path:userName}"},
            "accounts": {"allowed_names": ALLOWED},
            "state_dir": str(root / "state"),
            "sudo": {"sudoers_dir": str(root / "sudoers.d")},
        }
        self.last_sync = {"SYNC_RESULT": "ok", "SYNC_CREATED": "0", "SYNC_SKIPPED": "0", "SYNC_FAILED": "0",
                          "REALTIME": time.time() - 60}
        self.euid = 0
        self.processes = [types.SimpleNamespace(info={"pid": 4242, "name": "amazon-ssm-agent", "exe": "", "cmdline": []})]
        agent = root / "usr-bin-amazon-ssm-agent"
        agent.write_text("")
        self.agent_binary = str(agent)
        self.seed(USERS)
        ssoadmin_abac.set_attributes(self.region, {"SSMSessionRunAs": "${path:userName}"})
        ssm_documents.put_preferences(self.ssm, ssm_documents.preferences_content(True, "ops"))

    def seed(self, users: list[dict]) -> None:
        self.endpoint.seed(directory(users))

    def session(self, botocore_session=None):
        session = boto3.session.Session(region_name=self.region, botocore_session=botocore_session)
        ssm_documents.watch(session, self.problems)
        return session

    def run(self, session=None, ssm_region="default", **config) -> dict:
        data = json.loads(json.dumps(self.config_data))
        for section, values in config.items():
            if isinstance(values, dict):
                data.setdefault(section, {}).update(values)
            else:
                data[section] = values
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        host_users = set(read_host(str(self.etc)).users)
        probe = Probe(
            etc=str(self.etc), agent_binaries=(self.agent_binary,), snap_dir=str(self.root / "no-snap"),
            unit_dirs=(), processes=self.processes if callable(self.processes) else (lambda: self.processes), last_sync=lambda: self.last_sync,
            user_exists=lambda name: name in host_users,
            # the sudoers tree of the real host is test_doctor_host.py's subject
            run=lambda argv, **kw: types.SimpleNamespace(returncode=0, stdout="/etc/sudoers: parsed OK\n", stderr=""),
            euid=lambda: self.euid, sshd=str(self.root / "no-sshd"),
        )
        doctor = Doctor(str(path), probe=probe, session=session or self.session(), ssm_region=self.region if ssm_region == "default" else ssm_region)
        self.report = doctor.run()
        self.exit = exit_status(self.report)
        return {c.name: c for c in self.report}


@pytest.fixture
def world(identitystore_endpoint, tmp_path, monkeypatch):
    ssm_documents.reset(identitystore_endpoint.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", identitystore_endpoint.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", identitystore_endpoint.url)
    w = World(identitystore_endpoint, tmp_path)
    yield w
    ssm_documents.reset(identitystore_endpoint.region)
    assert not w.problems, "SSM responses that do not match botocore's model:\n" + "\n".join(w.problems)


def assert_only(checks: dict, broken: dict[str, str]) -> None:
    """Exactly the named checks have the named status; every other one is ok."""
    wrong = {name: (c.status, c.summary) for name, c in checks.items() if c.status != broken.get(name, OK)}
    assert not wrong, wrong
    assert set(broken) <= set(checks)


def test_all_good(world):
    checks = world.run()
    assert_only(checks, {})
    assert world.exit == Exit.OK
    assert "alice" not in checks["identities"].summary
    assert checks["identities"].summary.startswith("2 enabled of 2 users map to 2 accounts")
    assert "SSMSessionRunAs = ${path:userName}" in checks["abac"].summary
    assert "default user ops exists" in checks["session-preferences"].summary
    assert "ListUsers, ListGroups, ListGroupMemberships" in checks["identitystore"].summary
    calls = world.endpoint.calls()
    # one page each for the permission probe, then the full read: nothing is ever written
    assert not [op for op in calls if op.split(":")[-1].startswith(("Create", "Update", "Delete", "Put"))]
    text = render(world.report, "config.yaml")
    assert text.splitlines()[-1] == "16 checks: 16 ok, 0 warnings, 0 failed, 0 skipped"
    assert checks["session-documents"].summary == (
        "runAsElevated is set in no session document (SSM-SessionManagerRunShell and 0 others reviewed); port "
        "forwarding and SSH never check the Run As user: permission sets must deny AWS-StartPortForwardingSession, "
        "AWS-StartPortForwardingSessionToRemoteHost, AWS-StartSSHSession")


def test_access_denied_on_list_users_names_the_action(world):
    world.endpoint.inject("ListUsers", "access_denied")
    checks = world.run()
    assert_only(checks, {"identitystore": FAILED, "identitystore-fields": SKIPPED, "identities": SKIPPED})
    assert "identitystore:ListUsers" in checks["identitystore"].summary
    assert "AWSSSODirectoryReadOnly" in checks["identitystore"].remedy
    assert "conflicts unknown" in checks["accounts"].summary
    assert "was not read" in checks["allowed-names"].summary
    assert world.exit == Exit.UNHEALTHY


def test_remedies_name_the_role_the_instance_runs_as(world, monkeypatch):
    sts = boto3.client("sts", endpoint_url=world.endpoint.url, region_name=world.region)
    credentials = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/runas-agent-instance",
                                  RoleSessionName="i-0123456789abcdef0")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", credentials["SessionToken"])
    world.endpoint.inject("ListGroups", "access_denied")
    checks = world.run()
    assert checks["credentials"].summary == (
        "AWS credentials resolve (from env): role runas-agent-instance (account 123456789012)")
    assert checks["identitystore"].remedy.startswith(
        "allow identitystore:ListGroups to role runas-agent-instance (account 123456789012)")


def test_access_denied_on_memberships_is_named_too(world):
    world.endpoint.inject("ListGroupMemberships", "access_denied")
    checks = world.run()
    assert checks["identitystore"].status == FAILED
    assert "identitystore:ListGroupMemberships" in checks["identitystore"].summary
    assert "identitystore:ListUsers" not in checks["identitystore"].summary
    assert checks["identitystore-fields"].status == OK


def test_a_wrong_store_or_region_says_so(world):
    world.endpoint.inject("ListUsers", "not_found")
    checks = world.run()
    assert checks["identitystore"].status == FAILED
    assert "home region" in checks["identitystore"].remedy


def test_no_credentials_skips_every_aws_link(world, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    checks = world.run()
    assert checks["credentials"].status == FAILED
    for name in ("identitystore", "abac", "session-preferences", "session-documents"):
        assert checks[name].status == SKIPPED, name
    assert world.endpoint.calls() == {}


def _old_botocore(tmp_path: Path) -> botocore.session.Session:
    """A botocore session whose identitystore model is the pre-1.43 one: no UserStatus, no Extensions."""
    real = botocore.session.get_session()
    loader = real.get_component("data_loader")
    version = loader.determine_latest_version("identitystore", "service-2")
    model = real.get_service_model("identitystore")
    found = Path(botocore.__file__).parent / "data" / "identitystore" / version
    raw = found / "service-2.json.gz"
    data = json.loads(gzip.decompress(raw.read_bytes())) if raw.exists() else json.loads((found / "service-2.json").read_text())
    del data["shapes"]["User"]["members"]["UserStatus"]
    del data["shapes"]["ListUsersRequest"]["members"]["Extensions"]
    target = tmp_path / "old-data" / "identitystore" / version
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(data))
    for name in ("paginators-1.json", "endpoint-rule-set-1.json"):
        for candidate in (found / name, found / f"{name}.gz"):
            if candidate.exists():
                shutil.copy(candidate, target / candidate.name)
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(tmp_path / "old-data"))
    assert "UserStatus" not in session.get_service_model("identitystore").shape_for("User").members
    assert model is not None
    return session


def test_an_old_botocore_that_drops_userstatus_is_caught_twice(world, tmp_path):
    checks = world.run(session=world.session(_old_botocore(tmp_path)))
    assert checks["botocore"].status == FAILED
    assert "User.UserStatus" in checks["botocore"].summary
    # and on the wire: the endpoint sends UserStatus, the old model parses it away
    assert checks["identitystore-fields"].status == FAILED
    assert checks["identitystore-fields"].summary.startswith("botocore drops UserStatus: 2 of 2 users")
    assert checks["identitystore"].status == OK


@pytest.mark.parametrize("raw, parsed, enterprise, status, words", [
    ([], [], False, WARNING, "no users"),
    ([{"UserStatus": "ENABLED"}], [{}], False, FAILED, "botocore drops UserStatus"),
    ([{"UserName": "a"}], [{"UserName": "a"}], False, FAILED, "none of the 1 users"),
    ([{"UserStatus": "ENABLED", "Extensions": {"x": {}}}], [{"UserStatus": "ENABLED"}], True, FAILED, "botocore drops Extensions"),
    ([{"UserStatus": "ENABLED"}], [{"UserStatus": "ENABLED"}], True, WARNING, "no user on the first ListUsers page has enterprise"),
    ([{"UserStatus": "ENABLED"}], [{"UserStatus": "ENABLED"}], False, OK, "UserStatus arrives for 1 of 1"),
])
def test_fields_verdict(raw, parsed, enterprise, status, words):
    verdict = fields_verdict(raw, parsed, enterprise)
    assert verdict.status == status
    assert words in verdict.summary


def test_users_without_enterprise_attributes_under_an_organization_expression(world):
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:enterprise.organization}"})
    world.seed([person("id-alice", "alice"), person("id-bob", "bob")])
    checks = world.run(run_as={"expression": "${path:enterprise.organization}"})
    assert checks["identitystore-fields"].status == WARNING
    # nobody carries the extension: the sync refuses the whole read, it would give nobody an account
    assert checks["identities"].status == FAILED
    assert ("run_as.expression reads enterprise.organization, but none of the 2 users carries the enterprise "
            "extension") in checks["identities"].summary
    world.seed([person("id-alice", "alice", "Acme"), person("id-bob", "bob")])
    checks = world.run(run_as={"expression": "${path:enterprise.organization}"})
    assert checks["identities"].status == WARNING
    assert checks["identities"].details == [f"bob ({uid('id-bob')}) as '': the Run As value is empty"]


def test_abac_not_enabled(world):
    ssoadmin_abac.set_attributes(world.region, None)
    checks = world.run()
    assert_only(checks, {"abac": FAILED})
    assert "not enabled" in checks["abac"].summary
    assert "key SSMSessionRunAs, value ${path:userName}" in checks["abac"].remedy


def test_abac_key_missing(world):
    ssoadmin_abac.set_attributes(world.region, {"ssmSessionRunAs": "${path:userName}", "CostCenter": "${path:enterprise.costCenter}"})
    checks = world.run()
    assert_only(checks, {"abac": FAILED})
    assert "has no SSMSessionRunAs" in checks["abac"].summary
    assert "there is ssmSessionRunAs" in checks["abac"].summary


def test_abac_expression_differs(world):
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:enterprise.organization}"})
    checks = world.run()
    assert_only(checks, {"abac": FAILED})
    assert "sends SSMSessionRunAs = ${path:enterprise.organization}, but run_as.expression is ${path:userName}" in checks["abac"].summary
    assert "run_as.expression: '${path:enterprise.organization}'" in checks["abac"].remedy


def test_abac_unreadable_is_a_warning_when_the_expression_is_written(world):
    world.endpoint.inject("sso-admin:DescribeInstanceAccessControlAttributeConfiguration", "access_denied")
    checks = world.run()
    assert_only(checks, {"abac": WARNING})
    assert "sso:DescribeInstanceAccessControlAttributeConfiguration" in checks["abac"].remedy
    assert world.exit == Exit.OK


def test_abac_unreadable_fails_when_the_sync_depends_on_it(world):
    world.endpoint.inject("sso-admin:DescribeInstanceAccessControlAttributeConfiguration", "access_denied")
    checks = world.run(run_as={"expression": "from-identity-center"})
    assert checks["abac"].status == FAILED
    assert checks["identities"].status == SKIPPED
    assert world.exit == Exit.UNHEALTHY


def test_from_identity_center_follows_the_live_value(world):
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:enterprise.organization}"})
    checks = world.run(run_as={"expression": "from-identity-center"})
    assert_only(checks, {})
    assert "SSMSessionRunAs = ${path:enterprise.organization} (read live" in checks["abac"].summary
    assert "map to 2 accounts with ${path:enterprise.organization}" in checks["identities"].summary


def test_run_as_disabled_in_session_manager(world):
    ssm_documents.put_preferences(world.ssm, ssm_documents.preferences_content(False, "ops"))
    checks = world.run()
    assert_only(checks, {"session-preferences": FAILED})
    assert "runAsEnabled is false" in checks["session-preferences"].summary
    assert "Enable Run As support for Linux instances" in checks["session-preferences"].remedy


def test_no_session_manager_preferences_at_all(world):
    world.ssm.delete_document(Name=ssm_documents.PREFERENCES)
    checks = world.run()
    assert_only(checks, {"session-preferences": FAILED, "session-documents": SKIPPED})
    assert "none are saved" in checks["session-preferences"].summary
    assert checks["session-documents"].summary == "not checked: no Session Manager preferences are saved"


def test_default_run_as_user_missing_on_this_host(world):
    ssm_documents.put_preferences(world.ssm, ssm_documents.preferences_content(True, "fallback"))
    checks = world.run()
    assert_only(checks, {"session-preferences": FAILED})
    assert "RunAs user fallback does not exist" in checks["session-preferences"].summary


def test_default_run_as_user_managed_by_the_agent(world):
    ssm_documents.put_preferences(world.ssm, ssm_documents.preferences_content(True, "alice"))
    checks = world.run()
    assert_only(checks, {})
    assert "alice is managed by runas-agent" in checks["session-preferences"].summary


def test_preferences_unreadable_is_a_warning(world):
    ssm_documents.DENIED.add((world.region, "GetDocument"))
    checks = world.run()
    assert_only(checks, {"session-preferences": WARNING, "session-documents": SKIPPED})
    assert "ssm:GetDocument" in checks["session-preferences"].remedy
    assert checks["session-documents"].summary == (
        "not checked: the Session Manager preferences could not be read (see session-preferences)")


PORT_DOCUMENTS = "AWS-StartPortForwardingSession, AWS-StartPortForwardingSessionToRemoteHost, AWS-StartSSHSession"


def test_run_as_elevated_in_the_preferences_is_named(world):
    content = ssm_documents.preferences_content(True, "ops")
    content["properties"] = {"linux": {"runAsElevated": True}}
    ssm_documents.put_preferences(world.ssm, content)
    checks = world.run()
    assert_only(checks, {"session-documents": WARNING})
    assert checks["session-documents"].summary == (
        f"1 finding on what Run As leaves open; permission sets must deny {PORT_DOCUMENTS}")
    assert checks["session-documents"].details[0].startswith("properties.linux.runAsElevated: runAsElevated is set")
    assert checks["session-documents"].remedy.startswith(f"deny ssm:StartSession on {PORT_DOCUMENTS} in every permission set")


def test_the_account_s_session_documents_that_bypass_run_as_are_to_be_denied(world):
    """A tunnel of session type Port and a root shell (runAsElevated), one in JSON and one in YAML, next to a
    harmless commands document: the two that bypass Run As join the documents to deny, read over the wire."""
    ssm_documents.put_session_document(world.ssm, "Team-Tunnel", {"schemaVersion": "1.0", "sessionType": "Port",
                                                                  "properties": {"portNumber": "5432"}})
    ssm_documents.put_session_document(world.ssm, "Team-RootShell",
                                       "schemaVersion: '1.0'\nsessionType: InteractiveCommands\nproperties:\n  linux:\n"
                                       "    commands: bash\n    runAsElevated: true\n", document_format="YAML")
    ssm_documents.put_session_document(world.ssm, "Team-Top", {"schemaVersion": "1.0", "sessionType": "InteractiveCommands",
                                                               "properties": {"linux": {"commands": "top"}}})
    checks = world.run()
    assert_only(checks, {"session-documents": WARNING})
    check = checks["session-documents"]
    assert check.summary == ("2 findings on what Run As leaves open; permission sets must deny "
                             f"{PORT_DOCUMENTS}, Team-RootShell, Team-Tunnel")
    assert check.details == [
        "Team-RootShell: properties.linux.runAsElevated: runs its commands as root with no Run As check "
        "(deny it in permission sets, or remove runAsElevated)",
        "Team-Tunnel: sessionType: port forwarding: involves no Run As user, so disabling an account does not stop it "
        "(deny it in permission sets)"]
    assert "Team-Top" not in check.summary
    # nothing was written: the doctor only lists and reads
    assert {d["Name"] for d in world.ssm.list_documents()["DocumentIdentifiers"]} == {
        ssm_documents.PREFERENCES, "Team-Tunnel", "Team-RootShell", "Team-Top"}


def test_session_documents_that_cannot_be_listed_are_named_as_not_reviewed(world):
    ssm_documents.DENIED.add((world.region, "ListDocuments"))
    checks = world.run()
    assert_only(checks, {})
    check = checks["session-documents"]
    assert check.summary.startswith("runAsElevated is not set in SSM-SessionManagerRunShell (the account's other "
                                    "session documents were not listed)")
    assert check.details[0].startswith("the account's own session documents were not reviewed: ListDocuments: access "
                                       "denied (AccessDeniedException")
    assert "; allow ssm:ListDocuments to arn:aws:sts::123456789012:user/moto, or check by hand" in check.details[0]


def test_hostile_identities_are_listed_with_the_reason(world):
    users = USERS + [
        person("id-iret", "iret", "IRET, Inc."),
        person("id-empty", "nobody-org", ""),
        person("id-long", "l" * 40),
        person("id-dash", "-rf"),
        person("id-digits", "12345"),
        person("id-off", "off.person", status="DISABLED"),
    ]
    world.seed(users)
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:userName}"})
    checks = world.run()
    assert_only(checks, {"identities": WARNING})
    details = "\n".join(checks["identities"].details)
    assert len(checks["identities"].details) == 3
    assert f"{'l' * 40} ({uid('id-long')}) as '{'l' * 40}': longer than 32 bytes" in details
    assert f"-rf ({uid('id-dash')}) as '-rf': starts with '-'" in details
    assert f"12345 ({uid('id-digits')}) as '12345': is all digits" in details
    assert "off.person" not in details  # disabled people get no account and are no problem
    # the same people under the organization expression: the comma and the empty value
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:enterprise.organization}"})
    checks = world.run(run_as={"expression": "${path:enterprise.organization}"})
    details = "\n".join(checks["identities"].details)
    assert f"iret ({uid('id-iret')}) as 'IRET, Inc.': not a legal session tag value (Identity Center cannot send ',')" in details
    assert f"nobody-org ({uid('id-empty')}) as '': the Run As value is empty" in details


def test_an_unmanaged_account_with_a_wanted_name_is_a_conflict(world):
    with open(world.etc / "passwd", "a") as handle:
        handle.write("alice:x:1002:1002:Alice by hand:/home/alice:/bin/bash\n")
    checks = world.run()
    assert_only(checks, {"accounts": WARNING})
    assert "; 1 conflict;" in checks["accounts"].summary
    assert checks["accounts"].details == [
        f"conflict: alice ({uid('id-alice')}) as 'alice': an existing account named 'alice' (uid 1002) exists and is not managed "
        "by runas-agent; left alone"]


@pytest.mark.parametrize("record, status, words", [
    ({"SYNC_RESULT": "failed", "SYNC_ERROR": "Identity Store d-1234567890: ListUsers page 1: access denied"}, FAILED, "access denied"),
    ({"SYNC_RESULT": "refused", "SYNC_REFUSALS": "the plan disables 9 of 10 accounts"}, FAILED, "disables 9 of 10"),
    ({"SYNC_RESULT": "partial", "SYNC_SKIPPED": "2", "SYNC_FAILED": "0"}, WARNING, "2 skipped"),
    ({"SYNC_RESULT": "ok", "AGE": 4 * 1020}, WARNING, "longer than 3 sync intervals"),
    (None, WARNING, "no sync is recorded in the journal"),
])
def test_last_sync(world, record, status, words):
    if record is not None:
        record = dict(record)
        record["REALTIME"] = time.time() - record.pop("AGE", 30)
    world.last_sync = record
    checks = world.run()
    assert_only(checks, {"last-sync": status})
    assert words in checks["last-sync"].summary


def test_an_invalid_config_is_reported_and_the_host_still_checked(world):
    checks = world.run(run_as={"expression": "${path:groups}"})
    assert checks["config"].status == FAILED
    assert checks["config"].details[0].startswith("run_as.expression: ${path:groups} is not an attribute")
    assert checks["identitystore"].status == SKIPPED
    assert checks["ssm-agent"].status == OK
    assert world.exit == Exit.UNHEALTHY


def test_as_a_normal_user_the_root_only_checks_say_so(world):
    world.last_sync = None
    checks = world.run()
    assert checks["sudoers"].status == OK
    assert "run as root" not in checks["last-sync"].summary
    world.euid = 1000
    checks = world.run()
    assert checks["sudoers"].status == SKIPPED
    assert "run the doctor as root" in checks["sudoers"].summary
    assert "run as root" in checks["last-sync"].summary


def test_the_store_id_is_discovered_when_not_configured(world):
    checks = world.run(source={"identity_store_id": None})
    assert_only(checks, {})
    assert "Identity Store d-1234567890" in checks["identitystore"].summary
    world.endpoint.inject("sso-admin:ListInstances", "access_denied")
    checks = world.run(source={"identity_store_id": None})
    assert checks["identitystore"].status == FAILED
    assert "allow sso:ListInstances" in checks["identitystore"].remedy


def test_names_legal_on_debian_but_not_on_rhel(world):
    world.seed(USERS + [person("id-jane", "jane@example.com")])
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:userName}"})
    assert world.run()["identities"].status == OK
    checks = world.run(accounts={"name_rules": "rhel"})
    assert checks["identities"].status == WARNING
    assert checks["identities"].details == [
        f"jane@example.com ({uid('id-jane')}) as 'jane@example.com': RHEL/Amazon Linux useradd accepts only "
        "[a-zA-Z0-9_.-] (no '@'), not starting with '-' (accounts.name_rules rhel-email allows '@')"]
    assert checks["name-rules"].status == WARNING and "e.g. 'jane@example.com'" in checks["name-rules"].summary
    checks = world.run(accounts={"name_rules": "rhel-email"})
    assert checks["identities"].status == OK and checks["name-rules"].status == OK


def test_the_session_manager_region_comes_from_the_environment(world, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", world.region)
    checks = world.run(ssm_region=None)
    assert "from the AWS region of the environment" in checks["session-preferences"].summary
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    checks = world.run(ssm_region=None)
    assert "from source.region (the instance's own region is unknown: pass --ssm-region)" in checks["session-preferences"].summary
    assert checks["session-preferences"].status == OK
    checks = world.run(ssm_region="us-west-2")  # no preferences saved there
    assert checks["session-preferences"].status == FAILED
    assert checks["session-documents"].status == SKIPPED
    assert "in us-west-2" in checks["session-preferences"].summary


def test_blanket_sudo_with_run_as_off_says_to_turn_run_as_on_first(world):
    (world.root / "sudoers.d" / "ssm-agent-users").write_text("ssm-user ALL=(ALL) NOPASSWD:ALL\n")
    checks = world.run()
    assert_only(checks, {"ssm-user-sudo": WARNING})
    assert "set sudo.remove_ssm_user_blanket: true once Run As works" in checks["ssm-user-sudo"].remedy
    ssm_documents.put_preferences(world.ssm, ssm_documents.preferences_content(False, ""))
    checks = world.run()
    assert_only(checks, {"ssm-user-sudo": WARNING, "session-preferences": FAILED})
    assert "Run As is off: every session lands in ssm-user and is root" in checks["ssm-user-sudo"].summary
    assert checks["ssm-user-sudo"].remedy.startswith("turn Run As on first")


@pytest.mark.parametrize("status, reason, verdict", [
    ("CREATION_IN_PROGRESS", "", WARNING),
    ("CREATION_FAILED", "The attribute source is not valid", FAILED),
])
def test_abac_configuration_not_yet_or_never_active(world, status, reason, verdict):
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:userName}"}, status=status, reason=reason)
    checks = world.run()
    assert_only(checks, {"abac": verdict})
    assert f"are {status}" in checks["abac"].summary
    assert reason in checks["abac"].summary


def test_missing_enterprise_attributes_matter_under_a_live_organization_expression(world):
    world.seed([person("id-alice", "alice"), person("id-bob", "bob")])
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:userName}"})
    assert world.run(run_as={"expression": "from-identity-center"})["identitystore-fields"].status == OK
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:enterprise.organization}"})
    checks = world.run(run_as={"expression": "from-identity-center"})
    assert checks["identitystore-fields"].status == WARNING
    assert checks["identities"].status == FAILED and "none of the 2 users carries the enterprise extension" in \
        checks["identities"].summary


def test_a_live_expression_the_agent_cannot_evaluate(world):
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:groups}"})
    checks = world.run(run_as={"expression": "from-identity-center"})
    assert checks["abac"].status == FAILED
    assert "SSMSessionRunAs is '${path:groups}', which ${path:groups} is not an attribute" in checks["abac"].summary
    assert checks["identities"].status == SKIPPED


def test_a_check_that_raises_is_reported_and_the_rest_still_run(world):
    def unreadable_process_table():
        raise PermissionError(13, "Permission denied", "/proc/1/exe")

    world.processes = unreadable_process_table
    checks = world.run()
    assert_only(checks, {"ssm-agent": FAILED})
    assert checks["ssm-agent"].summary == ("the check itself failed: PermissionError: [Errno 13] Permission denied: "
                                           "'/proc/1/exe'")
    world.processes = []
    checks = world.run()
    assert_only(checks, {"ssm-agent": FAILED})
    assert "installed (deb/rpm) but not running" in checks["ssm-agent"].summary


# --- the source type decides -----------------------------------------------------------------------

SNAPSHOT_BUCKET = "fleet-snapshots"
SNAPSHOT = f"s3://{SNAPSHOT_BUCKET}/runas/directory.json"


@pytest.fixture
def snapshot(world):
    """The directory as a fleet snapshot in S3, served by the same endpoint (source.endpoint_url)."""
    s3 = boto3.client("s3", endpoint_url=world.endpoint.url, region_name=world.region)
    s3.create_bucket(Bucket=SNAPSHOT_BUCKET, CreateBucketConfiguration={"LocationConstraint": world.region})
    s3.put_object(Bucket=SNAPSHOT_BUCKET, Key="runas/directory.json", Body=signing.signed_bytes(directory(USERS)))
    yield {"type": "s3", "url": SNAPSHOT, "bucket_region": world.region, "bucket_owner": "123456789012",
           "signing_public_key": signing.public_pem()}
    for item in s3.list_objects_v2(Bucket=SNAPSHOT_BUCKET).get("Contents", []):
        s3.delete_object(Bucket=SNAPSHOT_BUCKET, Key=item["Key"])
    s3.delete_bucket(Bucket=SNAPSHOT_BUCKET)


def test_an_s3_source_is_described_as_s3(world, snapshot):
    checks = world.run(source=snapshot)
    assert_only(checks, {"botocore": SKIPPED, "identitystore": SKIPPED, "identitystore-fields": SKIPPED})
    assert checks["identitystore"].summary == f"not checked: source.type is s3 (the directory comes from {SNAPSHOT})"
    assert checks["identitystore-fields"].summary == "not checked: source.type is s3"
    assert checks["botocore"].summary == "not checked: source.type is s3: no Identity Store calls"
    assert checks["identities"].summary.startswith("2 enabled of 2 users map to 2 accounts")
    assert "ListUsers" not in world.endpoint.calls()


def test_an_s3_source_without_credentials_fails_the_credentials_link(world, snapshot, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    checks = world.run(source=snapshot)
    assert checks["credentials"].status == FAILED
    assert world.exit == Exit.UNHEALTHY


def test_a_file_source_without_credentials_only_warns(world, tmp_path, monkeypatch):
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(directory(USERS)))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    checks = world.run(source={"type": "file", "path": str(path), "identity_store_id": None, "endpoint_url": None})
    assert checks["credentials"].status == WARNING
    assert checks["identitystore"].summary == f"not checked: source.type is file (the directory comes from {path})"
    assert checks["identities"].status == OK


# --- what the sync would not believe ---------------------------------------------------------------

def test_a_stale_snapshot_fails_the_identities_link(world, snapshot, identitystore_endpoint):
    s3 = boto3.client("s3", endpoint_url=world.endpoint.url, region_name=world.region)
    s3.put_object(Bucket=SNAPSHOT_BUCKET, Key="runas/directory.json", Body=signing.signed_bytes(directory(USERS), ago=7200))
    checks = world.run(source={**snapshot, "max_age": 3600})
    assert checks["identities"].status == FAILED and world.exit == Exit.UNHEALTHY
    assert checks["identities"].summary.startswith("the directory cannot be believed: ")
    assert "2.0h ago, more than source.max_age (3600s): the publisher has not published since" in checks["identities"].summary


def test_a_read_without_userstatus_fails_the_identities_link(world, identitystore_endpoint):
    identitystore_endpoint.inject("ListUsers", "drop_field", member="UserStatus")
    checks = world.run()
    assert checks["identities"].status == FAILED
    assert "none of the 2 users carries UserStatus" in checks["identities"].summary


def test_a_rollback_the_sync_would_refuse_fails_the_accounts_link(world, snapshot):
    state = Path(world.config_data["state_dir"])
    state.mkdir(exist_ok=True)
    (state / "directory.json").write_bytes(signing.signed_bytes(directory(USERS), ago=60))
    s3 = boto3.client("s3", endpoint_url=world.endpoint.url, region_name=world.region)
    s3.put_object(Bucket=SNAPSHOT_BUCKET, Key="runas/directory.json", Body=signing.signed_bytes(directory(USERS), ago=3600))
    checks = world.run(source=snapshot)
    assert checks["accounts"].status == FAILED and "the next sync will be refused" in checks["accounts"].summary
    assert any("before the last one applied" in d for d in checks["accounts"].details)


def test_a_damaged_sudo_ledger_fails_the_accounts_link(world):
    """The observation the sync plans from reads both ledgers: a damaged sudoers ledger stops the
    sync, and the accounts link says so instead of crashing the report."""
    state = Path(world.config_data["state_dir"])
    state.mkdir(exist_ok=True)
    (state / "sudoers.json").write_text("{not json")
    checks = world.run()
    assert checks["accounts"].status == FAILED
    assert "the host cannot be observed" in checks["accounts"].summary and "sudoers.json" in checks["accounts"].summary
    assert checks["identities"].status == OK and world.exit == Exit.UNHEALTHY


def test_allowed_names_unset_is_a_warning_with_a_pattern_from_the_directory(world):
    world.config_data["accounts"] = {}
    world.seed([person("id-alice", "alice@corp.example"), person("id-bob", "bob.smith@corp.example")])
    ssoadmin_abac.set_attributes(world.region, {"SSMSessionRunAs": "${path:userName}"})
    checks = world.run()
    assert_only(checks, {"allowed-names": WARNING})
    assert world.exit == Exit.OK
    assert checks["allowed-names"].summary.startswith("accounts.allowed_names is unset")
    assert r"'^[a-z0-9._-]+@corp\.example$'" in checks["allowed-names"].remedy


def test_allowed_names_that_leave_out_a_name_of_the_directory(world):
    checks = world.run(accounts={"allowed_names": "^alice$"})
    assert_only(checks, {"allowed-names": WARNING})
    assert checks["allowed-names"].details == ["'bob' does not match accounts.allowed_names (^alice$)"]
