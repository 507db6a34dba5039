"""Admission: what a complete, authentic read must still prove before the sync plans with it, and what
it may not do to the accounts the agent knows. Pure, apart from `last_applied` (reads the snapshot the
last applied sync left in the state directory).

In the order the sync asks:
1. `dropped_fields`: a read in which no user carries UserStatus, or, when the expression reads
   `enterprise.*`, no user carries the enterprise extension, is refused (UntrustedError): the Identity
   Store always returns UserStatus, so its absence everywhere means something between the agent and
   the Identity Store dropped it (an SDK that does not know the field, a proxy, an endpoint that is
   not the Identity Store, or a publisher that ran behind one of those). Disabled people would look
   enabled, or every Run As value would be empty.
2. `succession`: against the last applied snapshot, a directory generated before it (a replayed or
   restored snapshot: no rollback) or of another Identity Store is refused like an unsafe plan (exit 4,
   `--force` overrides).
3. `carry`: a person whose record is malformed is neither present nor gone. A malformed record that
   names its UserId is replaced by that person's record in the last applied snapshot, so their account,
   local groups and sudo rules stay exactly as they were; one that names none could be anyone's, so
   every person of the last snapshot missing from this read is carried over too (the read may not
   shrink the directory while it holds such a record). The records are still reported (skips).
4. `Admission.judge` (after planning): a plan that would still disable an account of such a person
   (nothing to carry over: no snapshot, e.g. after `runas-agent image`), or, while a record names no
   UserId, of anyone missing from the read, is refused.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Optional, TypeVar

from runas_agent.core.expression import parse
from runas_agent.core.ledger import Ledger
from runas_agent.core.plan import DisableAccount, Plan
from runas_agent.directory import ENTERPRISE_EXTENSION, Directory, User, format_timestamp, parse_document, parse_user
from runas_agent.errors import AgentError, UntrustedError
from runas_agent.settings import Config
from runas_agent.sources.identitystore import MIN_BOTOCORE
from runas_agent.sources.signature import unsigned

P = TypeVar("P", bound=Plan)

_DROPPERS = (f"an SDK older than botocore {MIN_BOTOCORE}, a proxy, or an endpoint that is not the Identity Store "
             "(source.endpoint_url, AWS_ENDPOINT_URL), or a publisher that read through one of those")


@dataclass(frozen=True)
class Admission:
    """A read admitted for planning: the directory to plan with, and what the plan must carry."""

    directory: Directory
    #: refusals of the directory as a whole (rollback, change of store)
    refusals: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: UserIds whose records are malformed and could not be carried over: not to be treated as gone
    held: frozenset[str] = frozenset()
    #: whether the read holds a user record that names no UserId: then nobody missing from it is gone
    untied: bool = False

    def judge(self, plan: P, ledger: Ledger, force: bool) -> P:
        """The plan with the admission's refusals (and those of disables it cannot allow) added."""
        refusals = tuple(self.refusals) + tuple(self._held_disables(plan, ledger))
        warnings = plan.warnings + self.warnings
        if force:
            return replace(plan, warnings=warnings + tuple(f"--force overrides: {r}" for r in refusals))
        return replace(plan, warnings=warnings, refusals=plan.refusals + refusals)

    def _held_disables(self, plan: Plan, ledger: Ledger) -> Iterable[str]:
        present = {u.user_id for u in self.directory.users}
        for action in plan.of(DisableAccount):
            owned = ledger.accounts.get(action.name)
            identities = set(owned.identities) if owned else set()
            held = sorted((identities & self.held) | ((identities - present) if self.untied else set()))
            if held:
                yield (f"the plan would disable {action.name}, but the record of {', '.join(held)} is malformed or "
                       "missing beside a record that names no UserId, and there is no earlier record to keep it as it was")


def admit(cfg: Config, directory: Directory, snapshot_path: str, origin: str) -> Admission:
    """The read `directory` (from `origin`) checked against the configuration and the last applied
    snapshot, held people carried over. Raises UntrustedError for a read that dropped fields."""
    problem = dropped_fields(directory, cfg.run_as.expression, origin)
    if problem:
        raise UntrustedError(problem)
    previous, note = last_applied(snapshot_path, directory)
    carried, carry_notes = carry(directory, previous)
    held = directory.held_user_ids - {u.user_id for u in carried.users}
    return Admission(carried, tuple(succession(previous, directory)), tuple(note + carry_notes), frozenset(held),
                     directory.untied > 0)


def dropped_fields(directory: Directory, expression: str, origin: str) -> Optional[str]:
    """Why the read cannot be used because it lacks what the Identity Store always returns, or None."""
    records = [r for r in directory.document.get("Users") or [] if isinstance(r, Mapping)]
    if not records:
        return None
    if not any("UserStatus" in r for r in records):
        return (f"{origin}: none of the {len(records)} users carries UserStatus, which the Identity Store always "
                f"returns: the read dropped it, and disabled people would look enabled. Causes: {_DROPPERS}. "
                "Nothing was changed")
    return _enterprise_dropped(records, expression, origin)


def _enterprise_dropped(records: list[Mapping[str, Any]], expression: str, origin: str) -> Optional[str]:
    wanted = sorted(p for p in parse(expression).paths if p.startswith("enterprise."))
    if not wanted or any(_has_enterprise(r) for r in records):
        return None
    return (f"{origin}: run_as.expression reads {', '.join(wanted)}, but none of the {len(records)} users carries "
            f"the enterprise extension ({ENTERPRISE_EXTENSION}): either nobody has those attributes in Identity "
            f"Center, or the read dropped them ({_DROPPERS}). Every Run As value would be empty. Nothing was changed")


def _has_enterprise(record: Mapping[str, Any]) -> bool:
    extensions = record.get("Extensions")
    return isinstance(extensions, Mapping) and isinstance(extensions.get(ENTERPRISE_EXTENSION), Mapping)


def last_applied(path: str, current: Optional[Directory] = None) -> tuple[Optional[Directory], list[str]]:
    """The directory the last applied sync saved (None when there is none), and a warning when it
    cannot be read: then this sync cannot check for a rollback or a change of store. A snapshot
    holding exactly `current`'s canonical bytes (nothing changed since) is `current`, not parsed again."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None, []
    except OSError as exc:
        return None, [f"the last applied snapshot {path} cannot be read ({exc.strerror}): "
                      "no rollback or change of store can be noticed in this sync"]
    if current is not None and data == current.canonical_bytes():
        return current, []
    try:
        return parse_document(json.loads(data), path), []
    except (ValueError, AgentError) as exc:
        return None, [f"the last applied snapshot {path} is damaged ({exc}): "
                      "no rollback or change of store can be noticed in this sync"]


def succession(previous: Optional[Directory], current: Directory) -> list[str]:
    """Why `current` may not follow the last applied directory (without --force)."""
    if previous is None:
        return []
    out = []
    if _other_store(previous, current):
        out.append(f"the directory is of Identity Store {current.identity_store_id}, the last one applied was of "
                   f"{previous.identity_store_id}: a change of store changes every person's UserId (run with --force "
                   "when the store was replaced on purpose)")
    if previous.generated_at and current.generated_at and current.generated_at < previous.generated_at:
        out.append(f"the snapshot was generated at {format_timestamp(current.generated_at)}, before the last one applied "
                   f"({format_timestamp(previous.generated_at)}): an older snapshot (replayed, or restored from a "
                   "backup) is never applied over a newer one")
    return out


def _other_store(previous: Directory, current: Directory) -> bool:
    return bool(previous.identity_store_id and current.identity_store_id
                and previous.identity_store_id != current.identity_store_id)


def _carried(current: Directory, previous: Optional[Directory]) -> list[User]:
    """The users of `previous` to carry into `current`: held ones, and with an untied record every
    one missing; never one whose name someone in `current` has now, nor from another store."""
    if previous is None or _other_store(previous, current):
        return []
    wanted = set(current.held_user_ids) | ({u.user_id for u in previous.users} if current.untied else set())
    taken = {u.user_id for u in current.users} | {u.user_name for u in current.users}
    return [u for u in previous.users if u.user_id in wanted and not {u.user_id, u.user_name} & taken]


def carry(current: Directory, previous: Optional[Directory]) -> tuple[Directory, list[str]]:
    """`current` with held people's records taken from `previous` (see the module docstring)."""
    carried = _carried(current, previous)
    if not carried:
        return current, []
    document = unsigned(current.document)
    records = [r for i, r in enumerate(current.document.get("Users") or []) if isinstance(parse_user(r, i), User)]
    document["Users"] = records + [dict(u.record) for u in carried]
    merged = parse_document(document, "the directory with earlier records kept")
    why = ("their records in this read are malformed" if not current.untied else
           f"this read holds {current.untied} user record(s) that name no UserId")
    note = f"kept as in the last applied snapshot: {', '.join(sorted(u.user_name for u in carried))} ({why})"
    return dataclasses.replace(merged, problems=current.problems), [note]
