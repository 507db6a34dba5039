"""`doctor`, the AWS links every source type shares: the credentials and Identity Center's attributes
for access control (the SSMSessionRunAs expression). Session Manager's links are in `session_manager`;
a source type's own probes live on its class (`Source.probes`).

The checks make read-only calls (shell); the verdicts are pure functions of the answers.
"""

from __future__ import annotations

from typing import Any, Optional


from runas_agent.core.expression import ExpressionError, parse
from runas_agent.doctor.check import FAILED, NOTHING, WARNING, Check, Facts, Verdict, failed, given, ok
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import CONFIG, CREDENTIALS, EXPRESSION, HOME_REGION, LIVE_EXPRESSION
from runas_agent.identitycenter import (FROM_IDENTITY_CENTER, RUN_AS_KEY, AbacConfig, IdentityCenterError,
                                        expression_from, fetch_abac, with_expression)
from runas_agent.settings import Config
from runas_agent.sources import source_type

ABAC_CONSOLE = "IAM Identity Center -> Settings -> Attributes for access control"


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
    from botocore.config import Config as BotoConfig  # loaded when a check first needs AWS

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
