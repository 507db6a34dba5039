"""`doctor`, the sync's own links: the configuration, the identities the directory maps to, the
accounts runas-agent owns and would change, and the last sync the service journaled.

The checks read (shell); the verdicts are pure functions of what they read. The directory is read and
planned exactly as `runas-agent plan` would, with the same functions (one implementation of every rule).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Tuple

from runas_agent import config, events
from runas_agent.core.allowed import AllowedNames
from runas_agent.core.desired import Skip, compute
from runas_agent.core.ledger import Ledger
from runas_agent.core.observed import HostState
from runas_agent.core.plan import DisableAccount, Plan, owned_state
from runas_agent.doctor.check import Check, Facts, Verdict, failed, ok, plural, warning
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import (AS_ROOT, CONFIG, DIRECTORY, EXPRESSION, HOME_REGION, LEDGER, SETTINGS,
                                      SOURCE_ANSWERS, DirectoryRead, source_is)
from runas_agent.errors import AgentError, ConfigError, UntrustedError
from runas_agent.host.accounts import read_host
from runas_agent.host.files import StateDir
from runas_agent.host.observe import observe
from runas_agent.settings import Config, desired_settings
from runas_agent.sources import source_type, types as source_types
from runas_agent.sources.admission import admit
from runas_agent.status import SyncStatus
from runas_agent.sync import compute_plan, name_rules

#: A last sync older than this many scheduled intervals (interval + jitter) means the loop stopped.
STALE_INTERVALS = 3
#: The counts of a sync record, in the order they are quoted.
COUNT_FIELDS = ("SYNC_CREATED", "SYNC_ENABLED", "SYNC_DISABLED", "SYNC_SKIPPED", "SYNC_FAILED")
#: Why the journal may look empty to a user other than root.
NOT_ROOT_NOTE = " (as a user outside the systemd-journal group, the journal may hide it: run as root)"


# --- config ---------------------------------------------------------------------------------------

class ConfigLink(Check):
    name = "config"
    provides = (CONFIG, SETTINGS, HOME_REGION, *(source_is(kind) for kind in sorted(source_types())))

    def run(self, facts: Facts, env: Env) -> Verdict:
        try:
            cfg = config.load(env.config_path)
        except ConfigError as exc:
            return failed(f"{env.config_path} is not a valid configuration",
                          "fix each key listed, then check again with `runas-agent check-config`",
                          exc.problems).giving(SETTINGS, config.defaults())
        return config_verdict(env.config_path, cfg)


def config_verdict(path: str, cfg: Config) -> Verdict:
    """A valid configuration, and the facts it settles: which source type applies, the home region."""
    kind = cfg.source.type
    verdict = ok(f"{path} is valid (source {kind}, run_as.expression {cfg.run_as.expression})")
    verdict = verdict.giving(CONFIG, cfg).giving(SETTINGS, cfg).giving(source_is(kind), source_type(kind))
    if cfg.source.region:
        verdict = verdict.giving(HOME_REGION, cfg.source.region)
    origin = source_type(kind).origin(cfg.source)
    for other in source_types():
        if other != kind:
            verdict = verdict.withholding(source_is(other), f"source.type is {kind}", origin=origin)
    return verdict


# --- identities -----------------------------------------------------------------------------------

class Identities(Check):
    name = "identities"
    needs = (CONFIG, EXPRESSION, SOURCE_ANSWERS)
    provides = (DIRECTORY,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg, resolved = facts[CONFIG], facts[EXPRESSION]
        kind = source_type(cfg.source.type)
        session = env.session(cfg) if kind.needs_aws_credentials else None
        try:
            source = kind.from_settings(cfg.source, session=session)
            fetched = source.fetch()
            assert fetched is not None  # no known version was given
            admitted = admit(resolved, fetched.directory, StateDir(resolved.state_dir).snapshot_path, source.describe())
        except UntrustedError as exc:
            return failed(f"the directory cannot be believed: {exc}",
                          "the sync refuses it too and changes nothing until this is fixed")
        except AgentError as exc:
            return failed(f"the directory could not be read completely: {exc}",
                          "the sync cannot read it either and changes nothing until this is fixed")
        rules = name_rules(resolved, env.probe.etc)
        desired = compute(admitted.directory, desired_settings(resolved, rules))
        read = DirectoryRead(resolved, admitted.directory, desired, admitted)
        return identities_verdict(read, rules.family).giving(DIRECTORY, read)


def identities_verdict(read: DirectoryRead, family: str) -> Verdict:
    """Whether every enabled identity gets an account, from the directory and what it maps to."""
    users, desired = read.directory.users, read.desired
    enabled = sum(1 for u in users if u.enabled)
    summary = (f"{enabled} enabled of {plural(len(users), 'user')} map to {plural(len(desired.accounts), 'account')} "
               f"with {read.config.run_as.expression} ({family} name rules)")
    if desired.missing_scope_groups:
        return failed(f"scope.groups names {', '.join(desired.missing_scope_groups)}, which the directory does not "
                      "have: the sync refuses to run", "fix scope.groups (DisplayName or GroupId of an Identity Store group)")
    if desired.skips:
        return warning(f"{summary}; {len(desired.skips)} cannot get an account",
                       "these people cannot start a Run As session: change the attribute in Identity Center to a value "
                       "that is a legal session tag and account name, or give them another way in",
                       [str(s) for s in desired.skips])
    return ok(summary)


# --- accounts -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Owned:
    """The accounts the ledger names, in words, and those changed or removed by hand."""

    text: str
    changed: Tuple[str, ...]


class Accounts(Check):
    name = "accounts"
    needs = (CONFIG,)
    uses = (DIRECTORY,)
    provides = (LEDGER,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        state = StateDir(facts[CONFIG].state_dir)
        try:
            ledger = state.load_ledger()
        except AgentError as exc:
            return failed(str(exc), f"restore {state.ledger_path} from a backup; the sync will not run without it")
        except OSError as exc:
            return warning(f"cannot read {state.ledger_path}: {exc.strerror}", "run the doctor as root")
        owned = owned_accounts(ledger, read_host(env.probe.etc))
        read = facts.get(DIRECTORY)
        if read is None:
            return accounts_verdict(owned, None, None).giving(LEDGER, ledger)
        try:
            plan = next_plan(read, env.probe.etc)
            held = departed_but_held(plan, ledger, read_host(env.probe.etc), env.probe.processes)
            return accounts_verdict(owned, read, plan, held).giving(LEDGER, ledger)
        except AgentError as exc:
            return failed(f"{owned.text}; the host cannot be observed: {exc}",
                          "the sync cannot observe it either and changes nothing until this is fixed").giving(LEDGER, ledger)


def next_plan(read: DirectoryRead, etc: str) -> Plan:
    """The plan the next sync would make, judged by the admission as the sync judges it (no --force)."""
    observation = observe(read.config, etc)
    plan = compute_plan(read.config, read.directory, observation)[1]
    return read.admission.judge(plan, observation.ledger, force=False)


def owned_accounts(ledger: Ledger, host: HostState) -> Owned:
    states: dict[str, int] = {}
    changed = []
    for name, owned in sorted(ledger.accounts.items()):
        kind, user = owned_state(owned, host)
        states[kind] = states.get(kind, 0) + 1
        if kind == "changed":
            assert user is not None  # owned_state names the account that holds the UID
            changed.append(f"{name}: changed by hand ({user.name} uid={user.uid}); left alone")
        elif kind == "missing":
            changed.append(f"{name}: removed from the host by hand")
    listed = ", ".join(f"{n} {k}" for k, n in sorted(states.items())) or "none yet"
    return Owned(f"runas-agent owns {plural(len(ledger.accounts), 'account')} ({listed})", tuple(changed))


def departed_but_held(plan: Plan, ledger: Ledger, host: HostState, processes: Callable[[], Iterable[Any]]) -> list[str]:
    """The accounts the plan disables (their people are gone or disabled) while processes still run
    as them: the SSM agent would start a session as such an account (`id NAME` works), and the park
    that stops it waits for them."""
    leaving = {a.uid: a for a in plan.of(DisableAccount)}
    out = []
    for uid, running in sorted(processes_of(set(leaving), processes).items()):
        action = leaving[uid]
        user = host.users.get(action.name)
        owned = ledger.accounts.get(action.name)
        who = (user.comment if user else "") or ", ".join(owned.identities if owned else ())
        more = f" and {len(running) - 5} more" if len(running) > 5 else ""
        out.append(f"{action.name} (uid {uid}; {who}) still resolves although {action.reason}: "
                   f"{', '.join(running[:5])}{more} run as it")
    return out


def processes_of(uids: set[int], processes: Callable[[], Iterable[Any]]) -> dict[int, list[str]]:
    """`pid 123 (sleep)` of each process running as one of `uids` (real or effective); the process
    table is read only when there are such UIDs."""
    holders: dict[int, list[str]] = {}
    if not uids:
        return holders
    for process in processes():
        info = getattr(process, "info", None) or {}
        ids = info.get("uids")
        for uid in {getattr(ids, "real", -1), getattr(ids, "effective", -1)} & uids:
            holders.setdefault(uid, []).append(f"pid {info.get('pid')} ({info.get('name') or '?'})")
    return holders


def accounts_verdict(owned: Owned, read: Optional[DirectoryRead], plan: Optional[Plan],
                     held: Sequence[str] = ()) -> Verdict:
    """Conflicts, changes and refusals the next sync would meet (unknown when the directory was not read)."""
    if read is None or plan is None:
        summary = f"{owned.text}; conflicts unknown (the directory was not read)"
        return warning(summary, "", owned.changed) if owned.changed else ok(summary, "", owned.changed)
    found = conflicts(read, plan)
    summary = (f"{owned.text}; {plural(len(found), 'conflict')}; "
               f"the next sync would make {plural(len(plan.actions), 'change')}")
    details = [f"conflict: {s}" for s in found] + list(owned.changed) + [f"warning: {w}" for w in plan.warnings]
    if held:
        return failed(f"{summary}; {plural(len(held), 'account')} of people who are gone still resolve, held by "
                      "running processes",
                      "end the processes named below (the person's sessions or jobs); the next sync then parks the "
                      "account, or run `runas-agent --once` now", list(held) + details)
    if plan.refusals:
        return failed(f"{summary}; the next sync will be refused",
                      "see why below; fix the directory or the safety settings, or run `runas-agent --once --force` "
                      "if the change is meant", details + [f"refused: {r}" for r in plan.refusals])
    if found or owned.changed:
        return warning(summary, "an account or group with a wanted name already exists and is not runas-agent's: "
                                "rename or remove it (the agent never takes one over), or change the person's Run As value",
                       details)
    return ok(summary, "", details)


def conflicts(read: DirectoryRead, plan: Plan) -> list[Skip]:
    """The identities the plan skips for a reason of the host's (not the directory's own skips, nor
    names outside accounts.allowed_names: the allowed-names check reports those)."""
    own = {(s.identity, s.name, s.reason) for s in read.desired.skips}
    allowed = AllowedNames.from_setting(read.config.accounts.allowed_names)
    return [s for s in plan.skips if isinstance(s, Skip) and (s.identity, s.name, s.reason) not in own
            and not (s.name and s.reason == allowed.problem(s.name))]


# --- the last sync --------------------------------------------------------------------------------

class LastSync(Check):
    name = "last-sync"
    needs = (SETTINGS,)
    uses = (AS_ROOT,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg = facts[SETTINGS]
        try:
            record = (env.probe.last_sync or read_last_sync)()
        except Exception as exc:  # a journal that cannot be opened is a finding, not a crash
            return no_sync_verdict(f"the journal could not be read ({type(exc).__name__}: {exc})",
                                   cfg.state_dir, _state_age(cfg, env))
        if record is None:
            problem = "no sync is recorded in the journal" + ("" if facts.get(AS_ROOT) else NOT_ROOT_NOTE)
            return no_sync_verdict(problem, cfg.state_dir, _state_age(cfg, env))
        return last_sync_verdict(record, env.probe.now(), stale_after(cfg))


def _state_age(cfg: Config, env: Env) -> Optional[float]:
    """Seconds since the ledger or the snapshot last changed, None when neither exists."""
    state = StateDir(cfg.state_dir)
    seen = [p for p in (state.ledger_path, state.snapshot_path) if os.path.exists(p)]
    return env.probe.now() - max(os.path.getmtime(p) for p in seen) if seen else None


def stale_after(cfg: Config) -> float:
    """Seconds after which the last sync means the loop stopped."""
    return STALE_INTERVALS * (cfg.daemon.interval_seconds + cfg.daemon.jitter_seconds)


def no_sync_verdict(problem: str, state_dir: str, state_age: Optional[float]) -> Verdict:
    note = f"; the state in {state_dir} last changed {ago(state_age)} ago" if state_age is not None else ""
    return warning(f"{problem}{note}",
                   "start the service (`systemctl enable --now runas-agent`) and look at `journalctl -u runas-agent`")


def last_sync_verdict(record: Mapping[str, Any], now: float, limit: float) -> Verdict:
    """The last sync record's result, and whether it is too old."""
    result = _status(record.get("SYNC_RESULT", ""))
    when = record.get("REALTIME")
    age = now - when if when else None
    text = sync_text(record, age)
    if result is SyncStatus.FAILED:
        return failed(text, "the accounts are left as they were; fix the cause named above "
                            "(this report's Identity Store checks usually show it)")
    if result is SyncStatus.REFUSED:
        return failed(text, "nothing changes until a person decides: fix the directory, or run "
                            "`runas-agent --once --force` if the change is meant")
    if age is not None and age > limit:
        return warning(f"{text}; that is longer than {STALE_INTERVALS} sync intervals",
                       "check that the service runs: `systemctl status runas-agent`")
    if result in (SyncStatus.PARTIAL, SyncStatus.BUSY):
        return warning(text, "see the identities and accounts checks for who was skipped, and "
                             "`journalctl -u runas-agent` for failed actions")
    return ok(text)


def _status(value: Any) -> Optional[SyncStatus]:
    """The SYNC_RESULT of a record as a status (None for a value this version does not know)."""
    try:
        return SyncStatus(str(value))
    except ValueError:
        return None


def sync_text(record: Mapping[str, Any], age: Optional[float]) -> str:
    """`last sync 5m ago: partial (2 created, 1 skipped): <error>`."""
    when = f"{ago(age)} ago" if age is not None else "at an unknown time"
    counts = ", ".join(f"{record[k]} {k[5:].lower()}" for k in COUNT_FIELDS if record.get(k) not in (None, ""))
    text = f"last sync {when}: {record.get('SYNC_RESULT', '')}" + (f" ({counts})" if counts else "")
    for key in ("SYNC_ERROR", "SYNC_REFUSALS"):
        if record.get(key):
            text += f": {record[key]}"
    return text


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _journal() -> Any:
    """systemd-python's journal module, or None where it is not installed."""
    try:
        return importlib.import_module("systemd.journal")
    except ImportError:
        return None


def read_last_sync(limit: int = 50) -> Optional[dict[str, Any]]:
    """The newest sync record the daemon wrote to the journal (abandoned syncs skipped), or None."""
    journal = _journal()
    if journal is None:
        return None
    reader = journal.Reader()
    try:
        reader.add_match(MESSAGE_ID=events.SYNC.hex)
        reader.add_disjunction()
        reader.add_match(MESSAGE_ID=events.SYNC_FAILED.hex)
        reader.seek_tail()
        for _ in range(limit):
            entry = reader.get_previous()
            if not entry:
                return None
            if entry.get("SYNC_RESULT") in (None, SyncStatus.ABANDONED.value):
                continue
            return _record(entry)
        return None
    finally:
        reader.close()


def _record(entry: Mapping[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {k: str(v) for k, v in entry.items() if k.startswith("SYNC_")}
    stamp = entry.get("__REALTIME_TIMESTAMP")
    record["REALTIME"] = stamp.timestamp() if stamp is not None else None
    return record
