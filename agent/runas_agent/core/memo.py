"""The answer of a sync that found nothing to do, remembered (pure).

A plan is a function of the configuration, the directory, the observation of the host and --force
(core/sync.py). When a sync's plan has nothing to do (no action, no refusal, both ledgers as
observed), it is kept with the fingerprint of those inputs and of the agent's own code
(core/fingerprint.py); the next sync whose inputs have the same fingerprint takes it instead of
planning again. Any change anywhere (one line of /etc/passwd, an entry of the home base, a process
of a managed UID, one byte of the directory or the configuration) changes the fingerprint, and the
plan is made afresh. What is kept is only what such a plan says: its skips, its warnings and how
many managed accounts are active.
"""

from __future__ import annotations

from typing import Any

from runas_agent.core.desired import Skip
from runas_agent.core.fingerprint import fingerprint
from runas_agent.core.observed import Observation
from runas_agent.core.sync import SyncPlan
from runas_agent.directory import Directory

VERSION = 1


def key(code: str, cfg: Any, directory: Directory, observation: Observation, force: bool) -> str | None:
    """The fingerprint of a plan's inputs; None when one of them cannot be fingerprinted (the plan
    is then always made). The directory counts by the digest of its document and by its problems:
    a read whose malformed records were replaced by earlier ones (sources/admission.py) has the
    document of a read without them, but its plan still reports them."""
    try:
        return fingerprint(VERSION, code, cfg, directory.digest(), directory.problems, observation, force)
    except TypeError:
        return None


def remember(memo_key: str, result: SyncPlan, observation: Observation) -> dict[str, Any] | None:
    """What to keep of `result` (a document for the state directory), or None when it is not a
    plan with nothing to do."""
    if result.actions or result.refusals or result.ledger != observation.ledger \
            or result.sudo_ledger != observation.sudo_ledger:
        return None
    return {"version": VERSION, "key": memo_key, "managed_active": result.managed_active,
            "skips": [[s.identity, s.name, s.reason] for s in result.skips], "warnings": list(result.warnings)}


def recall(data: Any, memo_key: str, observation: Observation) -> SyncPlan | None:
    """The plan `data` remembers for `memo_key`, or None when it remembers another (or is not a
    memo: a damaged one is only a reason to plan again)."""
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("key") != memo_key:
        return None
    skips, warnings, active = data.get("skips"), data.get("warnings"), data.get("managed_active")
    if not isinstance(skips, list) or not isinstance(warnings, list) or type(active) is not int:
        return None
    if not all(isinstance(w, str) for w in warnings) or not all(_skip_shape(s) for s in skips):
        return None
    return SyncPlan(skips=tuple(Skip(s[0], s[1], s[2]) for s in skips), warnings=tuple(warnings),
                    ledger=observation.ledger, managed_active=active, sudo_ledger=observation.sudo_ledger)


def _skip_shape(item: Any) -> bool:
    return (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
            and (item[1] is None or isinstance(item[1], str)) and isinstance(item[2], str))
