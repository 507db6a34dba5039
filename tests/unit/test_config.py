import dataclasses

import pytest

from runas_agent import config
from runas_agent.errors import ConfigError

GOOD = {"source": {"type": "identitystore", "region": "us-east-1", "identity_store_id": "d-1234567890"},
        "run_as": {"expression": "${path:userName}"}}


def problems(data):
    with pytest.raises(ConfigError) as info:
        config.validate(data)
    return info.value.problems


def test_minimal_config_gets_defaults():
    cfg = config.validate(GOOD)
    assert cfg.accounts.shell == "/bin/bash"
    assert cfg.safety.max_disable_fraction == 0.2
    assert cfg.state_dir == "/var/lib/runas-agent"
    assert cfg.scope.groups == ()


def test_every_problem_is_listed_with_its_key():
    found = problems({"source": {"type": "identitystore", "regoin": "us-east-1", "max_attempts": "3"},
                      "run_as": {}, "accounts": {"shell": "bash", "uid_min": True}, "bogus": 1})
    joined = "\n".join(found)
    for expected in ("bogus: unknown key", "source.regoin: unknown key", "source.max_attempts: must be an integer",
                     "run_as.expression: required", "accounts.shell: must be an absolute path",
                     "accounts.uid_min: must be an integer"):
        assert expected in joined, joined


@pytest.mark.parametrize("patch, key", [
    ({"source": {"type": "file"}}, "source.path"),
    ({"source": {"type": "file", "path": "relative.json"}}, "source.path"),
    ({"source": {"type": "ldap"}}, "source.type"),
    ({"source": {"type": "identitystore"}}, "source.region"),
    ({"source": {"type": "identitystore", "region": "us-east-1", "identity_store_id": "store"}}, "source.identity_store_id"),
    ({"run_as": {"expression": "${path:groups}"}}, "run_as.expression"),
    ({"run_as": {"expression": "${path:userName}", "account_kind": "team"}}, "run_as.account_kind"),
    ({"accounts": {"uid_min": 5000, "uid_max": 4000}}, "accounts.uid_min"),
    ({"accounts": {"uid_max": 2**32}}, "accounts.uid_max"),
    ({"safety": {"max_disable_fraction": 2}}, "safety.max_disable_fraction"),
    ({"groups": [{"local_groups": ["adm"]}]}, "groups[0]"),
    ({"groups": [{"run_as": "x", "local_groups": "adm"}]}, "groups[0].local_groups"),
    ({"scope": {"groups": [1]}}, "scope.groups[0]"),
])
def test_invalid_values_name_their_key(patch, key):
    data = {k: dict(v) for k, v in GOOD.items()}
    for section, values in patch.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values} if section != "source" else values
        else:
            data[section] = values
    assert any(p.startswith(key) for p in problems(data)), problems(data)


def test_load_reports_yaml_errors_and_missing_files(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("source: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(str(bad))
    with pytest.raises(ConfigError, match="file not found"):
        config.load(str(tmp_path / "none.yaml"))


def test_every_key_is_described():
    rows = config.describe_schema()
    assert rows and all(doc for _, _, doc in rows)


def test_the_settings_dataclasses_have_exactly_the_schemas_keys():
    assert config.SCHEMA.field_problems() == []


def test_settings_are_frozen_and_changed_by_replace():
    cfg = config.validate(GOOD, "/etc/runas-agent/config.yaml")
    assert cfg.path == "/etc/runas-agent/config.yaml"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run_as.expression = "${path:enterprise.organization}"
    changed = dataclasses.replace(cfg, run_as=dataclasses.replace(cfg.run_as, expression="${path:enterprise.organization}"))
    assert changed.run_as.expression == "${path:enterprise.organization}" and cfg.run_as.expression == "${path:userName}"
    assert changed.source is cfg.source


def test_defaults_hold_every_key():
    cfg = config.defaults()
    assert cfg.run_as.expression == "" and cfg.run_as.account_kind == "auto"
    assert cfg.sessions.state_roots == ("/var/lib/amazon/ssm",)
    assert cfg.sudo.rules == () and cfg.groups == () and cfg.path is None


def test_session_defaults_read_the_ssm_agents_one_data_path_and_need_no_bucket():
    cfg = config.validate({**GOOD, "sessions": {"s3_tagging": {"enabled": True}}})
    assert cfg.sessions.state_roots == ("/var/lib/amazon/ssm",)
    assert cfg.sessions.s3_tagging.enabled and cfg.sessions.s3_tagging.bucket is None


def test_a_file_that_is_not_utf8_is_a_config_error_naming_the_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"source:\n  type: file\n  path: /srv/caf\xe9.json\n")
    with pytest.raises(ConfigError, match=r"not UTF-8: byte 0xe9 on line 3"):
        config.load(str(bad))


def test_a_value_yaml_cannot_build_is_a_config_error(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("when: 2024-13-45\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(str(bad))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_numbers_must_be_finite(value):
    found = problems({**GOOD, "daemon": {"interval_seconds": value}})
    assert any(p.startswith("daemon.interval_seconds: must be a finite number") for p in found), found


def test_unknown_keys_and_choices_get_a_suggestion():
    found = problems({**GOOD, "accounts": {"shel": "/bin/bash"}, "run_as": {"expression": "${path:userName}",
                                                                            "account_kind": "persn"}})
    assert "accounts.shel: unknown key (did you mean shell?)" in found, found
    assert any(p.startswith("run_as.account_kind:") and p.endswith("(did you mean person?)") for p in found), found


def test_an_unsupported_path_gets_a_suggestion_not_the_whole_list():
    found = problems({**GOOD, "run_as": {"expression": "${path:usrName}"}})
    assert any("(did you mean ${path:userName}?)" in p for p in found), found
    assert all(len(p) < 200 for p in found), found


def test_cross_key_problems_are_listed_with_type_problems():
    found = problems({**GOOD, "accounts": {"uid_min": 5000, "uid_max": 4000, "shell": 3}})
    assert "accounts.uid_min: must be lower than accounts.uid_max" in found, found
    assert any(p.startswith("accounts.shell:") for p in found), found


def test_a_cross_key_check_does_not_repeat_a_keys_own_problem():
    found = problems({"source": {"type": "identitystore", "region": 5, "identity_store_id": "d-1234567890"},
                      "run_as": {"expression": "from-identity-center"}})
    assert len([p for p in found if p.startswith("source.region")]) == 1, found


MINIMAL = "source: {type: file, path: /srv/d.json}\nrun_as: {expression: '${path:userName}'}\n"


@pytest.mark.parametrize("extra, message", [
    ("scope: {groups: &g [ops]}\n", "the anchor &g is refused: the configuration takes no anchors or aliases"),
    ("groups: [{identity_store_group: ops, local_groups: [adm]}]\nscope: {groups: *g}\n", "the alias *g is refused"),
    ("safety:\n  <<: {max_disable_count: 9}\n", "the merge key << is refused"),
    ("run_as: {expression: '${path:enterprise.organization}'}\n", "the key 'run_as' appears twice in one mapping"),
    ("safety: {max_disable_count: 3, max_disable_count: 300}\n", "the key 'max_disable_count' appears twice"),
    ("x: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
])
def test_the_configuration_yaml_takes_no_aliases_merges_or_repeated_keys(tmp_path, extra, message):
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + extra)
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    assert info.value.problems[0].startswith("not valid YAML: ") and message in info.value.problems[0]


def test_an_alias_in_any_place_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "".join(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9 if i else ["x"] * 9) + "]\n"
                                      for i in range(12)))
    with pytest.raises(ConfigError, match="the anchor &l0 is refused"):
        config.load(str(path))


def test_the_configuration_file_has_a_size_limit(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "#" * config.MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match=f"larger than {config.MAX_CONFIG_BYTES} bytes; not read"):
        config.load(str(path))
    path.write_text(MINIMAL + "# ok\n")
    assert config.load(str(path)).source.type == "file"
