"""The doctor's verdicts as tables: each is a pure function from what a check read to its verdict and
the facts it gives. The links tests run the same verdicts against the local endpoint and staged hosts."""

from __future__ import annotations

import pytest

from runas_agent import aws
from runas_agent.config import validate
from runas_agent.doctor.aws import (abac_unreadable, abac_verdict, credentials_verdict, expression_in_force,
                                    no_credentials, principal)
from runas_agent.doctor.check import FAILED, OK, WARNING
from runas_agent.doctor.facts import CREDENTIALS, EXPRESSION, LIVE_EXPRESSION, RUN_AS_ENABLED, SOURCE_ANSWERS
from runas_agent.doctor.session_manager import (Preferences, SessionDocuments, bypass_verdict, default_user_owner,
                                                parse_preferences, preferences_unreadable, preferences_verdict)
from runas_agent.doctor.host import agent_pids, agent_verdict, ignored_dropins, ssm_user_verdict, sudoers_verdict
from runas_agent.doctor.sync import ago, last_sync_verdict, no_sync_verdict, sync_text
from runas_agent.identitycenter import AbacConfig, IdentityCenterError
from runas_agent.sessions.preferences import review_preferences
from runas_agent.sources.identitystore import FIRST_PAGE, Answer, store_verdict, undiscovered, wants_enterprise

WHERE = "Identity Store d-1234567890 in eu-west-1"


def denied(message: str = "User is not authorized") -> aws.Failure:
    return aws.Failure(aws.Kind.ACCESS_DENIED, "AccessDeniedException", message, 400)


# --- the Identity Store probe ------------------------------------------------------------------------

@pytest.mark.parametrize("answers, status, summary, first_page", [
    ([Answer("ListUsers", {"Users": [{"UserName": "a"}]}), Answer("ListGroups", {})], OK,
     f"{WHERE} answers ListUsers, ListGroups", "given"),
    ([Answer("ListUsers", failure=denied()), Answer("ListGroups", {})], FAILED,
     f"{WHERE}: access denied to identitystore:ListUsers", "ListUsers is denied"),
    ([Answer("ListUsers", {}), Answer("ListGroups", {"Groups": [{}]}), Answer("ListGroupMemberships", failure=denied("kms key"))],
     FAILED, f"{WHERE}: access denied to identitystore:ListGroupMemberships (and kms:Decrypt via identitystore)", "given"),
    ([Answer("ListUsers", failure=denied()), Answer("ListGroups", failure=aws.Failure(aws.Kind.THROTTLED, "ThrottlingException", "slow", 400))],
     FAILED, f"{WHERE}: ListGroups: ThrottlingException: slow", "the Identity Store is not readable"),
    ([Answer("ListUsers", failure=aws.Failure(aws.Kind.CONNECTION, "", "Could not connect", exception="EndpointConnectionError"))],
     FAILED, "cannot reach the Identity Store in eu-west-1: Could not connect", "the Identity Store is not reachable"),
    ([Answer("ListUsers", failure=aws.Failure(aws.Kind.OTHER, "", "Unknown parameter Extensions", exception="ParamValidationError"))],
     FAILED, f"{WHERE}: ListUsers cannot even be sent: Unknown parameter Extensions", "the Identity Store is not readable"),
])
def test_store_verdict(answers, status, summary, first_page):
    verdict = store_verdict(answers, [{"UserName": "a", "UserStatus": "ENABLED"}], WHERE, "eu-west-1", "role r (account 1)")
    assert (verdict.status, verdict.summary) == (status, summary)
    if first_page == "given":
        assert verdict.gives[FIRST_PAGE].raw == ({"UserName": "a", "UserStatus": "ENABLED"},)
    else:
        assert verdict.withholds[FIRST_PAGE].reason == first_page
    assert (SOURCE_ANSWERS in verdict.gives) == (status == OK)
    if "access denied" in summary:
        assert verdict.remedy.startswith("allow identitystore:") and " to role r (account 1) " in verdict.remedy


@pytest.mark.parametrize("kind, remedy_words", [
    (aws.Kind.NOT_FOUND, "check source.identity_store_id, and that eu-west-1 (source.region) is the Identity Center home region"),
    (aws.Kind.BAD_CREDENTIALS, "the credentials were rejected"),
])
def test_a_store_that_answers_no_names_the_likely_cause(kind, remedy_words):
    answer = Answer("ListUsers", failure=aws.Failure(kind, "SomeCode", "msg", 400))
    assert remedy_words in store_verdict([answer], [], WHERE, "eu-west-1", "p").remedy


@pytest.mark.parametrize("exc, summary, remedy", [
    (IdentityCenterError("sso-admin ListInstances in eu-west-1: access denied (x); the instance role needs sso:ListInstances",
                         "access_denied", "sso:ListInstances"),
     "source.identity_store_id is not set and sso-admin ListInstances in eu-west-1: access denied",
     "set source.identity_store_id, or allow sso:ListInstances to the instance role"),
    (IdentityCenterError("sso-admin ListInstances in eu-west-1 shows several Identity Stores (d-1, d-2): set source.identity_store_id "
                         "to the one to use", "several_instances"),
     "sso-admin ListInstances in eu-west-1 shows several Identity Stores", "set source.identity_store_id (and check source.region"),
])
def test_an_undiscovered_store(exc, summary, remedy):
    verdict = undiscovered(exc, "the instance role")
    assert verdict.status == FAILED and verdict.summary.startswith(summary) and verdict.remedy.startswith(remedy)
    assert verdict.withholds[FIRST_PAGE].reason == "the Identity Store id is unknown"


@pytest.mark.parametrize("expression, wants", [
    ("${path:userName}", False), ("${path:enterprise.organization}", True), ("from-identity-center", False),
])
def test_wants_enterprise(expression, wants):
    assert wants_enterprise(expression) is wants


# --- credentials and ABAC --------------------------------------------------------------------------

@pytest.mark.parametrize("arn, words", [
    ("arn:aws:sts::123456789012:assumed-role/runas-agent-instance/i-0abc", "role runas-agent-instance (account 123456789012)"),
    ("arn:aws:iam::123456789012:user/alice", "arn:aws:iam::123456789012:user/alice"),
    ("", ""),
])
def test_principal(arn, words):
    assert principal(arn) == words


def test_credentials_name_the_principal_for_the_remedies_of_others():
    assert credentials_verdict("iam-role", "").gives[CREDENTIALS] == "the instance role"
    verdict = credentials_verdict("env", "role r (account 1)")
    assert verdict.summary == "AWS credentials resolve (from env): role r (account 1)"
    assert verdict.gives[CREDENTIALS] == "role r (account 1)"
    assert no_credentials("none", required=True).status == FAILED
    assert no_credentials("none", required=False).status == WARNING


ARN = "arn:aws:sso:::instance/ssoins-1234567890abcdef"


def abac(status="ENABLED", **attributes):
    return AbacConfig(ARN, status, "", {k: (v,) for k, v in attributes.items()})


@pytest.mark.parametrize("config, written, status, words, live", [
    (abac(SSMSessionRunAs="${path:userName}"), "${path:userName}", OK, "as run_as.expression says", None),
    (abac(SSMSessionRunAs="${path:enterprise.organization}"), "${path:userName}", FAILED, "but run_as.expression is", None),
    (abac(ssmSessionRunAs="${path:userName}"), "${path:userName}", FAILED, "there is ssmSessionRunAs", None),
    (abac("CREATION_IN_PROGRESS"), "${path:userName}", WARNING, "are CREATION_IN_PROGRESS", None),
    (abac(SSMSessionRunAs="${path:enterprise.organization}"), "from-identity-center", OK, "read live",
     "${path:enterprise.organization}"),
    (abac(SSMSessionRunAs="${path:groups}"), "from-identity-center", FAILED, "which ${path:groups} is not an attribute", None),
])
def test_abac_verdict(config, written, status, words, live):
    verdict = abac_verdict(config, written)
    assert verdict.status == status and words in verdict.summary
    assert verdict.gives.get(LIVE_EXPRESSION) == live


@pytest.mark.parametrize("kind, action, written, status, remedy", [
    ("access_denied", "sso:DescribeInstanceAccessControlAttributeConfiguration", "${path:userName}", WARNING,
     "allow sso:DescribeInstanceAccessControlAttributeConfiguration to P, or check by hand"),
    ("access_denied", "sso:DescribeInstanceAccessControlAttributeConfiguration", "from-identity-center", FAILED,
     "allow sso:DescribeInstanceAccessControlAttributeConfiguration to P"),
    ("unreachable", "", "${path:userName}", WARNING, "set source.instance_arn, or check by hand"),
    ("not_enabled", "", "${path:userName}", FAILED, "-> Enable, then add key SSMSessionRunAs, value ${path:userName}"),
])
def test_abac_unreadable(kind, action, written, status, remedy):
    verdict = abac_unreadable(IdentityCenterError("cannot", kind, action), written, "P")
    assert verdict.status == status and remedy in verdict.remedy
    if written == "from-identity-center":
        assert verdict.remedy == remedy  # no "check by hand": the sync itself reads it


CFG = validate({"source": {"type": "identitystore", "region": "eu-west-1"}, "run_as": {"expression": "from-identity-center"}})


def test_the_expression_in_force():
    assert expression_in_force(CFG, "${path:userName}").gives[EXPRESSION].run_as.expression == "${path:userName}"
    assert EXPRESSION not in expression_in_force(CFG, None).gives
    written = validate({"source": {"type": "file", "path": "/d.json"}, "run_as": {"expression": "${path:userName}"}})
    assert expression_in_force(written, None).gives[EXPRESSION] is written


# --- Session Manager preferences -------------------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    ('{"inputs": {"runAsEnabled": true, "runAsDefaultUser": "ops"}}', Preferences(True, True, "ops")),
    ('{"inputs": {"runAsEnabled": "TRUE"}}', Preferences("TRUE", True, "")),
    ('{"inputs": {"runAsEnabled": false, "runAsDefaultUser": 7}}', Preferences(False, False, "")),
    ('{"inputs": []}', Preferences(None, False, "")),
    ('{"inputs": "x"}', None),
    ("not json", None),
    ("[1]", None),
])
def test_parse_preferences(content, expected):
    assert parse_preferences(content) == expected


@pytest.mark.parametrize("preferences, owner, status, words", [
    (Preferences(False, False, "ops"), "", FAILED, "runAsEnabled is false: Session Manager ignores SSMSessionRunAs"),
    (Preferences(True, True, ""), "", WARNING, "runAsDefaultUser is empty"),
    (Preferences(True, True, "alice"), "runas-agent", OK, "the default user alice is managed by runas-agent"),
    (Preferences(True, True, "ops"), "host", OK, "the default user ops exists on this host"),
    (Preferences(True, True, "fallback"), "", FAILED, "'RunAs user fallback does not exist'"),
])
def test_preferences_verdict(preferences, owner, status, words):
    verdict = preferences_verdict("P", preferences, owner)
    assert verdict.status == status and words in verdict.summary
    assert verdict.gives[RUN_AS_ENABLED] is preferences.run_as_enabled


def test_the_default_user_is_the_agent_s_before_the_host_s():
    assert default_user_owner("alice", {"alice"}, exists=True) == "runas-agent"
    assert default_user_owner("ops", {"alice"}, exists=True) == "host"
    assert default_user_owner("ghost", set(), exists=False) == ""


@pytest.mark.parametrize("failure, status, words, run_as", [
    (aws.Failure(aws.Kind.REFUSED, "InvalidDocument", "no such document", 400), FAILED, "none are saved", False),
    (denied(), WARNING, "cannot be read (AccessDeniedException", None),
    (aws.Failure(aws.Kind.SERVER, "InternalServerError", "oops", 500), WARNING, "P: InternalServerError: oops", None),
    (aws.Failure(aws.Kind.TIMEOUT, "", "Read timeout"), WARNING, "P: cannot be read: Read timeout", None),
])
def test_preferences_unreadable(failure, status, words, run_as):
    verdict = preferences_unreadable("P", "eu-west-1", failure, "role r")
    assert verdict.status == status and words in verdict.summary
    assert verdict.gives.get(RUN_AS_ENABLED) is run_as


SOUND = {"schemaVersion": "1.0", "sessionType": "Standard_Stream", "inputs": {"runAsEnabled": True, "runAsDefaultUser": ""}}
ELEVATED = {**SOUND, "properties": {"linux": {"runAsElevated": "true"}}}
ROOT_SHELL = {"sessionType": "NonInteractiveCommands", "properties": {"linux": {"commands": "sh", "runAsElevated": True}}}
PORTS = "AWS-StartPortForwardingSession, AWS-StartPortForwardingSessionToRemoteHost, AWS-StartSSHSession"


@pytest.mark.parametrize("preferences, documents, found, status, summary, details", [
    (SOUND, {}, SessionDocuments({}), OK,
     f"runAsElevated is set in no session document (SSM-SessionManagerRunShell and 0 others reviewed); port forwarding "
     f"and SSH never check the Run As user: permission sets must deny {PORTS}", []),
    (SOUND, {"Top": {"sessionType": "InteractiveCommands"}}, SessionDocuments({"Top": "{}"}, left_out=3), OK,
     "runAsElevated is set in no session document (SSM-SessionManagerRunShell and 1 other reviewed)",
     ["3 more session documents not reviewed (the first 50 were)"]),
    ({**SOUND, "inputs": {"runAsEnabled": False}}, {}, SessionDocuments({}), OK, "runAsElevated is set in no", []),
    (ELEVATED, {}, SessionDocuments({}, unreadable=("Odd: access denied",)), WARNING,
     f"1 finding on what Run As leaves open; permission sets must deny {PORTS}",
     ["properties.linux.runAsElevated: runAsElevated is set in the preferences document; shell sessions ignore it, "
      "but a commands document with it runs as root with no Run As check (remove it, and deny every session "
      "document that sets it)", "not reviewed: Odd: access denied"]),
    (SOUND, {"Root": ROOT_SHELL}, SessionDocuments({"Root": ROOT_SHELL}), WARNING,
     f"1 finding on what Run As leaves open; permission sets must deny {PORTS}, Root",
     ["Root: properties.linux.runAsElevated: runs its commands as root with no Run As check (deny it in permission "
      "sets, or remove runAsElevated)"]),
    (SOUND, {}, SessionDocuments({}, unlisted=denied("no ListDocuments")), OK,
     "runAsElevated is not set in SSM-SessionManagerRunShell (the account's other session documents were not listed)",
     ["the account's own session documents were not reviewed: ListDocuments: access denied (AccessDeniedException: no "
      "ListDocuments); allow ssm:ListDocuments to role r, or check by hand for documents of session type Port or with "
      "runAsElevated"]),
])
def test_bypass_verdict(preferences, documents, found, status, summary, details):
    """Run As off is left to session-preferences; runAsElevated anywhere and documents of type Port are named,
    and what could not be reviewed says so."""
    verdict = bypass_verdict(review_preferences(preferences, documents), found, "role r")
    assert verdict.status == status and verdict.summary.startswith(summary) and list(verdict.details) == details
    assert verdict.remedy.startswith("deny ssm:StartSession on AWS-StartPortForwardingSession, ")


# --- the host --------------------------------------------------------------------------------------

def test_the_ssm_agent_is_found_by_name_binary_or_argv0():
    infos = [{"pid": 1, "name": "systemd"}, {"pid": 2, "name": "amazon-ssm-agent"},
             {"pid": 3, "name": "x", "exe": "/usr/bin/amazon-ssm-agent"}, {"pid": 4, "cmdline": ["/snap/bin/amazon-ssm-agent", "-x"]},
             {"pid": 5, "cmdline": ["/usr/bin/python3", "amazon-ssm-agent"]}]
    assert agent_pids(infos) == ["2", "3", "4"]


@pytest.mark.parametrize("kinds, units, running, status, words", [
    ([], [], [], FAILED, "not installed"),
    (["deb/rpm"], [], [], FAILED, "installed (deb/rpm) but not running; no systemd unit file found"),
    (["snap"], ["/u/a.service"], ["9"], OK, "installed (snap) and running (pid 9); unit /u/a.service"),
])
def test_agent_verdict(kinds, units, running, status, words):
    verdict = agent_verdict(kinds, units, running)
    assert verdict.status == status and words in verdict.summary


def test_drop_ins_sudo_never_reads():
    assert ignored_dropins("/etc/sudoers.d", ["ok", "john.doe", "backup~", ".runas-agent-alice.x1", "README"]) == [
        "sudo ignores /etc/sudoers.d/john.doe: #includedir skips names containing '.' or ending in '~'",
        "sudo ignores /etc/sudoers.d/backup~: #includedir skips names containing '.' or ending in '~'"]


@pytest.mark.parametrize("rc, output, ignored, status, summary, details", [
    (0, "/etc/sudoers: parsed OK\n/etc/sudoers.d/a: parsed OK\n", [], OK, "passes `visudo -c` (2 files parsed)", []),
    (0, "/etc/sudoers: parsed OK\n", ["i"], WARNING, "some drop-ins are never read", ["i"]),
    (1, "/etc/sudoers: parsed OK\n/etc/sudoers.d/zz:1:5: syntax error\n", ["i"], FAILED, "fails `visudo -c`",
     ["/etc/sudoers.d/zz:1:5: syntax error", "i"]),
])
def test_sudoers_verdict(rc, output, ignored, status, summary, details):
    verdict = sudoers_verdict(rc, output, ignored)
    assert verdict.status == status and summary in verdict.summary and list(verdict.details) == details


BLANKET = "# User rules for ssm-user\nssm-user ALL=(ALL) NOPASSWD:ALL\n"


@pytest.mark.parametrize("content, removing, run_as, status, words", [
    (None, False, None, OK, "is absent: ssm-user has no blanket sudo (the ssm-user account exists)"),
    ("ssm-user ALL=(ALL) NOPASSWD:ALL\nbob ALL=(ALL) ALL\n", False, None, WARNING, "grants more than ssm-user"),
    (BLANKET, True, None, WARNING, "the next sync removes it"),
    (BLANKET, False, False, WARNING, "and Run As is off: every session lands in ssm-user and is root"),
    (BLANKET, False, True, WARNING, ": whoever still lands in ssm-user is root"),
    (BLANKET, False, None, WARNING, ": whoever still lands in ssm-user is root"),
])
def test_ssm_user_verdict(content, removing, run_as, status, words):
    verdict = ssm_user_verdict("/etc/sudoers.d/ssm-agent-users", content, True, removing, run_as)
    assert verdict.status == status and words in verdict.summary


# --- the last sync ---------------------------------------------------------------------------------

NOW = 1_000_000.0
LIMIT = 3 * (900 + 120)


@pytest.mark.parametrize("record, status, text", [
    ({"SYNC_RESULT": "ok", "SYNC_CREATED": "2", "SYNC_SKIPPED": "0", "REALTIME": NOW - 30}, OK,
     "last sync 30s ago: ok (2 created, 0 skipped)"),
    ({"SYNC_RESULT": "failed", "SYNC_ERROR": "access denied", "REALTIME": NOW - 300}, FAILED, "last sync 5m ago: failed: access denied"),
    ({"SYNC_RESULT": "refused", "SYNC_REFUSALS": "disables 9 of 10", "REALTIME": NOW}, FAILED, "last sync 0s ago: refused: disables 9 of 10"),
    ({"SYNC_RESULT": "ok", "REALTIME": NOW - LIMIT - 1}, WARNING, "last sync 51m ago: ok; that is longer than 3 sync intervals"),
    ({"SYNC_RESULT": "busy", "REALTIME": NOW - 10}, WARNING, "last sync 10s ago: busy"),
    ({"SYNC_RESULT": "ok", "SYNC_CREATED": "", "REALTIME": None}, OK, "last sync at an unknown time: ok"),
])
def test_last_sync_verdict(record, status, text):
    verdict = last_sync_verdict(record, NOW, LIMIT)
    assert (verdict.status, verdict.summary) == (status, text)


def test_no_sync_recorded_says_when_the_state_last_changed():
    assert no_sync_verdict("no sync", "/var/lib/runas-agent", 7300).summary == \
        "no sync; the state in /var/lib/runas-agent last changed 2h ago"
    assert no_sync_verdict("no sync", "/var/lib/runas-agent", None).summary == "no sync"
    assert sync_text({"SYNC_RESULT": "partial", "SYNC_FAILED": "1"}, 5) == "last sync 5s ago: partial (1 failed)"


@pytest.mark.parametrize("seconds, words", [(-5, "0s"), (119, "119s"), (120, "2m"), (7199, "119m"), (7200, "2h"),
                                            (172799, "47h"), (172800, "2d")])
def test_ago(seconds, words):
    assert ago(seconds) == words
