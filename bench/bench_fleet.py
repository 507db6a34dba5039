"""Fleet simulation: one publisher and N instances (500 by default) on the local endpoint's Identity
Store, S3 and KMS signing stand-in, through the event-driven path docs/deploy-aws.md deploys:

    Identity Store change --(CloudTrail -> EventBridge rule)--> Run Command runas-agent-Publish on the
    publisher: `runas-agent publish --once` --(S3 "Object Created" -> each member bus -> rule)-->
    Automation runas-agent-FleetSync: runas-agent-Sync on every managed instance, MaxConcurrency at a
    time, each after a random pause of 0..MaxDelaySeconds: `runas-agent --once`

and the periodic safety net (every instance's service: a conditional GET every
daemon.interval_seconds + jitter; the publisher's FallbackSchedule).

What runs for real: the publisher (runas_agent.publisher.Publisher: the Identity Store listing, the
projection, HeadObject, KMS GetPublicKey and Sign, PutObject), and every instance's sync, each with
its own configuration, state directory and account database copy (passwd, group), reading the
signed snapshot from S3 and verifying it, then planning (the plan-only path: `sync(apply=False)`; the
accounts are not written, which is the part that does not scale to 500 copies here). A `--once` is a
new process, so the Run Command sync reads with a fresh S3 client (a full GET) and pays a process
start, measured once here (`python -m runas_agent --version`); the service keeps its source and reads
conditionally (If-None-Match: a 304 when unchanged). Each instance's plan must create the new person's
account, or the run fails.

What is modelled (not measurable here; uniform draws between the bounds given, seeded): the delays of
the AWS services between those steps: CloudTrail to the EventBridge rule (cross-account forwarding
included), Run Command reaching an SSM agent, S3's event reaching the member bus, the Automation
starting its aws:runCommand step. Run Command's rate control is simulated as it works: at most
MaxConcurrency invocations at once, the next target starting when one finishes. Real operations run
one after another; each instance's measured duration is placed on the simulated timeline (instances
are separate machines: one's work does not slow another's).

    python bench/bench_fleet.py [--agents 500] [--users 200] [--changes 3] [--seed 1]
                                [--settings 50%:10 10%:30 ...] [--json]

Reports the change-to-instance latency (p50, p99, max; goal: p99 <= 60 s), Identity Store calls per
change (counted by the endpoint over the whole change, the instances' syncs included), and S3 requests
per instance-hour without change.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "agent"))
sys.path.insert(0, str(REPO))

REGION = "eu-west-1"
OWNER = "123456789012"  # the local endpoint's account
BUCKET = "runas-agent-snapshots-bench"
URL = f"s3://{BUCKET}/runas/directory.json"
STORE = "d-1234567890"
HOUR = 3600.0


@dataclass(frozen=True)
class Model:
    """The modelled AWS delays (seconds, uniform between the bounds) and the deployment's settings."""

    trail_to_rule: tuple[float, float] = (5.0, 20.0)
    run_command_dispatch: tuple[float, float] = (1.0, 3.0)
    s3_event_to_member_bus: tuple[float, float] = (1.0, 5.0)
    automation_start: tuple[float, float] = (1.0, 5.0)
    #: runas-agent-FleetSync's MaxConcurrency ("10%" or a count) and runas-agent-Sync's MaxDelaySeconds
    max_concurrency: str = "50%"
    max_delay: int = 10
    #: the instances' daemon.interval_seconds and jitter_seconds (the safety net)
    interval: float = 900.0
    jitter: float = 120.0
    #: the publisher's FallbackSchedule, seconds
    fallback: float = 900.0

    def concurrency(self, targets: int) -> int:
        if self.max_concurrency.endswith("%"):
            return max(1, math.ceil(targets * int(self.max_concurrency[:-1]) / 100))
        return max(1, int(self.max_concurrency))


@dataclass
class S3Counter:
    """S3 requests the instances made, by operation and HTTP status."""

    requests: dict[str, int] = field(default_factory=dict)

    def __call__(self, http_response: Any = None, model: Any = None, **_: Any) -> None:
        key = f"{model.name} {http_response.status_code if http_response is not None else 'none'}"
        self.requests[key] = self.requests.get(key, 0) + 1

    def total(self) -> int:
        return sum(self.requests.values())


class Agent:
    """One simulated instance: its own configuration, state directory and account database copy."""

    def __init__(self, index: int, root: Path, endpoint_url: str, public_pem: str, session: Any, rng: random.Random,
                 model: Model):
        from runas_agent import config
        from runas_agent.sources.s3 import S3Source

        base = root / f"agent-{index:04d}"
        etc = base / "etc"
        etc.mkdir(parents=True)
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nssm-user:x:1001:1001::/home/ssm-user:/bin/sh\n")
        (etc / "group").write_text("root:x:0:\nssm-user:x:1001:\n")
        (etc / "os-release").write_text("ID=debian\nVERSION_ID=12\n")
        (base / "sudoers.d").mkdir()
        self.etc = str(etc)
        self.cfg = config.validate({
            "source": {"type": "s3", "url": URL, "bucket_region": REGION, "bucket_owner": OWNER,
                       "endpoint_url": endpoint_url, "signing_public_key": public_pem, "identity_store_id": STORE},
            "run_as": {"expression": "${path:userName}"},
            "sudo": {"sudoers_dir": str(base / "sudoers.d")},
            "state_dir": str(base / "state")})
        self.session = session
        #: the service's source: it keeps the last ETag between its syncs
        self.service_source = S3Source.from_settings(self.cfg.source, session=session)
        #: the service's next periodic sync (simulated time)
        self.next_periodic = rng.uniform(0, model.interval + model.jitter)

    def periodic_after(self, when: float, model: Model, rng: random.Random) -> float:
        """When this instance's service syncs next, at or after `when`."""
        while self.next_periodic < when:
            self.next_periodic += model.interval + rng.uniform(0, model.jitter)
        return self.next_periodic

    def sync(self, fresh: bool) -> tuple[float, Any]:
        """One plan-only sync, as `--once` (fresh: a new source, a full GET) or as the service's
        periodic sync (conditional). Returns (seconds, the plan's created account names)."""
        from runas_agent.sources.s3 import S3Source
        from runas_agent.sync import sync

        started = time.perf_counter()
        source = S3Source.from_settings(self.cfg.source, session=self.session) if fresh else self.service_source
        result = sync(self.cfg, apply=False, source=source, etc=self.etc)
        created = {a.name for a in result.plan.actions if a.verb == "create"}
        return time.perf_counter() - started, created


def _uniform(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds)


def fan_out(start: float, durations: list[float], model: Model, rng: random.Random) -> list[float]:
    """When each target's runas-agent-Sync ends: Run Command's sliding window of MaxConcurrency
    invocations from `start`, targets in a random order; each invocation is the dispatch delay, the
    random whole-second pause (0..MaxDelaySeconds), then the sync (`durations[i]`)."""
    order = list(range(len(durations)))
    rng.shuffle(order)
    slots = [start] * model.concurrency(len(durations))
    heapq.heapify(slots)
    ends = [0.0] * len(durations)
    for target in order:
        begin = heapq.heappop(slots)
        end = (begin + _uniform(rng, model.run_command_dispatch) + rng.randint(0, model.max_delay)
               + durations[target])
        ends[target] = end
        heapq.heappush(slots, end)
    return ends


@dataclass(frozen=True)
class Timeline:
    """One change: when it happened, when the snapshot was written and the fan-out started, what each
    instance's Run Command sync took, and when each instance's service syncs next on its own."""

    changed: float
    written: float
    fanout: float
    durations: list[float]
    periodic: list[float]
    process_start: float

    def latencies(self, model: Model, rng: random.Random) -> tuple[list[float], list[float]]:
        """(change -> account on each instance, fan-out start -> account) under `model`'s rate control:
        the Run Command sync, or the service's own periodic sync when it comes first."""
        ends = fan_out(self.fanout, self.durations, model, rng)
        total = [min(end, periodic + duration - self.process_start) - self.changed
                 for end, periodic, duration in zip(ends, self.periodic, self.durations)]
        return total, [end - self.fanout for end in ends]


def evaluate(timelines: list[Timeline], model: Model, seed: int) -> dict[str, Any]:
    """The latency figures of the measured changes under one rate control setting."""
    rng = random.Random(seed)
    total: list[float] = []
    fanout: list[float] = []
    for timeline in timelines:
        a, b = timeline.latencies(model, rng)
        total += a
        fanout += b
    return {"max_concurrency": model.max_concurrency, "max_delay": model.max_delay,
            "concurrency": model.concurrency(len(timelines[0].durations)),
            "p50": round(percentile(total, 50), 1), "p99": round(percentile(total, 99), 1), "max": round(max(total), 1),
            "fanout_p99": round(percentile(fanout, 99), 1)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def identitystore_calls(endpoint: Any) -> int:
    """The Identity Store calls the endpoint answered since its counters were reset (it counts other
    services' calls as `service:Operation`)."""
    return sum(n for operation, n in endpoint.calls().items() if ":" not in operation)


def process_start_seconds(repeat: int = 3) -> float:
    """What starting `runas-agent` costs before it does anything (median of `--version` runs)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "agent"))
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "runas_agent", "--version"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def start_publisher(endpoint: Any, users: int) -> tuple[Any, str]:
    """The bucket, the signing key, the first directory and the publisher (with its first snapshot
    written); returns (the publisher, the signing key's public PEM)."""
    import boto3

    from runas_agent import config
    from runas_agent.publisher import Publisher
    from runas_agent.sources.identitystore import IdentityStoreSource
    from runas_agent.sources.signature import PublicKey, sign_with_kms
    from tests.endpoint.directories import make_directory

    s3 = boto3.client("s3", endpoint_url=endpoint.url, region_name=REGION)
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    key = endpoint.signing_key("alias/runas-agent-bench-signing")
    kms = boto3.client("kms", endpoint_url=endpoint.url, region_name=REGION)
    public_pem = PublicKey.load(base64.b64encode(kms.get_public_key(KeyId=key)["PublicKey"]).decode()).pem()
    endpoint.seed(make_directory(users, users_per_group=20))
    cfg = config.validate({
        "source": {"type": "identitystore", "region": REGION, "identity_store_id": STORE, "endpoint_url": endpoint.url},
        "run_as": {"expression": "${path:userName}"}, "publisher": {"url": URL, "signing_key": key}})
    publisher = Publisher(cfg, source=IdentityStoreSource.from_settings(cfg.source), s3=s3,
                          signer=lambda document: sign_with_kms(document, kms, key))
    publisher.publish()  # the snapshot the fleet starts from
    return publisher, public_pem


class Run:
    """One simulation: the publisher, the fleet, and what was measured."""

    def __init__(self, endpoint: Any, publisher: Any, fleet: list[Agent], users: int, model: Model,
                 rng: random.Random, process_start: float, counter: S3Counter):
        self.endpoint, self.publisher, self.fleet, self.users = endpoint, publisher, fleet, users
        self.model, self.rng, self.process_start, self.counter = model, rng, process_start, counter
        self.timelines: list[Timeline] = []
        self.calls_per_change: list[int] = []
        self.publish_seconds: list[float] = []
        self.sync_seconds: list[float] = []

    def change(self, index: int) -> None:
        """A new person in the directory an hour after the last change; the publisher and every
        instance run for real, the AWS legs between them are drawn."""
        from tests.endpoint.directories import make_directory

        model, rng = self.model, self.rng
        changed = HOUR * (index + 1)
        name = f"user{self.users + index:05d}"
        self.endpoint.reset_calls()
        self.endpoint.seed(make_directory(self.users + index + 1, users_per_group=20))
        started = changed + _uniform(rng, model.trail_to_rule) + _uniform(rng, model.run_command_dispatch)
        result = self.publisher.publish()
        if result.result != "published":
            raise SystemExit(f"change {index}: the publisher found nothing to publish")
        self.publish_seconds.append(result.seconds)
        written = started + self.process_start + result.seconds
        fanout = written + _uniform(rng, model.s3_event_to_member_bus) + _uniform(rng, model.automation_start)
        durations = []
        for agent in self.fleet:
            seconds, created = agent.sync(fresh=True)
            if name not in created:
                raise SystemExit(f"change {index}: an instance's plan does not create {name}")
            durations.append(self.process_start + seconds)
        self.sync_seconds += durations
        periodic = [agent.periodic_after(written, model, rng) for agent in self.fleet]
        self.timelines.append(Timeline(changed, written, fanout, durations, periodic, self.process_start))
        self.calls_per_change.append(identitystore_calls(self.endpoint))

    def idle_hour(self) -> dict[str, Any]:
        """An hour without change: every instance's service reads on its schedule, conditionally (the
        read alone: planning makes no S3 request); the publisher runs on its FallbackSchedule."""
        self.counter.requests.clear()
        periodic = 0
        for agent in self.fleet:
            at = self.rng.uniform(0, self.model.interval + self.model.jitter)
            while at < HOUR:
                agent.service_source.fetch()
                periodic += 1
                at += self.model.interval + self.rng.uniform(0, self.model.jitter)
        idle = dict(self.counter.requests)
        self.endpoint.reset_calls()
        runs = [self.publisher.publish().result for _ in range(int(HOUR // self.model.fallback))]
        return {"s3_requests_idle_hour": idle,
                "s3_requests_per_instance_hour": round(sum(idle.values()) / len(self.fleet), 2),
                "periodic_syncs_idle_hour": periodic,
                "publisher_idle_hour": {"runs": len(runs), "written": runs.count("published"),
                                        "identitystore_calls": identitystore_calls(self.endpoint)}}


def simulate(endpoint: Any, agents: int = 500, users: int = 200, changes: int = 3, seed: int = 1,
             model: Model = Model(), workdir: Optional[str] = None, process_start: Optional[float] = None,
             settings: Optional[list[tuple[str, int]]] = None) -> dict[str, Any]:
    """Run the simulation against a started tests.endpoint Endpoint (its directory is replaced). The
    latencies are given for each (MaxConcurrency, MaxDelaySeconds) of `settings` (default: the
    model's), over the same measured changes."""
    import boto3

    rng = random.Random(seed)
    publisher, public_pem = start_publisher(endpoint, users)
    start_cost = process_start_seconds() if process_start is None else process_start
    session = boto3.session.Session(region_name=REGION)
    counter = S3Counter()
    session.events.register("after-call.s3", counter)
    with tempfile.TemporaryDirectory(dir=workdir) as root:
        fleet = [Agent(i, Path(root), endpoint.url, public_pem, session, rng, model) for i in range(agents)]
        for agent in fleet:  # every service has read the snapshot once: its next read is conditional
            agent.sync(fresh=False)
        counter.requests.clear()
        run = Run(endpoint, publisher, fleet, users, model, rng, start_cost, counter)
        for index in range(changes):
            run.change(index)
        for agent in fleet:  # the service's next periodic read after the last change: a full GET
            agent.sync(fresh=False)
        change_requests = dict(counter.requests)
        idle = run.idle_hour()
    return {
        "agents": agents, "users": users, "changes": changes, "seed": seed, "model": asdict(model),
        "process_start_seconds": round(start_cost, 3),
        "latency_seconds": [evaluate(run.timelines, replace(model, max_concurrency=c, max_delay=d), seed)
                            for c, d in settings or [(model.max_concurrency, model.max_delay)]],
        "publish_seconds": {"median": round(statistics.median(run.publish_seconds), 3)},
        "instance_sync_seconds": {"median": round(statistics.median(run.sync_seconds), 3),
                                  "p99": round(percentile(run.sync_seconds, 99), 3)},
        "identitystore_calls_per_change": run.calls_per_change,
        "s3_requests_during_changes": change_requests,
        **idle,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--changes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=["50%:10", "10%:30", "10%:10", "25%:10", "50%:20", "100%:10",
                                                           "100%:30"],
                        metavar="MAXCONCURRENCY:MAXDELAY",
                        help="runas-agent-FleetSync's MaxConcurrency and runas-agent-Sync's MaxDelaySeconds to report")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_KMS"):
        os.environ.pop(name, None)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIDBENCHMARK")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    from tests.endpoint.server import Endpoint

    settings = [(c, int(d)) for c, d in (item.split(":") for item in args.settings)]
    with Endpoint(region=REGION, strict=False) as endpoint:
        result = simulate(endpoint, args.agents, args.users, args.changes, args.seed, settings=settings)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['agents']} instances, {result['users']} users, {result['changes']} changes (seed {result['seed']})")
    print(f"{'MaxConcurrency':>14} {'MaxDelay':>8} {'at once':>7} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'fan-out p99 s':>13}")
    for row in result["latency_seconds"]:
        print(f"{row['max_concurrency']:>14} {row['max_delay']:>8} {row['concurrency']:>7} {row['p50']:>7} "
              f"{row['p99']:>7} {row['max']:>7} {row['fanout_p99']:>13}")
    print(f"publish (read, project, HeadObject, sign, PutObject): median {result['publish_seconds']['median']} s; "
          f"instance sync (process start {result['process_start_seconds']} s, GET, verify, plan): median "
          f"{result['instance_sync_seconds']['median']} s, p99 {result['instance_sync_seconds']['p99']} s")
    print(f"Identity Store calls per change (publisher and all instances): {result['identitystore_calls_per_change']}")
    print(f"S3 requests of the instances during the changes: {result['s3_requests_during_changes']}")
    print(f"S3 requests per instance-hour without change: {result['s3_requests_per_instance_hour']} "
          f"({result['s3_requests_idle_hour']}, {result['periodic_syncs_idle_hour']} periodic syncs); "
          f"publisher per hour: {result['publisher_idle_hour']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
