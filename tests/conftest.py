import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.hosts.namespace import IsolatedHost

_GUARDED = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/subuid"]


def _fingerprint() -> dict[str, str]:
    out = {}
    for path in _GUARDED:
        try:
            out[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except FileNotFoundError:
            out[path] = "absent"
    if os.path.isdir("/etc/sudoers.d"):
        out["/etc/sudoers.d"] = ",".join(sorted(os.listdir("/etc/sudoers.d")))
    out["/home"] = ",".join(sorted(os.listdir("/home")))
    return out


@pytest.fixture(scope="session", autouse=True)
def machine_accounts_untouched():
    """Every test run ends by proving this machine's own accounts and sudoers were not changed."""
    before = _fingerprint()
    yield
    after = _fingerprint()
    assert after == before, "a test changed this machine's own /etc or /home"


def _need_root_tools():
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("useradd"):
        if os.environ.get("CI"):
            pytest.fail("isolated-host tests need root, unshare and useradd")
        pytest.skip("isolated-host tests need root, unshare and useradd")


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """The runas-agent wheel built from this tree and its runtime dependencies, built once per run
    for every test that installs the agent into a booted container."""
    from tests.hosts.wheels import agent_wheelhouse

    return agent_wheelhouse(tmp_path_factory.mktemp("wheels"))


@pytest.fixture
def isolated_host(tmp_path):
    """A throwaway host: a private copy of /etc in a mount namespace (see tests/hosts/namespace.py)."""
    _need_root_tools()
    host = IsolatedHost(tmp_path / "host")
    yield host
    host.destroy()
