"""`doctor`, Session Manager's links: the preferences that apply to this instance (Run As on, a default
user that exists) and the region they are read in.

The checks make read-only calls (shell); the verdicts are pure functions of the answers. Every failed
call is read through `aws.classify`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Collection, Mapping, Optional

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import InstanceMetadataRegionFetcher

from runas_agent import aws
from runas_agent.core.ledger import Ledger
from runas_agent.doctor.check import NOTHING, Check, Facts, Verdict, failed, given, ok, warning
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import (CONFIG, CREDENTIALS, DIRECTORY, LEDGER, RUN_AS_ENABLED, SSM_REGION, DirectoryRead,
                                      SsmRegion)
from runas_agent.settings import Config

PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
PREFERENCES_CONSOLE = "Systems Manager -> Session Manager -> Preferences -> Edit"
TURN_RUN_AS_ON = f"{PREFERENCES_CONSOLE}: tick 'Enable Run As support for Linux instances' and save"


class SessionManagerRegion(Check):
    """The region whose Session Manager preferences apply to this instance: --ssm-region, else the
    environment's or profile's region, else the instance's (metadata), else source.region."""

    name = "ssm-region"
    shown = False
    needs = (CONFIG,)
    provides = (SSM_REGION,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        found = ssm_region(env.ssm_region, facts[CONFIG])
        return given(SSM_REGION, found) if found is not None else NOTHING


def ssm_region(option: Optional[str], cfg: Config) -> Optional[SsmRegion]:
    if option:
        return SsmRegion(option, "--ssm-region")
    region = botocore.session.Session().get_config_variable("region")
    if region:
        return SsmRegion(region, "the AWS region of the environment")
    try:
        region = InstanceMetadataRegionFetcher(timeout=1, num_attempts=1).retrieve_region()
    except Exception:  # no metadata service: the fallback below says so
        region = None
    if region:
        return SsmRegion(region, "the instance's region")
    if cfg.source.region:
        return SsmRegion(cfg.source.region, "source.region (the instance's own region is unknown: pass --ssm-region)")
    return None


@dataclass(frozen=True)
class Preferences:
    """What Run As needs from the preferences document's `inputs`."""

    #: runAsEnabled as the document has it
    written: Any
    run_as_enabled: bool
    #: runAsDefaultUser ("" when unset)
    default_user: str


def parse_preferences(content: Any) -> Optional[Preferences]:
    """The preferences of a GetDocument `Content`, or None when it is not JSON with an `inputs` object."""
    try:
        inputs = json.loads(content or "{}").get("inputs") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(inputs, Mapping):
        return None
    enabled = inputs.get("runAsEnabled")
    default = inputs.get("runAsDefaultUser")
    return Preferences(enabled, enabled is True or (isinstance(enabled, str) and enabled.lower() == "true"),
                       default if isinstance(default, str) else "")


class SessionPreferences(Check):
    name = "session-preferences"
    needs = (CONFIG, CREDENTIALS, SSM_REGION)
    uses = (DIRECTORY, LEDGER)
    provides = (RUN_AS_ENABLED,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg, where = facts[CONFIG], facts[SSM_REGION]
        what = f"Session Manager preferences ({PREFERENCES_DOCUMENT} in {where.region}, from {where.why})"
        ssm = env.client(cfg, "ssm", where.region)
        try:
            document = ssm.get_document(Name=PREFERENCES_DOCUMENT, DocumentFormat="JSON")
        except (ClientError, BotoCoreError) as exc:
            return preferences_unreadable(what, where.region, aws.classify(exc), facts[CREDENTIALS])
        preferences = parse_preferences(document.get("Content"))
        if preferences is None:
            return failed(f"{what}: the document is not JSON with an `inputs` object", f"{PREFERENCES_CONSOLE}: save the preferences again")
        default = preferences.default_user
        owner = ""
        if preferences.run_as_enabled and default:
            owner = default_user_owner(default, managed_names(facts.get(DIRECTORY), facts.get(LEDGER)),
                                       env.probe.user_exists(default))
        return preferences_verdict(what, preferences, owner)


def managed_names(read: Optional[DirectoryRead], ledger: Optional[Ledger]) -> set[str]:
    """The accounts runas-agent manages or would: those the directory maps to and those it owns."""
    return set(read.desired.accounts if read is not None else ()) | set(ledger.accounts if ledger is not None else ())


def default_user_owner(name: str, managed: Collection[str], exists: bool) -> str:
    """Who provides the default Run As user: "runas-agent", "host", or "" (nobody)."""
    if name in managed:
        return "runas-agent"
    return "host" if exists else ""


def preferences_unreadable(what: str, region: str, failure: aws.Failure, principal: str) -> Verdict:
    if failure.code == "InvalidDocument":
        return failed(f"{what}: none are saved, so Run As is off and every session lands in ssm-user",
                      TURN_RUN_AS_ON).giving(RUN_AS_ENABLED, False)
    if failure.kind is aws.Kind.ACCESS_DENIED:
        return warning(f"{what}: cannot be read ({failure.code}: {failure.message})",
                       f"allow ssm:GetDocument on document/{PREFERENCES_DOCUMENT} to {principal}, or check "
                       f"by hand that Run As is enabled in {PREFERENCES_CONSOLE}")
    if failure.answered:
        return warning(f"{what}: {failure.code}: {failure.message}")
    return warning(f"{what}: cannot be read: {failure.message}", f"allow outbound HTTPS to ssm.{region}.amazonaws.com")


def preferences_verdict(what: str, preferences: Preferences, owner: str) -> Verdict:
    """Run As on, and a default user that exists (`owner`: see default_user_owner)."""
    return _preferences_verdict(what, preferences, owner).giving(RUN_AS_ENABLED, preferences.run_as_enabled)


def _preferences_verdict(what: str, preferences: Preferences, owner: str) -> Verdict:
    default = preferences.default_user
    if not preferences.run_as_enabled:
        return failed(f"{what}: runAsEnabled is {json.dumps(preferences.written)}: Session Manager ignores "
                      "SSMSessionRunAs and every session lands in ssm-user", TURN_RUN_AS_ON)
    if not default:
        return warning(f"{what}: Run As is on, but runAsDefaultUser is empty: people without an SSMSessionRunAs "
                       "value get no shell",
                       f"{PREFERENCES_CONSOLE}: set 'Linux shell profile' default Run As user to an account that "
                       "exists on every instance")
    if owner == "runas-agent":
        return ok(f"{what}: Run As on; the default user {default} is managed by runas-agent")
    if owner == "host":
        return ok(f"{what}: Run As on; the default user {default} exists on this host")
    return failed(f"{what}: Run As on, but the default user {default} does not exist on this host: people without "
                  f"a Run As value get 'RunAs user {default} does not exist'",
                  f"create the account {default} on every instance (e.g. in the image), or set the default Run As "
                  f"user in {PREFERENCES_CONSOLE} to one that exists")

