"""The source types are listed in one order (docs/config.md, check-config --explain, doctor's
probes), whichever of their modules a process happened to import first."""

from __future__ import annotations

from runas_agent import sources


def test_the_order_does_not_follow_the_order_of_imports(monkeypatch):
    first = list(sources.types())
    assert first == ["identitystore", "s3", "file"]
    monkeypatch.setattr(sources, "_TYPES", dict(reversed(list(sources._TYPES.items()))))
    assert list(sources.types()) == first
