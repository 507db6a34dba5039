"""A small seeded sample of bench/bench_fleet.py: a dozen instances, each with its own configuration,
state directory and account database copy, reading the publisher's signed snapshot from the local S3.
Every instance's plan creates each new person (the simulation stops otherwise); the Identity Store is
read once per change whatever the fleet; an idle hour costs each instance only its periodic
conditional GETs; and Run Command's rate control decides the latency."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path


pytest_plugins = ["tests.endpoint.fixtures"]

REPO = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_fleet", REPO / "bench/bench_fleet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _bench()


def test_run_command_rate_control_is_a_sliding_window():
    model = bench.Model(max_concurrency="2", max_delay=0, run_command_dispatch=(1.0, 1.0))
    ends = bench.fan_out(100.0, [10.0, 10.0, 10.0, 10.0, 10.0], model, random.Random(3))
    assert sorted(ends) == [111.0, 111.0, 122.0, 122.0, 133.0]
    assert bench.Model(max_concurrency="10%").concurrency(500) == 50
    assert bench.Model(max_concurrency="10%").concurrency(5) == 1


def test_a_seeded_fleet(identitystore_endpoint, tmp_path):
    agents, changes = 12, 2
    result = bench.simulate(identitystore_endpoint, agents=agents, users=30, changes=changes, seed=7,
                            workdir=str(tmp_path), process_start=0.5, settings=[("100%", 10), ("10%", 30)])
    # one listing per change (ListUsers, ListGroups, ListGroupMemberships for each of the 2 groups),
    # counted over the publisher's read and every instance's sync
    assert result["identitystore_calls_per_change"] == [4] * changes
    # each change: one full GET per instance (Run Command's --once); then the service's next read
    assert result["s3_requests_during_changes"] == {"GetObject 200": agents * changes + agents}
    idle = result["s3_requests_idle_hour"]
    assert set(idle) == {"GetObject 304"} and idle["GetObject 304"] == result["periodic_syncs_idle_hour"]
    assert 3.0 <= result["s3_requests_per_instance_hour"] <= 4.0  # 3600 s / (900 s + up to 120 s)
    assert result["publisher_idle_hour"] == {"runs": 4, "written": 0, "identitystore_calls": 4 * 4}

    wide, narrow = result["latency_seconds"]
    assert (wide["concurrency"], narrow["concurrency"]) == (agents, 2)
    # every leg of the model at its bound, the sync's measured time, and at most a 10 s pause
    bound = 20 + 3 + 0.5 + result["publish_seconds"]["median"] * 3 + 5 + 5 + 3 + 10 + result["instance_sync_seconds"]["p99"]
    assert wide["p99"] <= min(60, bound)
    assert narrow["p99"] > wide["p99"] + 30  # two at a time: the fleet waits in line
