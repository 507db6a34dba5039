"""A seeded sample of random interleavings of the SSM agent's session lifecycles with the watcher's
looks (tests/unit/sessions_lifecycles.py): one start and one end per session, never `root` for a Run As
session. bench/campaign_sessions.py runs the long campaign."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from tests.unit.sessions_lifecycles import run


@settings(max_examples=150, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_every_interleaving_gives_one_start_and_one_end_and_never_root(data):
    run(data)
