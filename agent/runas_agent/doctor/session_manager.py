"""`doctor`, Session Manager's links: the preferences that apply to this instance (Run As on, a default
user that exists) and the region they are read in; then what Run As leaves open: `runAsElevated` in the
preferences or in the account's own session documents, and the documents every permission set that
reaches the instances must deny (port forwarding and SSH never check the Run As user). That review is
`sessions.preferences.review_preferences`; the policy it renders is in docs/sessions.md.

The checks make read-only calls (shell); the verdicts are pure functions of the answers. Every failed
call is read through `aws.classify`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple


from runas_agent import aws
from runas_agent.core.ledger import Ledger
from runas_agent.doctor.check import NOTHING, Check, Facts, Verdict, failed, given, ok, plural, warning
from runas_agent.doctor.env import Env
from runas_agent.doctor.facts import (CONFIG, CREDENTIALS, DIRECTORY, LEDGER, PREFERENCES_CONTENT, RUN_AS_ENABLED,
                                      SSM_REGION, DirectoryRead, SsmRegion)
from runas_agent.sessions.preferences import PREFERENCES_DOCUMENT, PROBLEM, WARNING, Finding, Review, review_preferences
from runas_agent.settings import Config

#: The most session documents of the account that are read and reviewed (GetDocument each).
MAX_SESSION_DOCUMENTS = 50
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
    import botocore.session  # loaded when a check first needs AWS: a sync never does
    from botocore.utils import InstanceMetadataRegionFetcher

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
    provides = (RUN_AS_ENABLED, PREFERENCES_CONTENT)

    def run(self, facts: Facts, env: Env) -> Verdict:
        cfg, where = facts[CONFIG], facts[SSM_REGION]
        what = f"Session Manager preferences ({PREFERENCES_DOCUMENT} in {where.region}, from {where.why})"
        ssm = env.client(cfg, "ssm", where.region)
        from botocore.exceptions import BotoCoreError, ClientError

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
        return preferences_verdict(what, preferences, owner).giving(PREFERENCES_CONTENT, document["Content"])


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
                      TURN_RUN_AS_ON).giving(RUN_AS_ENABLED, False).withholding(PREFERENCES_CONTENT, "no Session Manager "
                                                                                                     "preferences are saved")
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



# --- what Run As leaves open ------------------------------------------------------------------------

@dataclass(frozen=True)
class SessionDocuments:
    """The account's own session documents (name -> content), as far as they could be read."""

    documents: Mapping[str, Any]
    #: why ListDocuments failed (None: listed)
    unlisted: Optional[aws.Failure] = None
    #: documents that were listed but could not be read, each with why
    unreadable: Tuple[str, ...] = ()
    #: how many more there were than were read
    left_out: int = 0


class RunAsBypass(Check):
    """runAsElevated in the preferences or in the account's session documents, and the documents a
    permission set must deny."""

    name = "session-documents"
    needs = (CONFIG, CREDENTIALS, SSM_REGION, PREFERENCES_CONTENT)

    def run(self, facts: Facts, env: Env) -> Verdict:
        ssm = env.client(facts[CONFIG], "ssm", facts[SSM_REGION].region)
        found = read_session_documents(ssm)
        return bypass_verdict(review_preferences(facts[PREFERENCES_CONTENT], found.documents), found, facts[CREDENTIALS])


def read_session_documents(ssm: Any, limit: int = MAX_SESSION_DOCUMENTS) -> SessionDocuments:
    """The session documents this account owns, other than the preferences, with their content."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        pages = ssm.get_paginator("list_documents").paginate(
            Filters=[{"Key": "DocumentType", "Values": ["Session"]}, {"Key": "Owner", "Values": ["Self"]}])
        names = sorted({d["Name"] for page in pages for d in page.get("DocumentIdentifiers") or []} - {PREFERENCES_DOCUMENT})
    except (ClientError, BotoCoreError) as exc:
        return SessionDocuments({}, unlisted=aws.classify(exc))
    documents: Dict[str, Any] = {}
    unreadable: List[str] = []
    for name in names[:limit]:
        try:
            documents[name] = ssm.get_document(Name=name, DocumentFormat="JSON").get("Content")
        except (ClientError, BotoCoreError) as exc:
            unreadable.append(f"{name}: {aws.classify(exc)}")
    return SessionDocuments(documents, None, tuple(unreadable), max(0, len(names) - limit))


def _open(review: Review) -> List[Finding]:
    """The findings that leave something open (Run As off is the session-preferences check's to report)."""
    return [f for f in review.findings if f.level in (PROBLEM, WARNING) and f.key != "inputs.runAsEnabled"]


def bypass_verdict(review: Review, found: SessionDocuments, principal: str) -> Verdict:
    """What the review found open, the documents to deny, and what could not be reviewed."""
    deny = ", ".join(review.deny_documents)
    details = [f"{f.key}: {f.message}" + (f" ({f.fix})" if f.fix else "") for f in _open(review)]
    details += _unreviewed(found, principal)
    remedy = (f"deny ssm:StartSession on {deny} in every permission set that reaches the instances (the policy: "
              "docs/doctor.md, What Run As does not cover), and keep runAsElevated out of session documents")
    if _open(review):
        return warning(f"{plural(len(_open(review)), 'finding')} on what Run As leaves open; permission sets must deny "
                       f"{deny}", remedy, details)
    if found.unlisted is None:
        reviewed = (f"runAsElevated is set in no session document ({PREFERENCES_DOCUMENT} and "
                    f"{plural(len(found.documents), 'other')} reviewed)")
    else:
        reviewed = f"runAsElevated is not set in {PREFERENCES_DOCUMENT} (the account's other session documents were not listed)"
    return ok(f"{reviewed}; port forwarding and SSH never check the Run As user: permission sets must deny {deny}",
              remedy, details)


def _unreviewed(found: SessionDocuments, principal: str) -> List[str]:
    notes = []
    if found.unlisted is not None:
        notes.append(f"the account's own session documents were not reviewed: ListDocuments: {found.unlisted}; allow "
                     f"ssm:ListDocuments to {principal}, or check by hand for documents of session type Port or with "
                     "runAsElevated")
    notes += [f"not reviewed: {what}" for what in found.unreadable]
    if found.left_out:
        notes.append(f"{plural(found.left_out, 'more session document')} not reviewed (the first "
                     f"{MAX_SESSION_DOCUMENTS} were)")
    return notes
