"""Interrupted syncs converge: a real `runas-agent --once` SIGKILLed inside an isolated host at a
seeded sample of steps (each account database's write, a home's creation, the ledger and snapshot
writes) and random moments, during a first sync, a disable, a re-enable and a rename; then plain
syncs. The host ends exactly as an uninterrupted run leaves it (accounts, groups, memberships, shadow states,
homes with their skeleton, the ledger), and `pwck -r`/`grpck -r` say what they say of that run.
Every step and many more moments: bench/crash_sync.py."""

from __future__ import annotations

import random

import pytest

from tests.hosts import sync_crash

pytestmark = pytest.mark.host
SEED = 13


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tests.conftest import _need_root_tools

    _need_root_tools()
    return sync_crash.reference(tmp_path_factory.mktemp("crash-ref") / "host")


def sample() -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    # one database write per phase, a home, a state file, one random moment
    return [(phase, rng.choice(sync_crash.ETC_STEPS)) for phase in sync_crash.PHASES] + [
        ("create", rng.choice(["home", *sync_crash.STATE_STEPS])), (rng.choice(sync_crash.PHASES), "t=random")]


@pytest.mark.parametrize("phase,step", sample())
def test_a_killed_sync_converges_to_the_uninterrupted_result(reference, tmp_path, phase, step):
    if step == "t=random":
        step = f"t={random.Random(f'{SEED}-{phase}').uniform(0, reference.seconds[phase]):.3f}"
    result = sync_crash.trial(tmp_path / "host", reference, phase, step)
    if not step.startswith("t="):
        assert result.ended == "killed", f"{phase} at {step}: {result.ended}"
    assert result.converged, f"{phase} killed at {step} ({result.ended}), {result.syncs} syncs after:\n{result.problems}"
