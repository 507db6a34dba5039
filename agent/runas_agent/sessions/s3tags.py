"""Tagging session logs in S3 with the person behind them (host side, opt-in).

The SSM agent's session worker uploads `<prefix>/<sessionId>.log` when the session ends, before the
state file disappears when all goes well, later when the worker was asked to stop. The bucket and
prefix are the session's own (its state file's OutputS3BucketName and OutputS3KeyPrefix); the
configured `sessions.s3_tagging.bucket`/`prefix` serve sessions whose state file names none. A
background thread tries each object with growing pauses until it exists or the configured time has
passed. Every failure is logged; none stops the agent.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

from runas_agent.aws import client_error
from runas_agent.sessions.model import Session, log_object_key, merge_tags, s3_tags

log = logging.getLogger("runas_agent.sessions")

RESULTS_KEPT = 1000
FIRST_PAUSE = 2.0
MAX_PAUSE = 60.0
_MISSING = {"NoSuchKey", "404", "NotFound"}
_FATAL = {"AccessDenied", "NoSuchBucket", "InvalidTag", "MalformedXML", "InvalidBucketName"}


def destination(session: Session, settings: SimpleNamespace) -> tuple[str, str]:
    """(bucket, key) of a session's log: the state file's when it names a bucket, else the configured
    ones; ("", "") when neither names a bucket."""
    if session.s3_bucket:
        return session.s3_bucket, log_object_key(session.s3_prefix, session.session_id)
    if settings.bucket:
        return settings.bucket, log_object_key(settings.prefix or "", session.session_id)
    return "", ""


@dataclass(order=True)
class _Job:
    due: float
    session_id: str = field(compare=False)
    key: str = field(compare=False)
    tags: list = field(compare=False)
    deadline: float = field(compare=False)
    pause: float = field(compare=False, default=FIRST_PAUSE)
    attempts: int = field(compare=False, default=0)
    bucket: str = field(compare=False, default="")


class S3Tagger:
    def __init__(self, settings: SimpleNamespace, client_factory: Callable[[], Any] | None = None,
                 first_pause: float = FIRST_PAUSE, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._client_factory = client_factory or self._default_client
        self._client = None
        self._first_pause = first_pause
        self._clock = clock
        self._jobs: list[_Job] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: session id -> "tagged" | "gave up: ..." for the latest RESULTS_KEPT sessions (status, tests)
        self.results: OrderedDict[str, str] = OrderedDict()

    def _default_client(self):
        import boto3
        from botocore.config import Config

        s = self.settings
        return boto3.client("s3", region_name=s.region, endpoint_url=s.endpoint_url,
                            config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                          connect_timeout=5, read_timeout=20))

    def submit(self, session: Session) -> None:
        tags = s3_tags(session)
        if not tags:
            return
        bucket, key = destination(session, self.settings)
        if not bucket:
            self._result(session.session_id, "gave up: the session's state file names no S3 bucket and "
                                              "sessions.s3_tagging.bucket is not set")
            log.warning("cannot tag session %s's log: its state file names no S3 bucket and "
                        "sessions.s3_tagging.bucket is not set", session.session_id)
            return
        now = self._clock()
        job = _Job(now, session.session_id, key, tags, now + float(self.settings.max_wait_seconds),
                   self._first_pause, bucket=bucket)
        with self._cond:
            heapq.heappush(self._jobs, job)
            self._cond.notify()
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="runas-s3-tagging", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._jobs or self._jobs[0].due > self._clock()):
                    wait = (self._jobs[0].due - self._clock()) if self._jobs else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                job = heapq.heappop(self._jobs)
            again = self.try_once(job)
            if again:
                with self._cond:
                    heapq.heappush(self._jobs, again)

    def try_once(self, job: _Job) -> _Job | None:
        """One attempt. Returns the job rescheduled, or None when done or given up."""
        from botocore.exceptions import BotoCoreError, ClientError

        job.attempts += 1
        bucket = job.bucket or self.settings.bucket
        try:
            if self._client is None:
                self._client = self._client_factory()
            existing = self._client.get_object_tagging(Bucket=bucket, Key=job.key).get("TagSet", [])
            self._client.put_object_tagging(Bucket=bucket, Key=job.key,
                                            Tagging={"TagSet": merge_tags(existing, job.tags)})
        except ClientError as exc:
            code = client_error(exc)[0]
            if code in _FATAL:
                return self._give_up(job, f"{code}: {exc}")
            problem = "the object is not there yet" if code in _MISSING else f"{code}: {exc}"
            return self._later(job, problem)
        except (BotoCoreError, OSError) as exc:
            return self._later(job, str(exc))
        except Exception as exc:  # never fatal to the agent
            return self._give_up(job, f"unexpected error: {exc!r}")
        self._result(job.session_id, "tagged")
        log.info("tagged s3://%s/%s with the session's identity (attempt %d)", bucket, job.key, job.attempts)
        return None

    def _later(self, job: _Job, problem: str) -> _Job | None:
        now = self._clock()
        if now >= job.deadline:
            return self._give_up(job, f"{problem}; gave up after {job.attempts} attempts")
        log.debug("s3://%s/%s: %s; retrying in %.0fs", job.bucket or self.settings.bucket, job.key, problem, job.pause)
        job.due = min(now + job.pause, job.deadline)
        job.pause = min(job.pause * 2, MAX_PAUSE)
        return job

    def _result(self, session_id: str, result: str) -> None:
        self.results[session_id] = result
        while len(self.results) > RESULTS_KEPT:
            self.results.popitem(last=False)

    def _give_up(self, job: _Job, reason: str) -> None:
        self._result(job.session_id, f"gave up: {reason}")
        log.warning("cannot tag s3://%s/%s with the session's identity: %s", job.bucket or self.settings.bucket,
                    job.key, reason)
        return None
