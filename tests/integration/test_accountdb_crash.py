"""The account engine killed (SIGKILL) at every step of its write and of its homes' creation, and
at seeded random moments, inside isolated hosts: right after the kill the databases are consistent
(every line well-formed, no name or ID twice, every user with its group; `pwck -r`/`grpck -r`
complain only about names the interrupted batch was changing), `useradd` works on them, and one
plain re-run reaches exactly the state of an uninterrupted run (databases, homes with their
skeleton, pwck/grpck clean). bench/crash_engine.py runs the same trials at length."""

from __future__ import annotations

import random

import pytest

from tests.hosts.engine_crash import DB_STEPS, Campaign

pytestmark = pytest.mark.host
SEED = 1312
RANDOM_TRIALS = 8


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    from tests.conftest import _need_root_tools
    _need_root_tools()
    return Campaign(tmp_path_factory.mktemp("crash"), new=6)


def test_every_step_is_covered(campaign):
    assert len(campaign.steps()) == len(DB_STEPS) + 3 * 4 + 1


@pytest.mark.parametrize("index", range(len(DB_STEPS) + 3 * 4 + 1))
def test_a_kill_at_each_step_is_consistent_and_finished_by_a_rerun(campaign, index):
    label = campaign.steps()[index]
    trial = campaign.at_step(label)
    assert trial.converged, (label, trial.problems)


def test_kills_at_seeded_random_moments_are_consistent_and_finished_by_a_rerun(campaign):
    rng = random.Random(SEED)
    trials = []
    while sum(t.killed == -9 for t in trials) < RANDOM_TRIALS and len(trials) < 3 * RANDOM_TRIALS:
        trials.append(campaign.at_random(rng))  # a run that ended before its kill narrows later draws
    failed = [(t.point, t.problems) for t in trials if not t.converged]
    assert not failed
    # a kill that came after the run finished is a trial too; most must have interrupted it
    assert sum(t.killed == -9 for t in trials) >= RANDOM_TRIALS
    assert any(t.mid_work for t in trials)  # some kills landed with the work half done
