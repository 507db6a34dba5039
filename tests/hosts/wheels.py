"""Wheels to install runas-agent into a booted container that has no network: the project built
from this tree, plus its pure-Python (or manylinux) runtime dependencies at the versions installed
here. systemd-python is left out: the container uses Debian's python3-systemd through a venv with
--system-site-packages, as the packages do.

Dependency wheels are downloaded once (pip download, from PyPI) and cached below
tests.hosts.container.cache_dir(), keyed by the versions."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tests.hosts.container import _flock, cache_dir

REPO = Path(__file__).resolve().parents[2]
RUNTIME = ("boto3", "botocore", "jmespath", "s3transfer", "urllib3", "python-dateutil", "six", "psutil", "PyYAML")


def _pins() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME]


def dependency_wheels() -> Path:
    pins = _pins()
    key = hashlib.sha256((sys.version.split()[0][:4] + "\n".join(pins)).encode()).hexdigest()[:16]
    out = cache_dir() / f"wheels-{key}"
    ready = out / ".ready"
    if ready.exists():
        return out
    with _flock(cache_dir() / f"wheels-{key}.lock"):
        if ready.exists():
            return out
        tmp = cache_dir() / f"wheels-{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", str(tmp), *pins], check=True, stdin=subprocess.DEVNULL, timeout=600)
        (tmp / ".ready").write_text("\n".join(pins) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def agent_wheelhouse(dest: Path) -> Path:
    """`dest` filled with the runas-agent wheel built from this tree and every runtime dependency."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(dest), str(REPO)], check=True, stdin=subprocess.DEVNULL, timeout=600)
    for wheel in dependency_wheels().glob("*.whl"):
        shutil.copy2(wheel, dest / wheel.name)
    return dest
