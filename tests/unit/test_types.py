"""The type check: mypy over agent/runas_agent as pyproject.toml configures it ([tool.mypy]: every
module but those listed there as being reworked, core/ with --strict's per-module flags), and core/
under --strict itself. Run in this process through mypy's API."""

from pathlib import Path

from mypy import api

REPO = Path(__file__).resolve().parents[2]


def mypy(tmp_path, *args):
    stdout, stderr, status = api.run(["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(tmp_path),
                                      *args])
    return status, stdout + stderr


def test_the_package_type_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    status, output = mypy(tmp_path)
    assert status == 0, output


def test_core_type_checks_strictly(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    status, output = mypy(tmp_path, "--strict", "agent/runas_agent/core")
    assert status == 0, output
