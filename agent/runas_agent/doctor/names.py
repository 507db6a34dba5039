"""`doctor`, the names accounts may take: whether `accounts.allowed_names` is set (the pattern every Run
As name must match as a whole), and, with the directory read, which of the names it maps to the
pattern leaves out.

The reserved lists refuse the names packages and images are known to use; only the pattern refuses a
name a package nobody has heard of will create, picked by a person who edits their own directory
attribute. Unset, that gap is open: a warning. The verdict is a pure function of the setting and the
names.
"""

from __future__ import annotations

import re
from typing import Collection, Optional

from runas_agent.core.allowed import KEY, AllowedNames
from runas_agent.doctor.check import Check, Facts, Verdict, ok, plural, warning
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import CONFIG, DIRECTORY

#: The example the remedy gives when the directory suggests nothing better.
EXAMPLE = r"^[a-z0-9._-]+@corp\.example$"


class AllowedNamesLink(Check):
    name = "allowed-names"
    needs = (CONFIG,)
    uses = (DIRECTORY,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        read = facts.get(DIRECTORY)
        names = sorted(read.desired.accounts) if read is not None else None
        return allowed_names_verdict(facts[CONFIG].accounts.allowed_names, names)


def allowed_names_verdict(pattern: Optional[str], names: Optional[Collection[str]]) -> Verdict:
    """`pattern` is accounts.allowed_names (None: unset); `names` the account names the directory maps
    to (None when it was not read)."""
    if pattern is None:
        return warning(f"{KEY} is unset: any Run As value the built-in checks allow can become an account, "
                       "including a name a package installed later will use",
                       f"set {KEY} to the fleet's naming scheme, e.g. '{suggestion(names or ())}': a Run As value "
                       "outside it is then never an account (docs/security.md)")
    allowed = AllowedNames.from_setting(pattern)
    if names is None:
        return ok(f"{KEY} is {pattern} (the directory was not read: its names were not compared)")
    outside = [problem for problem in (allowed.problem(name) for name in sorted(names)) if problem]
    if outside:
        return warning(f"{KEY} is {pattern}; {plural(len(outside), 'name')} the directory maps to "
                       f"{'does' if len(outside) == 1 else 'do'} not match it",
                       f"the pattern is there to keep them out: if they belong to the fleet, widen {KEY}; "
                       "otherwise change their Run As value in Identity Center",
                       outside)
    return ok(f"{KEY} is {pattern}, and every Run As name the directory maps to matches it "
              f"({plural(len(names), 'name')})")


def suggestion(names: Collection[str]) -> str:
    """A pattern for the names the directory maps to when they are all e-mail addresses of one domain
    (and the pattern takes every one of them); the generic example otherwise."""
    domains = {name.rpartition("@")[2] for name in names}
    if not names or not all("@" in name for name in names) or len(domains) != 1:
        return EXAMPLE
    candidate = rf"^[a-z0-9._-]+@{re.escape(domains.pop())}$"
    return candidate if all(re.fullmatch(candidate, name) for name in names) else EXAMPLE
