"""packaging/build's offline checks of the wheel sets, on synthetic wheels (no download, no nfpm)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_build():
    loader = importlib.machinery.SourceFileLoader("runas_agent_packaging_build", str(REPO / "packaging/build"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


build = _load_build()


def wheel(pool: Path, name: str, version: str, requires_python: str = "", requires: tuple[str, ...] = ()) -> Path:
    dist = name.replace("-", "_")
    path = pool / f"{dist}-{version}-py3-none-any.whl"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    meta += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}-{version}.dist-info/METADATA", "\n".join(meta) + "\n")
    return path


@pytest.fixture
def pool(tmp_path):
    wheel(tmp_path, "botocore", "1.43.11", ">= 3.10", ("urllib3 (!=2.2.0,<3,>=1.25.4)", "jmespath (<2.0.0,>=0.7.1)"))
    wheel(tmp_path, "botocore", "1.42.97", ">= 3.9",
          ('urllib3 (<1.27,>=1.25.4) ; python_version < "3.10"', "jmespath (<2.0.0,>=0.7.1)"))
    wheel(tmp_path, "urllib3", "2.7.0", ">=3.10")
    wheel(tmp_path, "urllib3", "1.26.20", ">=2.7")
    wheel(tmp_path, "jmespath", "1.1.0", ">=3.9")
    return tmp_path


def reqs(text: str, tmp_path: Path):
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    return build.read_requirements(path)


PINS = """
botocore==1.43.11 ; python_version >= "3.10"
urllib3==2.7.0 ; python_version >= "3.10"
botocore==1.42.97 ; python_version < "3.10"
urllib3==1.26.20 ; python_version < "3.10"
jmespath==1.1.0
"""


@pytest.mark.parametrize("python, botocore, urllib3", [("3.9", "1.42.97", "1.26.20"), ("3.12", "1.43.11", "2.7.0")])
def test_markers_choose_the_set_of_each_python(pool, tmp_path, python, botocore, urllib3):
    chosen = build.select_wheels(reqs(PINS, tmp_path), pool, python)
    assert chosen["botocore"].name == f"botocore-{botocore}-py3-none-any.whl"
    assert chosen["urllib3"].name == f"urllib3-{urllib3}-py3-none-any.whl"
    build.check_wheel_set(chosen, python, "test")


def test_a_wheel_that_refuses_the_python_is_caught(pool, tmp_path):
    pins = PINS.replace('botocore==1.42.97 ; python_version < "3.10"', 'botocore==1.43.11 ; python_version < "3.10"')
    chosen = build.select_wheels(reqs(pins, tmp_path), pool, "3.9")
    with pytest.raises(build.BuildError, match=r"botocore-1.43.11-py3-none-any.whl needs Python >= 3.10, not 3.9"):
        build.check_wheel_set(chosen, "3.9", "rpm")


def test_a_dependency_not_shipped_is_caught(pool, tmp_path):
    pins = PINS.replace("jmespath==1.1.0\n", "")
    chosen = build.select_wheels(reqs(pins, tmp_path), pool, "3.11")
    with pytest.raises(build.BuildError, match=r"needs jmespath.*which is not shipped"):
        build.check_wheel_set(chosen, "3.11", "deb")


def test_a_dependency_at_the_wrong_version_is_caught(pool, tmp_path):
    pins = PINS.replace('urllib3==1.26.20 ; python_version < "3.10"', 'urllib3==2.7.0 ; python_version < "3.10"')
    chosen = build.select_wheels(reqs(pins, tmp_path), pool, "3.9")
    with pytest.raises(build.BuildError, match=r"needs urllib3.*shipped urllib3 2.7.0"):
        build.check_wheel_set(chosen, "3.9", "rpm")


def test_distribution_packages_need_not_be_shipped(pool, tmp_path):
    agent = wheel(pool, "runas-agent", "1.0", ">=3.9", ("PyYAML>=6.0", "psutil>=5.9", "systemd-python>=234",
                                                        "jmespath>=1", 'pytest>=8; extra == "test"'))
    chosen = build.select_wheels(reqs(PINS, tmp_path), pool, "3.11")
    build.check_wheel_set({**chosen, "runas-agent": agent}, "3.11", "deb")


def test_a_missing_pinned_wheel_is_caught(pool, tmp_path):
    with pytest.raises(build.BuildError, match=r"no wheel for six==1.17.0"):
        build.select_wheels(reqs(PINS + "six==1.17.0\n", tmp_path), pool, "3.11")


@pytest.mark.parametrize("line", ["boto3>=1.42", "boto3", "boto3==1.0,<2"])
def test_requirements_must_pin_exactly(tmp_path, line):
    with pytest.raises(build.BuildError, match="must pin exactly one version"):
        reqs(line + "\n", tmp_path)


def test_the_shipped_pins_cover_every_target_python():
    lines = build.read_requirements(REPO / "packaging/requirements.txt")
    for fmt, pythons in build.TARGET_PYTHONS.items():
        for python in pythons:
            env = {"python_version": python, "python_full_version": python + ".0"}
            names = [r.name for r in lines if not r.marker or r.marker.evaluate(env)]
            assert sorted(names) == sorted(set(names)), (fmt, python, names)   # one pin per name
            assert {"boto3", "botocore", "s3transfer", "urllib3", "jmespath"} <= set(names), (fmt, python)
