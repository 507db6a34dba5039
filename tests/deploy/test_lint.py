"""Every template passes cfn-lint and checkov, and each checkov suppression says why. Both tools also
get a broken copy, to show they would catch what they are here for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.templates import CLOUDFORMATION, REPO, TEMPLATES

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def cfn_lint(tmp_path_factory) -> dict[str, list[str]]:
    """One cfn-lint run over the templates and a copy of member.yaml with a misspelt document type:
    its findings by file name."""
    broken = tmp_path_factory.mktemp("broken") / "broken-member.yaml"
    broken.write_text((CLOUDFORMATION / "member.yaml").read_text().replace("DocumentType: Automation", "DocumentType: Automaton"))
    paths = [CLOUDFORMATION / name for name in TEMPLATES] + [broken]
    proc = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", *map(str, paths)],
                          capture_output=True, text=True, timeout=300)
    assert not proc.stderr, proc.stderr
    findings: dict[str, list[str]] = {path.name: [] for path in paths}
    for line in proc.stdout.splitlines():
        findings[Path(line.split(":", 1)[0]).name].append(line)
    return findings


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory) -> dict:
    """One checkov run (it takes ~15 s) over the templates and a copy of publisher.yaml whose bucket
    lets a public policy through; results are told apart by file."""
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} is missing: dev/setup installs it")
        pytest.skip(f"{CHECKOV} is missing: run dev/setup")
    directory = tmp_path_factory.mktemp("templates")
    for name in TEMPLATES:
        shutil.copy(CLOUDFORMATION / name, directory / name)
    text = (CLOUDFORMATION / "publisher.yaml").read_text()
    assert "BlockPublicPolicy: true" in text
    (directory / "broken-publisher.yaml").write_text(text.replace("BlockPublicPolicy: true", "BlockPublicPolicy: false"))
    # BC_SKIP_MAPPING: no download of check metadata (there is no network here)
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", LOG_LEVEL="ERROR")
    proc = subprocess.run([str(CHECKOV), "--directory", str(directory), "--framework", "cloudformation",
                           "--output", "json", "--skip-download"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def _of(report: dict, kind: str, broken: bool) -> list[dict]:
    return [c for c in report["results"][kind] if c["file_path"].endswith("/broken-publisher.yaml") == broken]


def test_cfn_lint_passes_every_template(cfn_lint):
    assert {name: cfn_lint[name] for name in TEMPLATES} == {name: [] for name in TEMPLATES}


def test_cfn_lint_catches_a_broken_template(cfn_lint):
    assert [line for line in cfn_lint["broken-member.yaml"] if "Automaton" in line]


def test_checkov_passes_and_every_suppression_says_why(checkov_report):
    failed = _of(checkov_report, "failed_checks", broken=False)
    assert not failed, [(c["check_id"], c["resource"], c["file_path"]) for c in failed]
    assert not checkov_report["results"]["parsing_errors"]
    assert _of(checkov_report, "passed_checks", broken=False)
    skipped = _of(checkov_report, "skipped_checks", broken=False)
    assert {(c["check_id"], c["resource"]) for c in skipped} == {
        ("CKV_AWS_18", "AWS::S3::Bucket.SnapshotBucket"), ("CKV_AWS_33", "AWS::KMS::Key.BucketKey")}
    for check in skipped:
        assert len(check["check_result"].get("suppress_comment", "")) > 40, check["check_id"]


def test_checkov_catches_a_public_snapshot_bucket(checkov_report):
    assert "CKV_AWS_54" in {c["check_id"] for c in _of(checkov_report, "failed_checks", broken=True)}


def test_checkov_is_the_pinned_version(checkov_report):
    version = checkov_report["summary"]["checkov_version"]
    assert f"CHECKOV_VERSION={version}\n" in (REPO / "dev" / "setup").read_text()
