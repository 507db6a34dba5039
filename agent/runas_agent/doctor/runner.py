"""Runs `doctor` checks in dependency order (pure apart from the checks it calls).

Checks are settled in display order; settling one first settles the providers of the facts it needs
and uses, so the execution order follows from the declarations and a provider runs only when some
check asks for its fact. A check is skipped, not run, when a fact it needs is missing; the reason is
derived as `check.py` describes. A check that raises is reported as failed and the others go on.

The graph is checked when the runner is built: every fact has exactly one provider, every needed
or used fact has one, and no check depends on itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Type

from runas_agent.doctor.check import SKIPPED, Absent, Check, Fact, Facts, Need, Result, Verdict, failed
from runas_agent.doctor.env import Env

log = logging.getLogger("runas_agent.doctor")


@dataclass(frozen=True)
class _State:
    """A fact after its provider settled: given (with its value), missing (with why), or not
    applicable (its provider is out of scope)."""

    given: bool
    value: Any = None
    absent: Optional[Absent] = None

    @property
    def missing(self) -> bool:
        return self.absent is not None


_NOT_APPLICABLE = _State(given=False)


def providers(checks: Sequence[Check]) -> Dict[Fact[Any], Check]:
    """The provider of every fact; ValueError for a graph that cannot run."""
    found: Dict[Fact[Any], Check] = {}
    names: Set[str] = set()
    for check in checks:
        if check.name in names:
            raise ValueError(f"two checks are named {check.name}")
        names.add(check.name)
        for fact in check.provides:
            if fact in found:
                raise ValueError(f"{fact.name} is provided by both {found[fact].name} and {check.name}")
            found[fact] = check
        stray = set(check.absent) - set(check.provides)
        if stray:
            raise ValueError(f"{check.name} says what {', '.join(f.name for f in stray)} means but does not provide it")
    for check in checks:
        for fact in _inputs(check):
            if fact not in found:
                raise ValueError(f"{check.name} depends on {fact.name}, which no check provides")
    _refuse_cycles(checks, found)
    return found


def _inputs(check: Check) -> Tuple[Fact[Any], ...]:
    return tuple(n.fact for n in check.need_list()) + tuple(check.uses)


def _refuse_cycles(checks: Sequence[Check], found: Mapping[Fact[Any], Check]) -> None:
    done: Set[str] = set()

    def visit(check: Check, path: Tuple[str, ...]) -> None:
        if check.name in path:
            raise ValueError(f"checks depend on each other: {' -> '.join(path + (check.name,))}")
        if check.name in done:
            return
        for fact in _inputs(check):
            visit(found[fact], path + (check.name,))
        done.add(check.name)

    for check in checks:
        visit(check, ())


class Runner:
    """One run of a set of checks against one environment."""

    def __init__(self, checks: Iterable[Type[Check]], env: Env):
        self.checks = [cls() for cls in checks]
        self.providers = providers(self.checks)
        self.env = env
        self.states: Dict[Fact[Any], _State] = {}
        self.results: Dict[str, Result] = {}
        self._settled: Set[str] = set()

    def run(self, only: Optional[Collection[str]] = None) -> List[Result]:
        """The results of the shown checks (those named in `only`, if given), in display order."""
        wanted = [c for c in self.checks if c.shown and (only is None or c.name in only)]
        for check in wanted:
            self._settle(check)
        return [self.results[c.name] for c in wanted]

    def _settle(self, check: Check) -> None:
        if check.name in self._settled:
            return
        self._settled.add(check.name)
        for need in check.need_list():
            state = self._state(need.fact)
            if state.absent is not None:
                self._skip(check, need, state.absent)
                return
        for fact in check.uses:
            self._state(fact)
        values = {fact: self.states[fact].value for fact in _inputs(check) if self.states[fact].given}
        try:
            verdict = check.run(Facts(check.name, values, _inputs(check)), self.env)
            _refuse_undeclared(check, verdict)
        except Exception as exc:  # a doctor that crashes on the broken host it is meant to diagnose helps nobody
            log.debug("check %s raised", check.name, exc_info=True)
            verdict = failed(f"the check itself failed: {type(exc).__name__}: {exc}",
                             "run with -v for details; this is a runas-agent bug or an unexpected host state")
        self._record(check, verdict)

    def _state(self, fact: Fact[Any]) -> _State:
        if fact not in self.states:
            self._settle(self.providers[fact])
        return self.states[fact]

    def _skip(self, check: Check, need: Need[Any], absent: Absent) -> None:
        if check.shown:
            self.results[check.name] = Result(check.name, SKIPPED, f"not checked: {need.skip_text(absent)}")
        for fact in check.provides:
            if need.fact.scope:
                self.states[fact] = _NOT_APPLICABLE
            elif fact in check.absent:
                self.states[fact] = _State(False, absent=Absent(check.absent[fact]))
            else:
                self.states[fact] = _State(False, absent=absent)

    def _record(self, check: Check, verdict: Verdict) -> None:
        if check.shown:
            self.results[check.name] = Result(check.name, verdict.status, verdict.summary, verdict.remedy,
                                              list(verdict.details))
        for fact in check.provides:
            if fact in verdict.gives:
                self.states[fact] = _State(True, verdict.gives[fact])
            elif fact in verdict.withholds:
                self.states[fact] = _State(False, absent=verdict.withholds[fact])
            else:
                self.states[fact] = _State(False, absent=Absent(check.absent.get(fact, fact.missing)))


def _refuse_undeclared(check: Check, verdict: Verdict) -> None:
    stray = (set(verdict.gives) | set(verdict.withholds)) - set(check.provides)
    if stray:
        raise ValueError(f"{check.name} gives {', '.join(sorted(f.name for f in stray))} without declaring it")
