"""`doctor`, the AWS links every source type shares: the credentials, Identity Center's attributes for
access control (the SSMSessionRunAs expression), and the Session Manager preferences that apply to
this instance. A source type's own probes live on its class (`Source.probes`).

The checks make read-only calls (shell); the verdicts are pure functions of the answers. Every failed
call is read through `aws.classify`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Collection, Mapping, Optional

import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from botocore.utils import InstanceMetadataRegionFetcher

from runas_agent import aws
from runas_agent.core.expression import ExpressionError, parse
from runas_agent.core.ledger import Ledger
from runas_agent.doctor.check import NOTHING, WARNING, FAILED, Check, Facts, Verdict, failed, given, ok, warning
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import (CONFIG, CREDENTIALS, DIRECTORY, EXPRESSION, HOME_REGION, LEDGER, LIVE_EXPRESSION,
                                      RUN_AS_ENABLED, SSM_REGION, DirectoryRead, SsmRegion)
from runas_agent.identitycenter import (FROM_IDENTITY_CENTER, RUN_AS_KEY, AbacConfig, IdentityCenterError,
                                        expression_from, fetch_abac, with_expression)
from runas_agent.settings import Config
from runas_agent.sources import source_type

PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
ABAC_CONSOLE = "IAM Identity Center -> Settings -> Attributes for access control"
PREFERENCES_CONSOLE = "Systems Manager -> Session Manager -> Preferences -> Edit"
TURN_RUN_AS_ON = f"{PREFERENCES_CONSOLE}: tick 'Enable Run As support for Linux instances' and save"


# --- credentials ----------------------------------------------------------------------------------

class Credentials(Check):
    name = "credentials"
    needs = (CONFIG,)
    provides = (CREDENTIALS,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg = facts[CONFIG]
        session = env.session(cfg)
        try:
            found = session.get_credentials()
            frozen = found.get_frozen_credentials() if found is not None else None
        except Exception as exc:  # botocore's credential providers raise a variety of errors
            return no_credentials(f"{type(exc).__name__}: {exc}", needs_aws(cfg))
        if frozen is None or not frozen.access_key:
            return no_credentials("no credentials in the environment, shared files or instance metadata", needs_aws(cfg))
        return credentials_verdict(found.method, principal(_caller_arn(session, cfg)))


def needs_aws(cfg: Config) -> bool:
    """Whether the sync itself needs AWS credentials: the source type says, and so does reading the
    expression live from Identity Center."""
    return source_type(cfg.source.type).needs_aws_credentials or cfg.run_as.expression == FROM_IDENTITY_CENTER


def no_credentials(problem: str, required: bool) -> Verdict:
    return Verdict(FAILED if required else WARNING, f"no usable AWS credentials ({problem})",
                   "attach an instance profile (an IAM role) to the instance; on EC2 check that the instance "
                   "metadata service is reachable (IMDSv2 hop limit 2 in containers)")


def credentials_verdict(method: str, role: str) -> Verdict:
    who = f": {role}" if role else ""
    return ok(f"AWS credentials resolve (from {method}){who}").giving(CREDENTIALS, role or "the instance role")


def principal(arn: str) -> str:
    """The principal of a caller ARN in words: `role NAME (account N)` for an assumed role, else the ARN."""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[5].startswith("assumed-role/"):
        return f"role {parts[5].split('/')[1]} (account {parts[4]})"
    return arn


def _caller_arn(session: Any, cfg: Config) -> str:
    """The ARN the credentials belong to ("" when STS cannot say; GetCallerIdentity needs no
    permission, only a route to STS)."""
    try:
        sts = session.client("sts", config=BotoConfig(
            region_name=cfg.source.region or session.region_name, connect_timeout=2, read_timeout=5,
            retries={"total_max_attempts": 1}))
        return str(sts.get_caller_identity().get("Arn") or "")
    except Exception:  # no route to STS: the remedies then say "the instance role"
        return ""


# --- Identity Center ABAC -------------------------------------------------------------------------

class Abac(Check):
    name = "abac"
    needs = (CONFIG, HOME_REGION, CREDENTIALS)
    provides = (LIVE_EXPRESSION,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg = facts[CONFIG]
        sso_admin = env.client(cfg, "sso-admin", facts[HOME_REGION], cfg.source.endpoint_url)
        try:
            abac = fetch_abac(cfg.source, sso_admin)
        except IdentityCenterError as exc:
            return abac_unreadable(exc, cfg.run_as.expression, facts[CREDENTIALS])
        return abac_verdict(abac, cfg.run_as.expression)


def _add_value(written: str) -> str:
    value = written if written != FROM_IDENTITY_CENTER else "${path:userName} (or the attribute you chose)"
    return f"key {RUN_AS_KEY}, value {value}"


def abac_unreadable(exc: IdentityCenterError, written: str, principal: str) -> Verdict:
    """The attributes could not be read. Reading them needs rights a member account's instance role
    usually lacks: only fatal when the sync itself depends on reading them."""
    if exc.kind == "not_enabled":
        return failed(str(exc), f"{ABAC_CONSOLE} -> Enable, then add {_add_value(written)}")
    live = written == FROM_IDENTITY_CENTER
    remedy = f"allow {exc.action} to {principal}" if exc.action else "set source.instance_arn"
    if not live:
        remedy += f", or check by hand in {ABAC_CONSOLE} that {RUN_AS_KEY} is {written}"
    return Verdict(FAILED if live else WARNING, f"cannot read Identity Center's attributes for access control: {exc}",
                   remedy)


def abac_verdict(abac: AbacConfig, written: str) -> Verdict:
    """Identity Center's SSMSessionRunAs against run_as.expression (or, for from-identity-center, whether
    the agent can evaluate it: then it is the live expression)."""
    try:
        value = expression_from(abac)
    except IdentityCenterError as exc:
        status = WARNING if abac.status == "CREATION_IN_PROGRESS" else FAILED
        return Verdict(status, str(exc), f"{ABAC_CONSOLE}: add {_add_value(written)}")
    if written == FROM_IDENTITY_CENTER:
        return live_verdict(value)
    if value != written:
        return failed(f"Identity Center sends {RUN_AS_KEY} = {value}, but run_as.expression is {written}: "
                      "accounts would be named after values nobody logs in as",
                      f"set run_as.expression: {value!r} (or {FROM_IDENTITY_CENTER} to follow it), or change {RUN_AS_KEY} "
                      f"in {ABAC_CONSOLE}")
    return ok(f"{RUN_AS_KEY} = {value} in {abac.instance_arn}, as run_as.expression says")


def live_verdict(value: str) -> Verdict:
    try:
        parse(value)
    except ExpressionError as error:
        return failed(f"Identity Center's {RUN_AS_KEY} is {value!r}, which {error}",
                      f"{ABAC_CONSOLE}: use one of the documented ${{path:...}} attributes")
    return ok(f"{RUN_AS_KEY} = {value} (read live at every sync: run_as.expression is {FROM_IDENTITY_CENTER})"
              ).giving(LIVE_EXPRESSION, value)


class ExpressionInForce(Check):
    """The configuration with the run_as expression the sync would use: the written one, or the live
    value the abac check read."""

    name = "run-as-expression"
    shown = False
    needs = (CONFIG,)
    uses = (LIVE_EXPRESSION,)
    provides = (EXPRESSION,)

    def run(self, facts: Facts, env: Env) -> Verdict:
        return expression_in_force(facts[CONFIG], facts.get(LIVE_EXPRESSION))


def expression_in_force(cfg: Config, live: Optional[str]) -> Verdict:
    if cfg.run_as.expression != FROM_IDENTITY_CENTER:
        return given(EXPRESSION, cfg)
    return given(EXPRESSION, with_expression(cfg, live)) if live else NOTHING


# --- Session Manager preferences ------------------------------------------------------------------

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

