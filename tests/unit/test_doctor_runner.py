"""The doctor's runner: checks declared with what they need, use and provide, run in dependency order,
"skipped because X" derived from the graph, one display order, a check that raises reported and the
rest going on. Stand-in checks record what ran; the real chain's graph is checked too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runas_agent.doctor.chain import checks as chain_checks
from runas_agent.doctor.check import FAILED, NOTHING, OK, SKIPPED, Check, Fact, Need, failed, given, ok
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import source_is
from runas_agent.doctor.runner import Runner, providers
from runas_agent.doctor.sync import ConfigLink
from runas_agent.sources import types as source_types

DOCS = Path(__file__).resolve().parents[2] / "docs" / "doctor.md"

A: Fact[int] = Fact("a", "a is not known")
B: Fact[int] = Fact("b", "b is not known")
GATE: Fact[None] = Fact("gate", "the gate is shut")
SCOPE: Fact[str] = Fact("scope", "out of scope", scope=True)


def make(name, *, needs=(), uses=(), provides=(), absent=None, shown=True, run=None):
    """A check class; `run(facts)` returns its verdict and every call is logged in RAN."""
    body = {"name": name, "needs": tuple(needs), "uses": tuple(uses), "provides": tuple(provides),
            "absent": dict(absent or {}), "shown": shown,
            "run": lambda self, facts, env: (RAN.append(name), run(facts) if run else ok(name))[1]}
    return type(name.title().replace("-", ""), (Check,), body)


RAN: list[str] = []


@pytest.fixture(autouse=True)
def _clear():
    RAN.clear()


def report(classes, only=None):
    return {r.name: r for r in Runner(classes, Env("unused.yaml")).run(only)}


def test_a_fact_flows_from_its_provider_to_whoever_needs_it_and_order_follows_the_graph():
    consumer = make("consumer", needs=(A,), run=lambda facts: ok(f"a is {facts[A]}"))
    provider = make("provider", provides=(A,), run=lambda facts: ok("gave a").giving(A, 42))
    results = Runner([consumer, provider], Env("x")).run()
    assert [r.name for r in results] == ["consumer", "provider"]  # display order as listed
    assert RAN == ["provider", "consumer"]  # execution order from the declarations
    assert results[0].summary == "a is 42"


def test_a_missing_need_skips_with_the_reason_the_graph_gives():
    # withheld with a reason at run time
    provider = make("provider", provides=(A,), run=lambda facts: failed("broken").withholding(A, "the provider said why"))
    consumer = make("consumer", needs=(A,))
    assert report([provider, consumer])["consumer"].summary == "not checked: the provider said why"
    # declared by the provider for when it does not give the fact
    provider = make("provider", provides=(A,), absent={A: "a is what the provider declares"}, run=lambda facts: failed("x"))
    assert report([provider, make("consumer", needs=(A,))])["consumer"].summary == "not checked: a is what the provider declares"
    # neither: the fact's own words
    provider = make("provider", provides=(A,), run=lambda facts: failed("x"))
    assert report([provider, make("consumer", needs=(A,))])["consumer"].summary == "not checked: a is not known"
    assert RAN.count("consumer") == 0


def test_a_skipped_provider_passes_its_reason_on_unless_it_declares_another():
    root = make("root", provides=(GATE,), run=lambda facts: NOTHING, shown=False)
    middle = make("middle", needs=(GATE,), provides=(A, B), absent={B: "b needs the middle check"})
    on_a = make("on-a", needs=(A,))
    on_b = make("on-b", needs=(B,))
    results = report([root, middle, on_a, on_b])
    assert results["middle"].summary == "not checked: the gate is shut"
    assert results["on-a"].summary == "not checked: the gate is shut"
    assert results["on-b"].summary == "not checked: b needs the middle check"
    assert [r.status for r in results.values()] == [SKIPPED] * 3


def test_the_first_missing_need_is_named_and_later_providers_do_not_run():
    first = make("first", provides=(A,), run=lambda facts: NOTHING, shown=False)
    second = make("second", provides=(B,), run=lambda facts: given(B, 1), shown=False)
    consumer = make("consumer", needs=(A, B))
    assert report([consumer, first, second])["consumer"].summary == "not checked: a is not known"
    assert "second" not in RAN


def test_a_need_words_its_skip_line_with_the_details_of_the_absence():
    provider = make("provider", provides=(A,),
                    run=lambda facts: failed("x").withholding(A, "source.type is file", origin="/srv/dir.json"))
    consumer = make("consumer", needs=(Need(A, "{reason} (the directory comes from {origin})"),))
    terse = make("terse", needs=(Need(A, "{reason}: no calls"),))
    results = report([provider, consumer, terse])
    assert results["consumer"].summary == "not checked: source.type is file (the directory comes from /srv/dir.json)"
    assert results["terse"].summary == "not checked: source.type is file: no calls"


def test_what_an_out_of_scope_check_provides_is_not_applicable():
    config = make("config", provides=(SCOPE,), run=lambda facts: ok("").withholding(SCOPE, "source.type is file"))
    probe = make("probe", needs=(SCOPE,), provides=(GATE,), absent={GATE: "the probe failed"})
    reader = make("reader", needs=(GATE,), run=lambda facts: ok("read"))
    results = report([config, probe, reader])
    assert results["probe"].status == SKIPPED and results["probe"].summary == "not checked: source.type is file"
    assert results["reader"].status == OK  # nothing to wait for
    # in scope, the same probe failing stops the reader
    config = make("config", provides=(SCOPE,), run=lambda facts: ok("").giving(SCOPE, "identitystore"))
    probe = make("probe", needs=(SCOPE,), provides=(GATE,), absent={GATE: "the probe failed"}, run=lambda facts: failed("no"))
    assert report([config, probe, reader])["reader"].summary == "not checked: the probe failed"


def test_used_facts_are_read_when_there_and_none_when_not():
    provider = make("provider", provides=(A,), run=lambda facts: NOTHING, shown=False)
    user = make("user", uses=(A,), run=lambda facts: ok(f"a={facts.get(A)}"))
    assert report([user, provider])["user"].summary == "a=None"
    assert RAN == ["provider", "user"]
    provider = make("provider", provides=(A,), run=lambda facts: given(A, 7), shown=False)
    assert report([user, provider])["user"].summary == "a=7"


def test_a_check_that_raises_is_reported_and_the_rest_go_on():
    def boom(facts):
        raise PermissionError(13, "Permission denied", "/proc/1/exe")

    broken = make("broken", provides=(A,), run=boom)
    after = make("after", needs=(A,))
    alone = make("alone")
    results = report([broken, after, alone])
    assert results["broken"].status == FAILED
    assert results["broken"].summary == "the check itself failed: PermissionError: [Errno 13] Permission denied: '/proc/1/exe'"
    assert results["after"].summary == "not checked: a is not known"
    assert results["alone"].status == OK


def test_a_check_must_declare_what_it_reads_and_gives():
    reads = make("reads", run=lambda facts: ok(str(facts[A])))
    gives = make("gives", run=lambda facts: ok("").giving(B, 1))
    provider = make("provider", provides=(A, B), run=lambda facts: given(A, 1).giving(B, 2), shown=False)
    results = report([reads, gives, provider])
    assert results["reads"].status == FAILED and "reads a, which it does not declare" in results["reads"].summary
    assert results["gives"].status == FAILED and "gives b without declaring it" in results["gives"].summary


@pytest.mark.parametrize("classes, words", [
    ([make("p1", provides=(A,)), make("p2", provides=(A,))], "a is provided by both p1 and p2"),
    ([make("c", needs=(B,))], "c depends on b, which no check provides"),
    ([make("x", needs=(A,), provides=(B,)), make("y", needs=(B,), provides=(A,))], "checks depend on each other: x -> y -> x"),
    ([make("x", absent={A: "?"})], "x says what a means but does not provide it"),
    ([make("x"), make("x")], "two checks are named x"),
])
def test_a_graph_that_cannot_run_is_refused(classes, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        providers([cls() for cls in classes])


def test_only_runs_the_named_checks_and_what_they_need():
    provider = make("provider", provides=(A,), run=lambda facts: ok("").giving(A, 1))
    consumer = make("consumer", needs=(A,))
    other = make("other")
    results = Runner([provider, consumer, other], Env("x")).run(only=["consumer"])
    assert [r.name for r in results] == ["consumer"]
    assert RAN == ["provider", "consumer"]


# --- the real chain --------------------------------------------------------------------------------

def test_the_chain_is_a_graph_that_runs():
    found = providers([cls() for cls in chain_checks()])
    assert len(set(found.values())) >= 10


def test_the_chain_is_shown_in_the_order_docs_doctor_md_lists():
    documented = re.findall(r"^\| `([a-z-]+)` \|", DOCS.read_text(), re.M)
    assert [cls.name for cls in chain_checks() if cls.shown] == documented


def documented_sections() -> dict[str, dict[str, list[str]]]:
    """docs/doctor.md's `### `name`` sections: relation (needs, uses, provides) -> the fact names listed."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in DOCS.read_text().splitlines():
        heading = re.fullmatch(r"### `([a-z-]+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), {})
        elif line.startswith("## "):
            current = None
        elif current is not None:
            listed = re.fullmatch(r"- (needs|uses|provides): (.+)", line)
            if listed:
                current[listed.group(1)] = listed.group(2).split("; ")
    return sections


def declared(cls) -> dict[str, list[str]]:
    found = {"needs": [n.fact.name for n in cls.need_list()], "uses": [f.name for f in cls.uses],
             "provides": [f.name for f in cls.provides]}
    return {relation: names for relation, names in found.items() if names}


def test_every_check_is_documented_with_the_facts_it_declares():
    sections = documented_sections()
    shown = [cls for cls in chain_checks() if cls.shown]
    assert list(sections) == [cls.name for cls in shown]
    assert {cls.name: sections[cls.name] for cls in shown} == {cls.name: declared(cls) for cls in shown}


def test_every_fact_is_documented_with_its_provider():
    rows = dict(re.findall(r"^\| ([^|`]+?) \| `([a-z-]+)` \|", DOCS.read_text(), re.M))
    assert rows == {fact.name: cls.name for cls in chain_checks() for fact in cls.provides}


def test_the_documented_facts_are_read_as_written():
    """The parser itself: a section listing a fact the check does not declare does not pass."""
    assert documented_sections()["accounts"] == {"needs": ["the configuration"], "uses": ["the directory"],
                                                 "provides": ["the ledger"]}
    assert declared(ConfigLink)["provides"][:2] == ["the configuration", "the settings"]


def test_the_config_check_settles_which_source_type_applies_for_every_type():
    kinds = set(source_types())
    assert {source_is(k) for k in kinds} <= set(ConfigLink.provides)
    # every probe of a source type is scoped to its type, so under another type it is out of scope
    for kind, source in source_types().items():
        for probe in source.probes:
            assert source_is(kind) in [n.fact for n in probe.need_list()], probe.name

