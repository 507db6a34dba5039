"""The Run As chain as `doctor` shows it: every check, in display order, and `Doctor`, which runs them.

The order is the chain's, from AWS to the host. The configured source type's probes come right after
the credentials; every source type's probes are listed, and those of the other types are shown as
skipped (`source.type is ...`).
"""

from __future__ import annotations

from typing import Collection, List, Optional, Tuple, Type

from runas_agent.doctor.aws import Abac, Credentials, ExpressionInForce
from runas_agent.doctor.check import Check, Result
from runas_agent.doctor.env import Env
from runas_agent.doctor.host import Privileges, SsmAgent, SsmUserSudo, Sudoers
from runas_agent.doctor.names import AllowedNamesLink, NameRulesLink
from runas_agent.doctor.runner import Runner
from runas_agent.doctor.session_manager import RunAsBypass, SessionManagerRegion, SessionPreferences
from runas_agent.doctor.sync import Accounts, ConfigLink, Identities, LastSync
from runas_agent.sources import types as source_types


def source_probes() -> Tuple[Type[Check], ...]:
    """The probes every source type declares (`Source.probes`), in the order of the types."""
    found: List[Type[Check]] = []
    for source in source_types().values():
        found += [probe for probe in source.probes if probe not in found]
    return tuple(found)


def checks() -> Tuple[Type[Check], ...]:
    """Every check: those shown, in display order, then those that only provide facts (one a line)."""
    return (
        ConfigLink,
        Credentials,
        *source_probes(),
        Abac,
        SessionPreferences,
        RunAsBypass,
        Identities,
        AllowedNamesLink,
        NameRulesLink,
        Accounts,
        SsmAgent,
        Sudoers,
        SsmUserSudo,
        LastSync,
        # not shown: they only provide facts
        ExpressionInForce,
        SessionManagerRegion,
        Privileges,
    )


class Doctor(Env):
    """Runs the chain once against one environment (see Env for what is injectable)."""

    def run(self, only: Optional[Collection[str]] = None) -> List[Result]:
        """The results in display order; with `only`, just the named checks (and, unshown, what they need)."""
        return Runner(checks(), self).run(only)
