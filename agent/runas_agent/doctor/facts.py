"""The facts `doctor` checks hand each other (pure): one object per fact, with what its absence means.

Which check provides each: `chain.py` lists them, and the runner refuses a fact with two providers.
A source type's probes may add facts of their own (e.g. the first ListUsers page).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict

from runas_agent.core.desired import Desired
from runas_agent.core.ledger import Ledger
from runas_agent.directory import Directory
from runas_agent.doctor.check import Fact
from runas_agent.settings import Config

if TYPE_CHECKING:
    from runas_agent.sources import SourceType
    from runas_agent.sources.admission import Admission


@dataclass(frozen=True)
class DirectoryRead:
    """The directory as the sync would read and admit it, and what it makes of it."""

    #: the configuration with the run_as expression in force
    config: Config
    #: the directory admitted for planning (admission.directory)
    directory: Directory
    desired: Desired
    #: what the plan must still carry (sources/admission.py: refusals of rollback, held disables)
    admission: Admission


@dataclass(frozen=True)
class SsmRegion:
    """The region whose Session Manager preferences apply to this instance, and where that came from."""

    region: str
    why: str


#: The valid configuration.
CONFIG: Fact[Config] = Fact("the configuration", "the configuration is invalid")
#: The configuration, or every default when it is invalid (the host checks then look where an
#: unconfigured agent would).
SETTINGS: Fact[Config] = Fact("the settings")
#: source.region, the Identity Center home region.
HOME_REGION: Fact[str] = Fact("source.region", "source.region is not set (the Identity Center home region, where sso-admin answers)")
#: The principal of usable AWS credentials, in words for remedies ("role X (account N)").
CREDENTIALS: Fact[str] = Fact("AWS credentials", "no AWS credentials")
#: Gate: the configured source answered its own probe (not applicable to a type without one).
SOURCE_ANSWERS: Fact[None] = Fact("the directory source answers", "the directory source did not answer")
#: The SSMSessionRunAs value read from Identity Center, when run_as.expression is from-identity-center.
LIVE_EXPRESSION: Fact[str] = Fact("the live run_as expression")
#: The configuration with run_as.expression resolved (the live value for from-identity-center).
EXPRESSION: Fact[Config] = Fact("the run_as expression", "the live run_as expression could not be read (see abac)")
#: The directory, read, admitted as the sync would, and mapped to accounts.
DIRECTORY: Fact[DirectoryRead] = Fact("the directory", "the directory was not read")
#: What runas-agent owns (its ledger).
LEDGER: Fact[Ledger] = Fact("the ledger", "the ledger could not be read")
#: The Session Manager preferences document's content, as GetDocument returned it.
PREFERENCES_CONTENT: Fact[str] = Fact("the Session Manager preferences",
                                      "the Session Manager preferences could not be read (see session-preferences)")
#: runAsEnabled in the Session Manager preferences.
RUN_AS_ENABLED: Fact[bool] = Fact("runAsEnabled", "the Session Manager preferences could not be read")
#: Where Session Manager's preferences for this instance live.
SSM_REGION: Fact[SsmRegion] = Fact("the Session Manager region", "no region for Session Manager: pass --ssm-region")
#: Gate: the doctor runs as root.
AS_ROOT: Fact[bool] = Fact("root", "the doctor is not running as root")

_SOURCE_IS: Dict[str, Fact[Any]] = {}


def source_is(kind: str) -> "Fact[SourceType]":
    """Scope: the configured source type is `kind` (its value: the source type's class). A source
    type's probes need it; when the configured type is another, they are out of scope."""
    if kind not in _SOURCE_IS:
        _SOURCE_IS[kind] = Fact(f"source.type {kind}", "the configuration is invalid", scope=True)
    return _SOURCE_IS[kind]
