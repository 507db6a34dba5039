"""pytest fixtures for the booted-container harness (tests/hosts/container.py).

Use from a test module (or a conftest) with::

    from tests.hosts.fixtures import booted_container, container_factory  # noqa: F401

or register the whole module once in the root ``conftest.py``::

    pytest_plugins = ["tests.hosts.fixtures"]

Outside CI the fixtures skip, with the reason, on a machine that cannot
boot containers (not root, or ``systemd-nspawn``/``mmdebstrap``/... missing).
With ``CI`` set to true that is a failure instead: CI must install the tools.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.hosts.container import (
    BootedContainer,
    build_rootfs,
    missing_tools,
)

# apt packages providing the tools in tests.hosts.container._TOOL_CANDIDATES
TOOL_PACKAGES = {
    "mmdebstrap": "mmdebstrap",
    "systemd-nspawn": "systemd-container",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "tar": "tar",
    "ssh-keygen": "openssh-client",
}


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def container_support_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (systemd-nspawn, ip netns)")
    missing = missing_tools()
    if missing:
        pkgs = sorted({TOOL_PACKAGES.get(t, t) for t in missing})
        problems.append(f"missing tools {', '.join(missing)} "
                        f"(apt-get install {' '.join(pkgs)})")
    return problems


def require_container_support() -> None:
    """Skip (outside CI) or fail (under CI=true) when containers can't be booted."""
    problems = container_support_problems()
    if not problems:
        return
    reason = "booted container unavailable: " + "; ".join(problems)
    if running_in_ci():
        pytest.fail(reason + " [CI is set: this is a failure, not a skip]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def container_rootfs() -> Path:
    """The cached bookworm root tree (built with mmdebstrap on first use)."""
    require_container_support()
    return build_rootfs()


@pytest.fixture(scope="session")
def booted_container(container_rootfs: Path) -> Iterator[BootedContainer]:
    """One container booted for the whole session, shared by its tests.

    ``--volatile=overlay``: whatever tests change is gone at poweroff, but
    tests sharing this container see each other's changes, so use unique
    names for units, users and files.
    """
    with BootedContainer(root=container_rootfs) as ct:
        yield ct


@pytest.fixture
def container_factory(container_rootfs: Path) -> Iterator[Callable[..., BootedContainer]]:
    """Boot extra, private containers: ``container_factory(bind_ro=[...])``.

    Each is powered off and cleaned at the end of the test.  Pass
    ``extra_packages=...`` to boot a different (separately cached) tree.
    """
    made: list[BootedContainer] = []

    def make(**kwargs) -> BootedContainer:
        if "extra_packages" not in kwargs:
            kwargs.setdefault("root", container_rootfs)
        ct = BootedContainer(**kwargs)
        made.append(ct)
        return ct.start()

    try:
        yield make
    finally:
        errors = []
        for ct in reversed(made):
            try:
                ct.close()
            except Exception as e:  # keep closing the others
                errors.append(e)
        if errors:
            raise errors[0]
