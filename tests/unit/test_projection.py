"""core/projection.py: a published snapshot carries every record, only the fields the fleet needs, and
every attribute path reads the same value on the projected record as on the Identity Store's."""

from __future__ import annotations

import copy

import pytest

from runas_agent.core.expression import PATHS, parse
from runas_agent.core.projection import COPIERS, field_problem, project, project_user
from runas_agent.directory import ENTERPRISE_EXTENSION, User, parse_document, parse_user
from tests.endpoint.directories import make_directory

#: A person with every attribute the Identity Store has, in the shapes that make projection hard:
#: several emails (the primary not first), addresses and phone numbers of mixed type and case, the
#: enterprise extension's names in another casing, a manager reference.
RICH = {
    "IdentityStoreId": "d-1234567890", "UserId": "id-rich", "UserName": "rich", "UserStatus": "ENABLED",
    "DisplayName": "Rich Person", "NickName": "R", "Title": "Eng", "UserType": "Employee", "Locale": "fr_FR",
    "Timezone": "Europe/Paris", "PreferredLanguage": "fr", "ProfileUrl": "https://example.com/rich",
    "Name": {"GivenName": "Rich", "FamilyName": "Person", "MiddleName": "Q", "Formatted": "Rich Q Person"},
    "Emails": [{"Value": "home@example.com", "Type": "home", "Primary": False},
               {"Value": "rich@example.com", "Type": "work", "Primary": True},
               {"Value": "second@example.com", "Type": "work", "Primary": True}],
    "PhoneNumbers": [{"Value": "+33 1", "Type": "home"}, {"Value": "+33 2", "Type": "Work", "Primary": True}],
    "Addresses": [{"Type": "home", "Locality": "Lyon", "StreetAddress": "1 rue A"},
                  {"Type": "WORK", "Locality": "Paris", "Country": "FR", "PostalCode": "75001", "Region": "IDF",
                   "StreetAddress": "2 rue B", "Formatted": "2 rue B, Paris"}],
    "ExternalIds": [{"Issuer": "https://idp.example.com", "Id": "ext-1"}],
    "Extensions": {ENTERPRISE_EXTENSION: {"Organization": "Iret", "costcenter": "42", "Department": "R&D",
                                          "Division": "X", "EmployeeNumber": "7", "Manager": {"Value": "id-boss"}}},
}


def _user(record):
    parsed = parse_user(record, 0)
    assert isinstance(parsed, User)
    return parsed


def test_every_expression_path_can_be_carried():
    assert set(COPIERS) == set(PATHS)
    assert all(field_problem(path) is None for path in PATHS)
    assert "userName" in field_problem("emails")


@pytest.mark.parametrize("path", sorted(PATHS))
def test_each_path_reads_the_same_value_on_the_projected_record(path):
    expression = parse(f"x-${{path:{path}}}")
    records = [RICH] + make_directory(12, users_per_group=0, without_extensions_every=3)["Users"]
    for index, record in enumerate(records):
        projected = project_user(record, index, [path])
        assert expression.evaluate(_user(projected)) == expression.evaluate(_user(record)), (path, record["UserId"])
    assert expression.evaluate(_user(project_user(RICH, 0, [path]))) != "x-"  # RICH has every attribute


def test_only_the_needed_fields_are_carried():
    assert project_user(RICH, 0, ["userName"]) == {
        "IdentityStoreId": "d-1234567890", "UserId": "id-rich", "UserName": "rich", "UserStatus": "ENABLED",
        "DisplayName": "Rich Person"}
    organization = project_user(RICH, 0, ["enterprise.organization", "emails[primary eq true].value"])
    assert organization["Extensions"] == {ENTERPRISE_EXTENSION: {"Organization": "Iret"}}
    assert organization["Emails"] == [{"Primary": True, "Value": "rich@example.com"},
                                      {"Primary": True, "Value": "second@example.com"}]
    assert not {"Name", "Addresses", "PhoneNumbers", "ExternalIds", "Title"} & set(organization)
    work = project_user(RICH, 0, ['addresses[type eq "work"].locality', 'addresses[type eq "work"].country'])
    assert work["Addresses"] == [{"Type": "WORK", "Locality": "Paris", "Country": "FR"}]


def test_the_enterprise_extension_stays_when_its_attributes_are_read_even_empty():
    """An instance refuses a read in which nobody carries the extension its expression reads."""
    record = {**RICH, "Extensions": {ENTERPRISE_EXTENSION: {"department": "R&D"}}}
    assert project_user(record, 0, ["enterprise.organization"])["Extensions"] == {ENTERPRISE_EXTENSION: {}}
    assert "Extensions" not in project_user({k: v for k, v in RICH.items() if k != "Extensions"}, 0,
                                            ["enterprise.organization"])


def test_a_record_the_agent_cannot_read_is_carried_as_it_is():
    for bad in ({**RICH, "UserStatus": "MAYBE"}, {k: v for k, v in RICH.items() if k != "UserId"}, "not a record",
                {**RICH, "Extensions": "garbage"}):
        assert project_user(copy.deepcopy(bad), 0, ["userName"]) == bad


def test_a_document_keeps_every_record_and_parses_to_the_same_people_and_groups():
    document = make_directory(40, users_per_group=7, disabled_every=5)
    document["Groups"][0]["Description"] = "private notes"
    document["GeneratedAt"] = "2026-01-01T00:00:00Z"
    document["Signature"] = {"Algorithm": "x", "KeyId": "k", "Value": "v"}
    projected = project(document, ["userName"])
    assert "GeneratedAt" not in projected and "Signature" not in projected
    assert projected["GroupMemberships"] == document["GroupMemberships"]
    assert projected["Groups"][0] == {k: document["Groups"][0][k] for k in ("IdentityStoreId", "GroupId", "DisplayName")}
    before, after = parse_document(document), parse_document(projected)
    assert [(u.user_id, u.user_name, u.enabled, u.display_name) for u in after.users] == \
        [(u.user_id, u.user_name, u.enabled, u.display_name) for u in before.users]
    assert after.members == before.members and after.groups == before.groups
    assert not any("Emails" in record for record in projected["Users"])
