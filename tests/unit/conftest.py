import subprocess

import pytest


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    """Unit tests exercise the pure core: any attempt to start a process fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unit test tried to start a process: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
