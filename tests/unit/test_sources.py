"""Source types are classes: the configuration, the service's watchdog check and the AWS needs all come
from the class that `source.type` names, and a key of one type is refused under every other."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from runas_agent import config, daemon
from runas_agent.errors import ConfigError
from runas_agent.journal import Journal
from runas_agent.sources import make_source, source_type, types
from runas_agent.sources.file import FileSettings, FileSource
from runas_agent.sources.identitystore import IdentityStoreSource
from runas_agent.sources.s3 import S3Settings, S3Source
from tests import signing

URL = "s3://fleet-snapshots/runas/directory.json"
EXPRESSION = {"expression": "${path:userName}"}
#: a valid source section of each type
VALID = {
    "identitystore": {"type": "identitystore", "region": "eu-west-1", "identity_store_id": "d-1234567890"},
    "file": {"type": "file", "path": "/srv/directory.json"},
    "s3": {"type": "s3", "url": URL, "bucket_region": "eu-central-1", "bucket_owner": "111122223333",
           "signing_public_key": signing.public_pem()},
}
#: a valid value of every key that not every type has
OWN_VALUES = {"path": "/srv/directory.json", "url": URL, "bucket_region": "eu-central-1", "bucket_owner": "111122223333",
              "sse_kms_key_id": "arn:aws:kms:eu-west-1:111122223333:key/0b1c2d3e-1111-2222-3333-444455556666",
              "max_age": 3600, "signing_public_key": signing.public_pem(), "max_document_bytes": 1000}


def problems(source):
    with pytest.raises(ConfigError) as info:
        config.validate({"source": source, "run_as": EXPRESSION})
    return info.value.problems


def test_every_source_type_is_registered_under_its_name():
    assert set(types()) == {"identitystore", "file", "s3"}
    for name, cls in types().items():
        assert cls.kind == name and source_type(name) is cls
    with pytest.raises(ValueError, match="unknown source type 'ldap'"):
        source_type("ldap")


def test_settings_classes_match_the_schema():
    assert config.SCHEMA.field_problems() == []
    assert OWN_VALUES.keys() == {k for cls in types().values() for k in cls.keys}


@pytest.mark.parametrize("name", sorted(VALID))
def test_a_valid_section_builds_its_types_settings(name):
    cfg = config.validate({"source": VALID[name], "run_as": EXPRESSION})
    assert type(cfg.source) is source_type(name).settings_class
    assert cfg.source.type == name


@pytest.mark.parametrize("name, key", [(name, key) for name in sorted(VALID) for key in sorted(OWN_VALUES)
                                       if key not in source_type(name).keys])
def test_a_key_of_another_type_is_refused(name, key):
    owners = " or ".join(cls.kind for cls in types().values() if key in cls.keys)
    assert problems({**VALID[name], key: OWN_VALUES[key]}) == [f"source.{key}: only for type {owners}"]


def test_the_document_keys_are_shared_by_the_file_and_s3_types():
    assert {k for k in OWN_VALUES if k in FileSource.keys and k in S3Source.keys} == {"signing_public_key", "max_document_bytes"}
    assert FileSource.keys["signing_public_key"] is S3Source.keys["signing_public_key"]
    cfg = config.validate({"source": {**VALID["file"], "signing_public_key": signing.public_pem()}, "run_as": EXPRESSION})
    assert cfg.source.signing_public_key == signing.public_pem()


def test_path_with_an_s3_source_is_refused():
    """It used to be accepted and silently ignored."""
    found = problems({"type": "s3", "url": URL, "path": "/srv/directory.json"})
    assert "source.path: only for type file" in found, found


def test_a_key_of_another_type_given_as_null_is_no_problem():
    cfg = config.validate({"source": {**VALID["s3"], "path": None}, "run_as": EXPRESSION})
    assert not hasattr(cfg.source, "path")


@pytest.mark.parametrize("source, expected", [
    ({"type": "file"}, "source.path: required for type file"),
    ({"type": "file", "path": "relative.json"}, "source.path: must be an absolute path"),
    ({**VALID["s3"], "url": None}, "source.url: required for type s3: '' is not an s3://bucket/key URL: it does not start with s3://"),
    ({**VALID["s3"], "bucket_region": "Frankfurt"}, "source.bucket_region: 'Frankfurt' is not an AWS region name"),
    ({**VALID["s3"], "bucket_owner": None}, "source.bucket_owner: required for type s3: the account id that owns the "
                                            "bucket (publisher.yaml's output SnapshotBucketOwner)"),
    ({**VALID["s3"], "bucket_owner": 111122223333}, "source.bucket_owner: must be a string or null, not int"),
    ({**VALID["s3"], "signing_public_key": None}, "source.signing_public_key: required for type s3: the publisher's "
                                                  "signing key, from `aws kms get-public-key` (see docs/deploy-aws.md)"),
    ({**VALID["s3"], "sse_kms_key_id": "alias/runas-agent-snapshot-bucket"},
     "source.sse_kms_key_id: 'alias/runas-agent-snapshot-bucket' is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID: "
     "S3 names the key by its ARN, never by an alias)"),
    ({**VALID["s3"], "max_age": 0}, "source.max_age: must be greater than 0"),
    ({"type": "identitystore"}, "source.region: required for type identitystore (the Identity Center home region)"),
])
def test_each_types_own_checks(source, expected):
    assert problems(source) == [expected]


@pytest.mark.parametrize("source, bucket_region, home_region", [
    ({"bucket_region": "eu-central-1"}, "eu-central-1", None),
    ({"region": "us-east-1"}, "us-east-1", "us-east-1"),  # written before bucket_region existed
    ({"region": "us-east-1", "bucket_region": "eu-central-1"}, "eu-central-1", "us-east-1"),
    ({}, None, None),
])
def test_the_bucket_region_has_its_own_key_and_falls_back_to_region(monkeypatch, source, bucket_region, home_region):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    section = {k: v for k, v in VALID["s3"].items() if k != "bucket_region"}
    cfg = config.validate({"source": {**section, **source}, "run_as": EXPRESSION})
    assert isinstance(cfg.source, S3Settings)
    assert cfg.source.effective_bucket_region == bucket_region and cfg.source.region == home_region
    built = make_source(cfg.source)
    assert isinstance(built, S3Source)
    assert built.client.meta.region_name == (bucket_region or "ap-south-1")


def test_aws_needs_come_from_the_type():
    assert {name: cls.needs_aws_credentials for name, cls in types().items()} == \
        {"identitystore": True, "file": False, "s3": True}
    assert tuple(probe.name for probe in IdentityStoreSource.probes) == ("botocore", "identitystore", "identitystore-fields")
    assert FileSource.probes == () and S3Source.probes == ()


def test_origin_says_where_the_directory_comes_from():
    settings = {name: config.validate({"source": section, "run_as": EXPRESSION}).source for name, section in VALID.items()}
    assert source_type("file").origin(settings["file"]) == "/srv/directory.json"
    assert source_type("s3").origin(settings["s3"]) == URL
    assert source_type("identitystore").origin(settings["identitystore"]) == "Identity Store d-1234567890 in eu-west-1"
    discovered = dataclasses.replace(settings["identitystore"], identity_store_id=None)
    assert source_type("identitystore").origin(discovered) == "Identity Store (discovered) in eu-west-1"


def test_the_file_source_is_built_from_its_settings(tmp_path):
    path = tmp_path / "directory.json"
    path.write_text('{"IdentityStoreId": "d-1234567890", "Users": [{"UserId": "u1", "UserName": "ann", '
                    '"UserStatus": "ENABLED"}], "Groups": [], "GroupMemberships": []}')
    cfg = config.validate({"source": {"type": "file", "path": str(path)}, "run_as": EXPRESSION})
    assert isinstance(cfg.source, FileSettings)
    source = make_source(cfg.source, checkpoint=lambda: None, nap=lambda s: None)
    assert [u.user_name for u in source.fetch().directory.users] == ["ann"]


@pytest.mark.parametrize("name, section, seconds", [
    ("identitystore", {"connect_timeout": 5, "read_timeout": 20}, 25),
    ("s3", {"connect_timeout": 5, "read_timeout": 20}, 3 * 25 + 2 * 20),
    ("file", {}, None),
])
def test_the_longest_step_without_a_proof_of_progress(name, section, seconds):
    settings = config.validate({"source": {**VALID[name], **section}, "run_as": EXPRESSION}).source
    step = source_type(name).longest_step(settings)
    assert (step.seconds if step else None) == seconds


def _daemon(source, watchdog):
    cfg = config.validate({"source": source, "run_as": EXPRESSION, "state_dir": "/nonexistent/state"})
    return daemon.Daemon("/etc/runas-agent/config.yaml", cfg, notify=lambda *a: None,
                         journal=Journal(sendv=lambda *a: None, echo=False), watchdog=watchdog)


@pytest.mark.parametrize("source, watchdog, warned", [
    # three quarters of a 240s watchdog: 180s
    ({**VALID["identitystore"], "read_timeout": 175}, 240, "source.connect_timeout + source.read_timeout (180s)"),
    ({**VALID["identitystore"], "read_timeout": 170}, 240, None),
    ({**VALID["s3"], "read_timeout": 45}, 240, "3 attempts of source.connect_timeout + source.read_timeout, with up "
                                               "to 20s between them (190s)"),
    ({**VALID["s3"]}, 240, None),  # 3 * 25 + 2 * 20 = 115s
    ({**VALID["file"]}, 1, None),
])
def test_the_watchdog_margin_is_checked_for_every_source_type(caplog, source, watchdog, warned):
    with caplog.at_level(logging.WARNING, logger="runas_agent.daemon"):
        _daemon(source, watchdog)._check_watchdog_margin()
    messages = [r.getMessage() for r in caplog.records if "watchdog" in r.getMessage()]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and messages[0].startswith(warned), messages
