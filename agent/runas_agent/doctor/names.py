"""`doctor`, the names accounts may take: whether `accounts.allowed_names` is set (the pattern every Run
As name must match as a whole), and, with the directory read, which of the names it maps to the
pattern leaves out; and which name rules apply on this host, what they do to e-mail user names, and
whether sshd's user patterns can name such accounts.

The reserved lists refuse the names packages and images are known to use; only the pattern refuses a
name a package nobody has heard of will create, picked by a person who edits their own directory
attribute. Unset, that gap is open: a warning. The verdict is a pure function of the setting and the
names.
"""

from __future__ import annotations

import re
from typing import Collection, Iterable, Mapping, Optional, Sequence

from runas_agent.core import naming
from runas_agent.core.allowed import KEY, AllowedNames
from runas_agent.core.desired import Desired
from runas_agent.core.ledger import Ledger
from runas_agent.core.display import shown
from runas_agent.doctor.check import Check, Facts, Verdict, ok, plural, warning
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import CONFIG, DIRECTORY, LEDGER
from runas_agent.sync import name_rules

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


class NameRulesLink(Check):
    name = "name-rules"
    needs = (CONFIG,)
    uses = (DIRECTORY, LEDGER)

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg = facts[CONFIG]
        read = facts.get(DIRECTORY)
        desired = read.desired if read is not None else None
        sshd = None
        if desired is not None and any("@" in name for name in desired.accounts):
            sshd = env.sshd_settings()
        ledger = facts.get(LEDGER)
        answered = {name: env.probe.uid_of(name) for name in at_names(ledger)} if ledger is not None else {}
        verdict = name_rules_verdict(cfg.accounts.name_rules, name_rules(cfg, env.probe.etc), desired, sshd)
        return with_nss(verdict, nss_shadowing(ledger, answered) if ledger is not None else [])


#: How many of the ledger's '@' names the check looks up through NSS (each lookup may read all of
#: /etc/passwd, or ask a directory server).
NSS_LOOKUPS = 200


def at_names(ledger: Ledger) -> list[str]:
    """The names with '@' the ledger owns (the first NSS_LOOKUPS of them, in order)."""
    return [name for name in sorted(ledger.accounts) if "@" in name][:NSS_LOOKUPS]


def nss_shadowing(ledger: Ledger, answered: Mapping[str, Optional[int]]) -> list[str]:
    """The owned names NSS answers with another account's UID. With a source listed before `files`
    in nsswitch.conf (authselect's sssd profile writes `passwd: sss files systemd`), a directory
    user whose name is the same e-mail address (an Active Directory UPN) is the one `id <name>`
    finds: Run As sessions start as that user, the agent's sudo drop-in applies to them, and
    parking the account does not stop the name resolving."""
    found = []
    for name, uid in answered.items():
        owned = ledger.accounts.get(name)
        if owned is not None and uid is not None and uid != owned.uid:
            found.append(f"{shown(name)}: NSS answers uid {uid}, not the agent's account (uid {owned.uid})")
    return found


def with_nss(verdict: Verdict, shadowed: list[str]) -> Verdict:
    if not shadowed:
        return verdict
    return warning(f"{verdict.summary}; NSS answers {plural(len(shadowed), 'managed name')} with another user "
                   "(a source before files in /etc/nsswitch.conf, such as sss)",
                   "Run As sessions for those names start as that other user, and the agent's sudo rules apply "
                   "to them: put files first on the passwd and group lines of /etc/nsswitch.conf, or map the "
                   "Run As value to a name the directory service does not have"
                   + (f"; also: {verdict.remedy}" if verdict.remedy else ""),
                   shadowed + list(verdict.details))


#: The sshd keywords whose patterns are `user` or `user@host` (sshd_config(5)).
SSHD_USER_KEYWORDS = ("allowusers", "denyusers")
NICKNAME_WAY = ("or have Identity Center send a name without '@': map the e-mail's local part into the user's "
                "nickName in the IdP and set SSMSessionRunAs to ${path:nickName}")


def name_rules_verdict(setting: str, rules: naming.NameRules, desired: Optional[Desired],
                       sshd: Optional[str]) -> Verdict:
    """`setting` is accounts.name_rules, `rules` those in force (auto resolved from os-release),
    `desired` what the directory maps to (None: not read), `sshd` the output of `sshd -T` (None:
    not read, or no account name has '@')."""
    where = f"accounts.name_rules is {setting}" + (f" ({rules.family}, from /etc/os-release)" if setting == "auto" else "")
    if desired is None:
        return ok(f"{where} (the directory was not read: its names were not compared)")
    misread = sshd_misreadings(sshd or "", sorted(name for name in desired.accounts if "@" in name))
    if misread:
        return warning(f"{where}; sshd reads {plural(len(misread), 'user pattern')} that name an account with '@' "
                       "as user@host, so the pattern does not match the account",
                       "sshd splits a user pattern at '@' into user and host: from OpenSSH 9.9 on, "
                       "alice@example.com@* names the account exactly; before, write '?' for that '@' "
                       "(alice?example.com), which also matches any one character there", misread)
    if rules.family == naming.RHEL.family:
        refused = [skip for skip in desired.skips if skip.name and "@" in skip.name
                   and skip.reason == rules.check(skip.name) and naming.RHEL_EMAIL.check(skip.name) is None]
        if refused:
            return warning(f"{where}: {plural(len(refused), 'Run As name')} with '@' (e.g. '{shown(refused[0].name)}') "
                           f"{'is' if len(refused) == 1 else 'are'} refused, so those people get no account on this host",
                           "set accounts.name_rules to rhel-email (the agent writes the account databases itself, "
                           "so RHEL's useradd rule is not in the way; pwck -r and grpck -r then list those accounts "
                           f"as invalid names), {NICKNAME_WAY}", [str(skip) for skip in refused])
    with_at = sum(1 for name in desired.accounts if "@" in name)
    if rules.family == naming.RHEL_EMAIL.family and with_at:
        return ok(f"{where}: {plural(with_at, 'account name')} with '@'; pwck -r and grpck -r report them as "
                  "invalid names (expected: RHEL's shadow-utils checks new names only; pwck --badnames quiets pwck)")
    return ok(f"{where}: no Run As name the directory maps to is refused by them")


def sshd_misreadings(sshd_t: str, names: Sequence[str]) -> list[str]:
    """The AllowUsers/DenyUsers patterns of `sshd -T` output that, read as a whole, match one of
    `names` (account names with '@'): sshd splits such a pattern at '@' into user and host, so it
    never matches the account the administrator meant."""
    if not names:
        return []
    found = []
    for keyword, pattern in _sshd_patterns(sshd_t.splitlines()):
        if "@" not in pattern:
            continue
        meant = [name for name in names if _glob(pattern.lstrip("!")).fullmatch(name)]
        if meant:
            user, _, host = pattern.lstrip("!").partition("@")
            found.append(f"{keyword} {shown(pattern)}: meant for {shown(meant[0])}"
                         + (f" and {len(meant) - 1} more" if len(meant) > 1 else "")
                         + f", read by sshd as user '{shown(user)}' from host '{shown(host)}'")
    return found


def _sshd_patterns(lines: Iterable[str]) -> Iterable[tuple[str, str]]:
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0].lower() in SSHD_USER_KEYWORDS:
            for word in words[1:]:
                for pattern in word.split(","):
                    if pattern:
                        yield words[0].lower(), pattern


def _glob(pattern: str) -> "re.Pattern[str]":
    """sshd's pattern language: '*' any run of characters, '?' any one character, nothing else special."""
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern), re.DOTALL)
