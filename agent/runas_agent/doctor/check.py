"""How a `doctor` check is declared (pure): the facts it needs, uses and provides, and what it returns.

A check is a small class:

    class Abac(Check):
        name = "abac"                                   # its line in the report
        needs = (CONFIG, HOME_REGION, CREDENTIALS)      # skipped, naming the first one missing
        uses = ()                                       # read when there, None when not
        provides = (LIVE_EXPRESSION,)                   # what other checks may need

        def run(self, facts: Facts, env: Env) -> Verdict:
            ...                                         # read through env, judge with pure functions
            return ok("SSMSessionRunAs = ...").giving(LIVE_EXPRESSION, value)

The runner (`runner.py`) runs a check once every fact it needs is there, and otherwise reports it
`skipped` with the reason the graph gives: a fact is missing because its provider said why (the
verdict's `withholds`), or because of what the provider declares its absence means (`absent`), or
because the provider was itself skipped (its reason, passed on), or else for the fact's own `missing`
text. A `Need` may word the skip line around that reason (`says`).

A fact with `scope=True` says which checks apply at all (e.g. "the source type is identitystore"):
a check skipped for lacking one is out of scope, and what it provides is then not applicable, so
whoever needs it goes ahead (a file source has no Identity Store to wait for).

Checks whose `shown` is False provide facts without a line in the report (the expression in force,
the Session Manager region, whether the doctor runs as root).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Iterable, Mapping, Optional, Tuple, TypeVar, Union, cast

if TYPE_CHECKING:
    from runas_agent.doctor.env import Env

OK, WARNING, FAILED, SKIPPED = "ok", "warning", "failed", "skipped"

T = TypeVar("T")


class Fact(Generic[T]):
    """Something one check establishes for others: a value (the config, the directory read) or a gate
    (the Identity Store answers). Two facts are the same only if they are the same object."""

    def __init__(self, name: str, missing: str = "", *, scope: bool = False):
        self.name = name
        #: why it is missing when its provider ran and said nothing more specific
        self.missing = missing or f"{name} is unknown"
        #: whether it decides which checks apply (see the module docstring)
        self.scope = scope

    def __repr__(self) -> str:
        return f"Fact({self.name!r})"


@dataclass(frozen=True)
class Absent:
    """Why a fact is missing, with named details a consumer's skip line may quote."""

    reason: str
    detail: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Need(Generic[T]):
    """A needed fact, and how the skip line reads when it is missing: `says` is formatted with
    `reason` and the absence's details."""

    fact: Fact[T]
    says: str = "{reason}"

    def skip_text(self, absent: Absent) -> str:
        return self.says.format(**{**absent.detail, "reason": absent.reason})


@dataclass(frozen=True)
class Verdict:
    """What one check found, and the facts it gives the others (or why it does not)."""

    status: str
    summary: str
    remedy: str = ""
    details: Tuple[str, ...] = ()
    gives: Mapping[Fact[Any], Any] = field(default_factory=dict)
    withholds: Mapping[Fact[Any], Absent] = field(default_factory=dict)

    def giving(self, fact: Fact[T], value: T) -> "Verdict":
        return replace(self, gives={**self.gives, fact: value})

    def withholding(self, fact: Fact[Any], reason: str, **detail: str) -> "Verdict":
        return replace(self, withholds={**self.withholds, fact: Absent(reason, detail)})


def ok(summary: str, remedy: str = "", details: Iterable[str] = ()) -> Verdict:
    return Verdict(OK, summary, remedy, tuple(details))


def warning(summary: str, remedy: str = "", details: Iterable[str] = ()) -> Verdict:
    return Verdict(WARNING, summary, remedy, tuple(details))


def failed(summary: str, remedy: str = "", details: Iterable[str] = ()) -> Verdict:
    return Verdict(FAILED, summary, remedy, tuple(details))


def given(fact: Fact[T], value: T) -> Verdict:
    """The verdict of a check that is not shown and gives `fact`."""
    return Verdict(OK, "").giving(fact, value)


#: The verdict of a check that is not shown and gives nothing.
NOTHING = Verdict(FAILED, "")


@dataclass
class Result:
    """One line of the report: the verdict on one link."""

    name: str
    status: str
    summary: str
    remedy: str = ""
    details: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "remedy": self.remedy,
                "details": list(self.details)}


class Facts:
    """The facts one check may read: exactly those it declares in `needs` and `uses`."""

    def __init__(self, check: str, values: Mapping[Fact[Any], Any], declared: Iterable[Fact[Any]]):
        self._check = check
        self._values = dict(values)
        self._declared = frozenset(declared)

    def _declared_or_raise(self, fact: Fact[Any]) -> None:
        if fact not in self._declared:
            raise KeyError(f"check {self._check} reads {fact.name}, which it does not declare")

    def __getitem__(self, fact: Fact[T]) -> T:
        """A needed fact (KeyError for a need that is not applicable: a gate has no value)."""
        self._declared_or_raise(fact)
        if fact not in self._values:
            raise KeyError(f"{fact.name} is not applicable here: a gate, not a value")
        return cast(T, self._values[fact])

    def get(self, fact: Fact[T]) -> Optional[T]:
        """A used fact, or None when it is missing."""
        self._declared_or_raise(fact)
        return cast(Optional[T], self._values.get(fact))


class Check:
    """One link of the chain. Subclasses declare; the runner decides when `run` is called."""

    #: the name in the report and the JSON output (stable)
    name: ClassVar[str] = ""
    #: facts without which the check cannot run: the first one missing is the reason it is skipped
    needs: ClassVar[Tuple[Union[Fact[Any], Need[Any]], ...]] = ()
    #: facts it reads when they are there (their providers run first)
    uses: ClassVar[Tuple[Fact[Any], ...]] = ()
    #: facts it may give (each fact has exactly one provider)
    provides: ClassVar[Tuple[Fact[Any], ...]] = ()
    #: what a provided fact's absence means, when this check did not give it
    absent: ClassVar[Mapping[Fact[Any], str]] = {}
    #: whether the check has a line in the report
    shown: ClassVar[bool] = True

    @classmethod
    def need_list(cls) -> Tuple[Need[Any], ...]:
        return tuple(n if isinstance(n, Need) else Need(n) for n in cls.needs)

    def run(self, facts: Facts, env: "Env") -> Verdict:
        raise NotImplementedError


def plural(count: int, noun: str) -> str:
    """`1 account`, `2 accounts`: the counts verdicts quote."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
