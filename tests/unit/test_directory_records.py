"""One reading of directory records for every source (and the test endpoint): what a malformed user
record means (held, or untied), what refuses the whole document, and the strict JSON of documents."""

from __future__ import annotations

import datetime

import pytest

from runas_agent.directory import HELD, UNTIED, Problem, User, decode, parse_document, parse_user
from runas_agent.errors import SnapshotError

GOOD = {"UserId": "u1", "UserName": "alice", "UserStatus": "ENABLED",
        "Extensions": {"aws:identitystore:enterprise": {"organization": "iret"}}}


def doc(users=(GOOD,), groups=(), memberships=(), **top):
    return {"IdentityStoreId": "d-1234567890", "Users": list(users), "Groups": list(groups),
            "GroupMemberships": list(memberships), **top}


@pytest.mark.parametrize("record, expected", [
    (GOOD, User("u1", "alice", True, GOOD)),
    (dict(GOOD, UserStatus="DISABLED"), User("u1", "alice", False, GOOD)),
    ({k: v for k, v in GOOD.items() if k != "Extensions"}, User("u1", "alice", True, GOOD)),
    (dict(GOOD, Extensions={"aws:identitystore:enterprise": {}, "aws:identitystore:other": {"x": 1}}), User("u1", "alice", True, GOOD)),
])
def test_records_the_identity_store_returns_are_users(record, expected):
    assert parse_user(record, 0) == expected


@pytest.mark.parametrize("change, reason", [
    (dict(UserStatus="WEIRD"), "unknown UserStatus 'WEIRD'"),
    (dict(UserStatus=None), "unknown UserStatus None"),
    (dict(UserStatus="enabled"), "unknown UserStatus 'enabled'"),
    (dict(UserName=42), "UserName is a number"),
    (dict(UserName=None), "UserName is null"),
    (dict(UserName=""), "UserName is empty"),
    (dict(UserName=["alice"]), "UserName is a list"),
    (dict(Extensions="x"), "Extensions is a string, not an object"),
    (dict(Extensions=[]), "Extensions is a list, not an object"),
    (dict(Extensions={"aws:identitystore:Enterprise": {"organization": "x"}}),
     "the Extensions key 'aws:identitystore:Enterprise' is not one the Identity Store returns (aws:identitystore:[a-z]{1,20})"),
    (dict(Extensions={"enterprise": {}}), "the Extensions key 'enterprise' is not one the Identity Store returns (aws:identitystore:[a-z]{1,20})"),
    (dict(Extensions={"aws:identitystore:enterprise": "iret"}), "Extensions['aws:identitystore:enterprise'] is a string, not an object"),
])
def test_a_malformed_record_naming_its_userid_holds_that_person(change, reason):
    problem = parse_user(dict(GOOD, **change), 3)
    assert isinstance(problem, Problem) and problem.user_id == "u1" and not problem.untied
    assert problem.reason == f"{reason}: {HELD}"


def test_a_record_without_userstatus_holds_its_person():
    problem = parse_user({k: v for k, v in GOOD.items() if k != "UserStatus"}, 0)
    assert problem.user_id == "u1" and problem.reason.startswith("the record has no UserStatus")


@pytest.mark.parametrize("record, reason", [
    (None, "the record is null, not an object"),
    ("alice", "the record is a string, not an object"),
    ([GOOD], "the record is a list, not an object"),
    ({k: v for k, v in GOOD.items() if k != "UserId"}, "UserId is missing"),
    (dict(GOOD, UserId=None), "UserId is null"),
    (dict(GOOD, UserId=""), "UserId is empty"),
    (dict(GOOD, UserId=12), "UserId is a number"),
])
def test_a_record_that_names_no_userid_is_untied(record, reason):
    problem = parse_user(record, 7)
    assert problem == Problem("Users[7]", f"{reason}: {UNTIED}", None, True)


def test_the_directory_knows_who_is_held_and_whether_a_record_is_untied():
    directory = parse_document(doc([GOOD, dict(GOOD, UserId="u2", UserName="bob", UserStatus="X"), None]))
    assert [u.user_id for u in directory.users] == ["u1"]
    assert directory.held_user_ids == {"u2"} and directory.untied == 1


@pytest.mark.parametrize("document, message", [
    (doc([GOOD, dict(GOOD, UserName="other")]), "UserId u1 appears twice"),
    (doc([GOOD, dict(GOOD, UserStatus="X")]), "UserId u1 appears twice"),
    (doc([GOOD, dict(GOOD, UserId="u2")]), "UserName 'alice' appears twice"),
    (doc(groups=[{"DisplayName": "ops"}]), "Groups[0] has no GroupId"),
    (doc(groups=[None]), "Groups[0] has no GroupId"),
    (doc(memberships=[{"GroupId": "g"}]), "GroupMemberships[0] has no GroupId or MemberId.UserId"),
    (doc(memberships=[{"GroupId": "g", "MemberId": {"GroupId": "h"}}]), "GroupMemberships[0] has no GroupId or MemberId.UserId"),
    (doc([dict(GOOD, IdentityStoreId="d-0000000000")]), "Users[0] is of Identity Store 'd-0000000000', the document of d-1234567890"),
    (doc(groups=[{"GroupId": "g", "IdentityStoreId": "d-0000000000"}]), "Groups[0] is of Identity Store"),
    (doc(FormatVersion=2), "FormatVersion 2: this runas-agent reads format 1"),
    (doc(FormatVersion=True), "FormatVersion True"),
    (doc(GeneratedAt="yesterday"), "GeneratedAt 'yesterday' is not an ISO 8601 timestamp"),
    (doc(GeneratedAt="2025-01-31T08:00:00"), "GeneratedAt '2025-01-31T08:00:00' has no UTC offset"),
    (doc(GeneratedAt=1738310400), "GeneratedAt must be an ISO 8601 timestamp string"),
    (doc(Signature=[]), "Signature must be an object"),
    (doc(Extra=1), "unknown top-level key(s): Extra"),
    ([], "the document must be an object"),
])
def test_damage_that_refuses_the_whole_document(document, message):
    with pytest.raises(SnapshotError) as info:
        parse_document(document, "doc")
    assert message in str(info.value)


def test_generated_at_is_read_as_utc():
    directory = parse_document(doc(GeneratedAt="2025-01-31T09:00:00+01:00"))
    assert directory.generated_at == datetime.datetime(2025, 1, 31, 8, 0, tzinfo=datetime.timezone.utc)
    assert parse_document(doc(GeneratedAt="2025-01-31T08:00:00Z")).generated_at == directory.generated_at


@pytest.mark.parametrize("data, message", [
    (b"Users: []\n", "not a JSON directory document"),
    (b'{"Users": [], "Users": []}', "the key 'Users' appears twice in one object"),
    (b'{"Users": [{"UserId": "u", "UserId": "v"}]}', "the key 'UserId' appears twice in one object"),
    (b'{"Users": [Infinity]}', "Infinity is not a JSON number"),
    (b'{"Users": [-Infinity]}', "-Infinity is not a JSON number"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b'{"Users": [1' + b"1" * 5000 + b"]}", "not a JSON directory document"),
    (b"\xef\xbb\xbf{}", "not a JSON directory document"),
    (b'{"a": "\xc3"}', "not UTF-8"),
    (b'{"Users": [', "not a JSON directory document"),
])
def test_documents_are_strict_json(data, message):
    with pytest.raises(SnapshotError) as info:
        decode(data, "doc")
    assert message in str(info.value)
