"""`runas-agent doctor` (shell: reads AWS and the host, changes nothing): every link of the Run As
chain, checked from the instance, each reported ok / warning / failed with the remedy.

The chain, in the order it is shown:

    config -> credentials -> botocore -> Identity Store (reachable, permitted, UserStatus/Extensions)
    -> Identity Center ABAC (SSMSessionRunAs = run_as.expression) -> Session Manager preferences
    (runAsEnabled, runAsDefaultUser) -> identities (legal values) -> accounts (owned vs conflicts)
    -> SSM agent -> sudoers tree -> ssm-user's blanket sudo -> last sync

A check that cannot run because an earlier link is broken is `skipped`, naming that link. Nothing
here writes a file, changes an account or calls a mutating API; the directory is read and planned
exactly as `runas-agent plan` would, with the same functions (one implementation of every rule).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

from runas_agent import aws
from runas_agent import config as config_mod
from runas_agent.core.display import escaped
from runas_agent.exitcodes import Exit
from runas_agent.settings import Config
from runas_agent.sources import SourceType, source_type

log = logging.getLogger("runas_agent.doctor")

OK, WARNING, FAILED, SKIPPED = "ok", "warning", "failed", "skipped"
MARKS = {OK: "[ ok ]", WARNING: "[warn]", FAILED: "[FAIL]", SKIPPED: "[skip]"}

PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
SSM_AGENT = "amazon-ssm-agent"
#: IAM actions the sync needs on the Identity Store, and the managed policy that grants them.
READ_POLICY = "AWSSSODirectoryReadOnly"
#: A last sync older than this many scheduled intervals (interval + jitter) means the loop stopped.
STALE_INTERVALS = 3

#: The order checks are shown in: the Run As chain, from AWS to the host.
ORDER = ("config", "credentials", "botocore", "identitystore", "identitystore-fields", "abac",
         "session-preferences", "identities", "accounts", "ssm-agent", "sudoers", "ssm-user-sudo", "last-sync")


@dataclass
class Check:
    """The verdict on one link."""

    name: str
    status: str
    summary: str
    remedy: str = ""
    details: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "remedy": self.remedy,
                "details": list(self.details)}


def _default_processes() -> Iterable[Any]:
    import psutil

    return psutil.process_iter(["pid", "name", "exe", "cmdline", "uids"])


def _user_exists(name: str) -> bool:
    """Through NSS, as the SSM agent's `id <name>` resolves it."""
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@dataclass
class Probe:
    """Where and how the host is read. The defaults are the real host; tests point them elsewhere."""

    etc: str = "/etc"
    #: deb and rpm installs
    agent_binaries: tuple[str, ...] = ("/usr/bin/amazon-ssm-agent",)
    #: snap installs
    snap_dir: str = "/snap/amazon-ssm-agent"
    unit_dirs: tuple[str, ...] = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
    unit_names: tuple[str, ...] = ("amazon-ssm-agent.service", "snap.amazon-ssm-agent.amazon-ssm-agent.service")
    processes: Callable[[], Iterable[Any]] = _default_processes
    #: the last sync's journal record (a dict of its fields, REALTIME as epoch seconds), or None
    last_sync: Callable[[], dict[str, Any] | None] | None = None
    now: Callable[[], float] = time.time
    user_exists: Callable[[str], bool] = _user_exists
    run: Callable[..., Any] | None = None
    euid: Callable[[], int] = os.geteuid


def fields_verdict(raw_users: list[Mapping[str, Any]], parsed_users: list[Mapping[str, Any]],
                   wants_enterprise: bool) -> tuple[str, str, str]:
    """Whether UserStatus and Extensions arrive, from one ListUsers page as it came over the wire
    (`raw_users`) and as botocore parsed it (pure). Returns (status, summary, remedy)."""
    if not raw_users:
        return WARNING, "the Identity Store returned no users, so UserStatus and Extensions could not be seen", \
            "add users to Identity Center (the sync refuses an empty directory)"
    raw_status = sum(1 for u in raw_users if "UserStatus" in u)
    parsed_status = sum(1 for u in parsed_users if "UserStatus" in u)
    raw_ext = sum(1 for u in raw_users if u.get("Extensions"))
    parsed_ext = sum(1 for u in parsed_users if u.get("Extensions"))
    upgrade = ("install botocore>=1.43 and boto3>=1.43 into runas-agent's own environment "
               "(not the distribution's python3-botocore)")
    if raw_status and not parsed_status:
        return FAILED, f"botocore drops UserStatus: {raw_status} of {len(raw_users)} users have it on the wire, none after parsing", upgrade
    if not raw_status:
        return FAILED, (f"none of the {len(raw_users)} users on the first ListUsers page has UserStatus: disabled people "
                        "would look enabled"), ("check source.endpoint_url and any proxy in between: the Identity Store "
                                                "itself always sends UserStatus")
    if raw_ext and not parsed_ext:
        return FAILED, f"botocore drops Extensions: {raw_ext} users have enterprise attributes on the wire, none after parsing", upgrade
    summary = f"UserStatus arrives for {raw_status} of {len(raw_users)} users on the first page; {raw_ext} have enterprise attributes"
    if wants_enterprise and not raw_ext:
        return WARNING, ("no user on the first ListUsers page has enterprise attributes (Extensions), but "
                         "run_as.expression uses ${path:enterprise...}: their Run As value is empty"), \
            "fill the attribute in Identity Center (or in the identity provider that provisions it through SCIM)"
    return OK, summary, ""


class Doctor:
    """Runs every check once. `session` (boto3), `probe` and `ssm_region` are injectable."""

    def __init__(self, config_path: str, *, probe: Probe | None = None, session: Any = None,
                 ssm_region: str | None = None):
        self.config_path = config_path
        self.probe = probe or Probe()
        self._session = session
        self.ssm_region = ssm_region
        self.checks: dict[str, Check] = {}
        self.cfg: Optional[Config] = None
        #: the config with run_as.expression resolved (the live value for from-identity-center)
        self.resolved: Optional[Config] = None
        self.directory: Any = None
        #: the read as the sync admits it (sources/admission.py)
        self.admitted: Any = None
        self.desired: Any = None
        self.plan: Any = None
        self.ledger: Any = None
        #: one ListUsers page as it came over the wire and as botocore parsed it
        self._first_page: tuple[list, list] | None = None
        #: the principal of the credentials, e.g. "role runas-agent (account 123456789012)"
        self.role = ""
        #: runAsEnabled from the Session Manager preferences (None: not known)
        self.run_as_enabled: bool | None = None

    # -- plumbing ---------------------------------------------------------------------------------

    def add(self, name: str, status: str, summary: str, remedy: str = "", details: Iterable[str] = ()) -> Check:
        check = Check(name, status, summary, remedy, list(details))
        self.checks[name] = check
        return check

    def ok(self, name: str) -> bool:
        return name in self.checks and self.checks[name].status in (OK, WARNING)

    def skip(self, name: str, because: str) -> None:
        self.add(name, SKIPPED, f"not checked: {because}")

    @property
    def session(self) -> Any:
        if self._session is None:
            import boto3

            region = self.cfg.source.region if self.cfg is not None else None
            self._session = boto3.session.Session(region_name=region)
        return self._session

    def _client(self, service: str, region: str | None, endpoint_url: str | None = None) -> Any:
        from runas_agent import aws

        return aws.client(service, self.cfg.source, session=self.session, region=region,
                          endpoint_url=endpoint_url, attempts=2, agent="doctor")

    @property
    def principal(self) -> str:
        return self.role or "the instance role"

    @property
    def source_type(self) -> SourceType:
        """The class of the configured source type."""
        return source_type(self.cfg.source.type)

    @property
    def needs_aws(self) -> bool:
        from runas_agent.identitycenter import FROM_IDENTITY_CENTER

        return self.source_type.needs_aws_credentials or self.cfg.run_as.expression == FROM_IDENTITY_CENTER

    def _probed(self, name: str) -> bool:
        """Whether the link `name` probes the configured source type; if not, it is skipped saying so."""
        if name in self.source_type.probes:
            return True
        source = self.cfg.source
        reason = f"source.type is {source.type}"
        if name == "identitystore":
            reason += f" (the directory comes from {self.source_type.origin(source)})"
        elif name == "botocore":
            reason += ": no Identity Store calls"
        self.skip(name, reason)
        return False

    def run(self) -> list[Check]:
        self._safely("config", self.check_config)
        if self.cfg is not None:
            self._safely("credentials", self.check_credentials)
            self._safely("botocore", self.check_botocore)
            self._safely("identitystore", self.check_identitystore)
            self._safely("abac", self.check_abac)
            self._safely("identitystore-fields", self.check_fields)
            self._safely("identities", self.read_directory)
            self._safely("accounts", self.check_accounts)
            self._safely("session-preferences", self.check_preferences)
        else:
            for name in ORDER[1:9]:
                self.skip(name, "the configuration is invalid")
        self._safely("ssm-agent", self.check_ssm_agent)
        self._safely("sudoers", self.check_sudoers)
        self._safely("ssm-user-sudo", self.check_ssm_user_sudo)
        self._safely("last-sync", self.check_last_sync)
        return [self.checks[name] for name in ORDER if name in self.checks]

    def _safely(self, name: str, check: Callable[[], None]) -> None:
        """One check that raises is reported as failed; the report goes on."""
        try:
            check()
        except Exception as exc:  # a doctor that crashes on the broken host it is meant to diagnose helps nobody
            log.debug("check %s raised", name, exc_info=True)
            self.add(name, FAILED, f"the check itself failed: {type(exc).__name__}: {exc}",
                     "run with -v for details; this is a runas-agent bug or an unexpected host state")

    # -- config -----------------------------------------------------------------------------------

    def check_config(self) -> None:
        from runas_agent.errors import ConfigError

        try:
            self.cfg = config_mod.load(self.config_path)
        except ConfigError as exc:
            self.add("config", FAILED, f"{self.config_path} is not a valid configuration",
                     "fix each key listed, then check again with `runas-agent check-config`", exc.problems)
            return
        self.add("config", OK, f"{self.config_path} is valid (source {self.cfg.source.type}, "
                               f"run_as.expression {self.cfg.run_as.expression})")

    def _defaults(self) -> Config:
        """The configured values, or every default when the configuration is invalid (local checks
        then look where an unconfigured agent would)."""
        if self.cfg is not None:
            return self.cfg
        return config_mod.defaults()

    # -- AWS --------------------------------------------------------------------------------------

    def check_credentials(self) -> None:
        try:
            credentials = self.session.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except Exception as exc:  # botocore's credential providers raise a variety of errors
            credentials, frozen, problem = None, None, f"{type(exc).__name__}: {exc}"
        else:
            problem = "no credentials in the environment, shared files or instance metadata"
        if frozen is None or not frozen.access_key:
            status = FAILED if self.needs_aws else WARNING
            self.add("credentials", status, f"no usable AWS credentials ({problem})",
                     "attach an instance profile (an IAM role) to the instance; on EC2 check that the instance "
                     "metadata service is reachable (IMDSv2 hop limit 2 in containers)")
            return
        self.role = self._caller()
        who = f": {self.role}" if self.role else ""
        self.add("credentials", OK, f"AWS credentials resolve (from {credentials.method}){who}")

    def _caller(self) -> str:
        """The principal the credentials belong to, for naming it in remedies ("" when STS cannot say;
        GetCallerIdentity needs no permission, only a route to STS)."""
        from botocore.config import Config

        try:
            sts = self.session.client("sts", config=Config(
                region_name=self.cfg.source.region or self.session.region_name, connect_timeout=2, read_timeout=5,
                retries={"total_max_attempts": 1}))
            arn = sts.get_caller_identity().get("Arn") or ""
        except Exception:  # no route to STS: the remedies then say "the instance role"
            return ""
        parts = arn.split(":", 5)
        if len(parts) == 6 and parts[5].startswith("assumed-role/"):
            return f"role {parts[5].split('/')[1]} (account {parts[4]})"
        return arn

    def check_botocore(self) -> None:
        from runas_agent.errors import SourceError
        from runas_agent.sources.identitystore import check_botocore

        if not self._probed("botocore"):
            return
        import botocore

        try:
            check_botocore(self.session._session)
        except SourceError as exc:
            self.add("botocore", FAILED, str(exc), "install botocore>=1.43 and boto3>=1.43 into runas-agent's own "
                                                   "environment (the package's virtualenv), not python3-botocore")
            return
        self.add("botocore", OK, f"botocore {botocore.__version__} knows User.UserStatus and ListUsers Extensions")

    def _aws_ready(self, name: str) -> bool:
        if self.checks.get("credentials") is None or self.checks["credentials"].status != OK:
            self.skip(name, "no AWS credentials")
            return False
        return True

    def check_identitystore(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        from runas_agent.directory import ENTERPRISE_EXTENSION

        if not self._probed("identitystore"):
            self._probed("identitystore-fields")
            return
        if not self._aws_ready("identitystore"):
            self.skip("identitystore-fields", "no AWS credentials")
            return
        source = self.cfg.source
        region = source.region
        client = self._client("identitystore", region, source.endpoint_url)
        store = source.identity_store_id or self._discover_store()
        if store is None:
            self.skip("identitystore-fields", "the Identity Store id is unknown")
            return
        raw: dict[str, Any] = {}

        def keep_raw(http_response: Any = None, **_: Any) -> None:
            if http_response is not None and http_response.status_code == 200:
                try:
                    raw["ListUsers"] = json.loads(http_response.content or b"{}")
                except ValueError:
                    raw["ListUsers"] = {}

        client.meta.events.register("after-call.identitystore.ListUsers", keep_raw)
        list_users = {"IdentityStoreId": store, "MaxResults": 100}
        if "Extensions" in client.meta.service_model.operation_model("ListUsers").input_shape.members:
            list_users["Extensions"] = [ENTERPRISE_EXTENSION]
        denied: list[str] = []
        parsed_users: list[dict] = []
        calls = [("ListUsers", list_users), ("ListGroups", {"IdentityStoreId": store, "MaxResults": 100})]
        where = f"Identity Store {store} in {region}"
        index = 0
        while index < len(calls):
            operation, params = calls[index]
            index += 1
            try:
                response = getattr(client, _snake(operation))(**params)
            except ClientError as exc:
                failure = aws.classify(exc)
                if failure.kind is aws.Kind.ACCESS_DENIED:
                    denied.append(f"identitystore:{operation}" + (" (and kms:Decrypt via identitystore)" if "kms" in failure.message.lower() else ""))
                    continue
                self.add("identitystore", FAILED, f"{where}: {operation}: {failure.code}: {failure.message}",
                         _store_remedy(failure, region))
                self.skip("identitystore-fields", "the Identity Store is not readable")
                return
            except ParamValidationError as exc:
                self.add("identitystore", FAILED, f"{where}: {operation} cannot even be sent: {exc}",
                         "install botocore>=1.43 into runas-agent's environment")
                self.skip("identitystore-fields", "the Identity Store is not readable")
                return
            except BotoCoreError as exc:
                self.add("identitystore", FAILED, f"cannot reach the Identity Store in {region}: {exc}",
                         f"allow outbound HTTPS to identitystore.{region}.amazonaws.com (or an interface VPC endpoint), "
                         "and check source.region is the Identity Center home region")
                self.skip("identitystore-fields", "the Identity Store is not reachable")
                return
            if operation == "ListUsers":
                parsed_users = list(response.get("Users") or [])
            if operation == "ListGroups" and response.get("Groups"):
                group_id = response["Groups"][0].get("GroupId")
                calls.append(("ListGroupMemberships", {"IdentityStoreId": store, "GroupId": group_id, "MaxResults": 100}))
        if denied:
            self.add("identitystore", FAILED, f"{where}: access denied to {', '.join(denied)}",
                     f"allow {', '.join(a.split(' ')[0] for a in denied)} to {self.principal} (the AWS managed policy "
                     f"{READ_POLICY} grants identitystore:List*, Describe* and GetUserId)")
            if any(a.startswith("identitystore:ListUsers") for a in denied):
                self.skip("identitystore-fields", "ListUsers is denied")
                return
        else:
            read = ", ".join(op for op, _ in calls)
            self.add("identitystore", OK, f"{where} answers {read}")
        self._first_page = (raw.get("ListUsers", {}).get("Users") or [], parsed_users)

    def check_fields(self) -> None:
        """After abac: whether enterprise attributes matter depends on the expression in force."""
        from runas_agent.core.expression import parse

        if self._first_page is None:
            return
        config = self.resolved or self.cfg
        try:
            wants_enterprise = any(p.startswith("enterprise.") for p in parse(config.run_as.expression).paths)
        except ValueError:  # from-identity-center that could not be read: the abac check says so
            wants_enterprise = False
        status, summary, remedy = fields_verdict(*self._first_page, wants_enterprise)
        self.add("identitystore-fields", status, summary, remedy)

    def _discover_store(self) -> Optional[str]:
        from runas_agent.identitycenter import IdentityCenterError, discover, list_instances

        source = self.cfg.source
        sso_admin = self._client("sso-admin", source.region, source.endpoint_url)
        try:
            instances = list_instances(sso_admin)
        except IdentityCenterError as exc:
            remedy = "set source.identity_store_id"
            if exc.action:
                remedy += f", or allow {exc.action} to {self.principal}"
            self.add("identitystore", FAILED, f"source.identity_store_id is not set and {exc}", remedy)
            return None
        try:
            return discover(instances, source.region, "source.identity_store_id").identity_store_id
        except IdentityCenterError as exc:
            self.add("identitystore", FAILED, str(exc),
                     "set source.identity_store_id (and check source.region is the Identity Center home region)")
            return None

    def check_abac(self) -> None:
        from runas_agent.core.expression import ExpressionError, parse
        from runas_agent.identitycenter import (FROM_IDENTITY_CENTER, RUN_AS_KEY, AbacError, expression_from, fetch_abac,
                                                with_expression)

        live = self.cfg.run_as.expression == FROM_IDENTITY_CENTER
        written = self.cfg.run_as.expression
        if not live:
            self.resolved = self.cfg
        if not self.cfg.source.region:
            self.skip("abac", "source.region is not set (the Identity Center home region, where sso-admin answers)")
            return
        if not self._aws_ready("abac"):
            return
        sso_admin = self._client("sso-admin", self.cfg.source.region, self.cfg.source.endpoint_url)
        add_value = f"key {RUN_AS_KEY}, value {written if not live else '${path:userName} (or the attribute you chose)'}"
        console = "IAM Identity Center -> Settings -> Attributes for access control"
        try:
            abac = fetch_abac(self.cfg.source, sso_admin)
        except AbacError as exc:
            if exc.kind == "not_enabled":
                self.add("abac", FAILED, str(exc),
                         f"{console} -> Enable, then add {add_value}")
                return
            # Reading ABAC needs rights a member account's instance role usually lacks: only fatal when
            # the sync itself depends on reading it.
            remedy = (f"allow {exc.action} to {self.principal}" if exc.action else "set source.instance_arn")
            if not live:
                remedy += f", or check by hand in {console} that {RUN_AS_KEY} is {written}"
            self.add("abac", FAILED if live else WARNING, f"cannot read Identity Center's attributes for access control: {exc}", remedy)
            return
        try:
            value = expression_from(abac)
        except AbacError as exc:
            status = WARNING if abac.status == "CREATION_IN_PROGRESS" else FAILED
            self.add("abac", status, str(exc), f"{console}: add {add_value}")
            return
        if live:
            try:
                parse(value)
            except ExpressionError as error:
                self.add("abac", FAILED, f"Identity Center's {RUN_AS_KEY} is {value!r}, which {error}",
                         f"{console}: use one of the documented ${{path:...}} attributes")
                return
            self.resolved = with_expression(self.cfg, value)
            self.add("abac", OK, f"{RUN_AS_KEY} = {value} (read live at every sync: run_as.expression is {FROM_IDENTITY_CENTER})")
            return
        if value != written:
            self.add("abac", FAILED, f"Identity Center sends {RUN_AS_KEY} = {value}, but run_as.expression is {written}: "
                                     "accounts would be named after values nobody logs in as",
                     f"set run_as.expression: {value!r} (or {FROM_IDENTITY_CENTER} to follow it), or change {RUN_AS_KEY} "
                     f"in {console}")
            return
        self.add("abac", OK, f"{RUN_AS_KEY} = {value} in {abac.instance_arn}, as run_as.expression says")

    def _ssm_region(self) -> tuple[str | None, str]:
        """The region whose Session Manager preferences apply to this instance: --ssm-region, else the
        environment's or profile's region, else the instance's (metadata), else source.region."""
        import botocore.session

        if self.ssm_region:
            return self.ssm_region, "--ssm-region"
        region = botocore.session.Session().get_config_variable("region")
        if region:
            return region, "the AWS region of the environment"
        try:
            from botocore.utils import InstanceMetadataRegionFetcher

            region = InstanceMetadataRegionFetcher(timeout=1, num_attempts=1).retrieve_region()
        except Exception:  # no metadata service: the fallback below says so
            region = None
        if region:
            return region, "the instance's region"
        return self.cfg.source.region, "source.region (the instance's own region is unknown: pass --ssm-region)"

    def check_preferences(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self._aws_ready("session-preferences"):
            return
        region, why = self._ssm_region()
        if not region:
            self.skip("session-preferences", "no region for Session Manager: pass --ssm-region")
            return
        ssm = self._client("ssm", region)
        where = f"Session Manager preferences ({PREFERENCES_DOCUMENT} in {region}, from {why})"
        console = "Systems Manager -> Session Manager -> Preferences -> Edit"
        try:
            document = ssm.get_document(Name=PREFERENCES_DOCUMENT, DocumentFormat="JSON")
        except ClientError as exc:
            failure = aws.classify(exc)
            code, message = failure.code, failure.message
            if code == "InvalidDocument":
                self.run_as_enabled = False
                self.add("session-preferences", FAILED, f"{where}: none are saved, so Run As is off and every session "
                                                        "lands in ssm-user",
                         f"{console}: tick 'Enable Run As support for Linux instances' and save")
            elif failure.kind is aws.Kind.ACCESS_DENIED:
                self.add("session-preferences", WARNING, f"{where}: cannot be read ({code}: {message})",
                         f"allow ssm:GetDocument on document/{PREFERENCES_DOCUMENT} to {self.principal}, or check "
                         f"by hand that Run As is enabled in {console}")
            else:
                self.add("session-preferences", WARNING, f"{where}: {code}: {message}")
            return
        except BotoCoreError as exc:
            self.add("session-preferences", WARNING, f"{where}: cannot be read: {exc}",
                     f"allow outbound HTTPS to ssm.{region}.amazonaws.com")
            return
        try:
            inputs = json.loads(document.get("Content") or "{}").get("inputs") or {}
        except (ValueError, AttributeError):
            self.add("session-preferences", FAILED, f"{where}: the document is not JSON with an `inputs` object",
                     f"{console}: save the preferences again")
            return
        enabled = inputs.get("runAsEnabled")
        self.run_as_enabled = enabled is True or (isinstance(enabled, str) and enabled.lower() == "true")
        default = inputs.get("runAsDefaultUser") if isinstance(inputs.get("runAsDefaultUser"), str) else ""
        if not self.run_as_enabled:
            self.add("session-preferences", FAILED, f"{where}: runAsEnabled is {json.dumps(enabled)}: Session Manager "
                                                    "ignores SSMSessionRunAs and every session lands in ssm-user",
                     f"{console}: tick 'Enable Run As support for Linux instances' and save")
            return
        if not default:
            self.add("session-preferences", WARNING, f"{where}: Run As is on, but runAsDefaultUser is empty: people "
                                                     "without an SSMSessionRunAs value get no shell",
                     f"{console}: set 'Linux shell profile' default Run As user to an account that exists on every instance")
            return
        managed = self._managed_names()
        if default in managed:
            self.add("session-preferences", OK, f"{where}: Run As on; the default user {default} is managed by runas-agent")
        elif self.probe.user_exists(default):
            self.add("session-preferences", OK, f"{where}: Run As on; the default user {default} exists on this host")
        else:
            self.add("session-preferences", FAILED, f"{where}: Run As on, but the default user {default} does not exist "
                                                    f"on this host: people without a Run As value get "
                                                    f"'RunAs user {default} does not exist'",
                     f"create the account {default} on every instance (e.g. in the image), or set the default Run As "
                     f"user in {console} to one that exists")

    def _managed_names(self) -> set[str]:
        names: set[str] = set()
        if self.desired is not None:
            names |= set(self.desired.accounts)
        if self.ledger is not None:
            names |= set(self.ledger.accounts)
        return names

    # -- the directory, the identities and the accounts -------------------------------------------

    def read_directory(self) -> None:
        from runas_agent.core.desired import compute
        from runas_agent.settings import desired_settings
        from runas_agent.sync import name_rules

        if self.resolved is None:
            self.skip("identities", "the live run_as expression could not be read (see abac)")
            return
        if "identitystore" in self.source_type.probes and not self.ok("identitystore"):
            self.skip("identities", "the Identity Store is not readable (see identitystore)")
            return
        self.admitted = self._admitted_read()
        if self.admitted is None:
            return
        self.directory = self.admitted.directory
        rules = name_rules(self.resolved, self.probe.etc)
        self.desired = compute(self.directory, desired_settings(self.resolved, rules))
        enabled = sum(1 for u in self.directory.users if u.enabled)
        summary = (f"{enabled} enabled of {_n(len(self.directory.users), 'user')} map to {_n(len(self.desired.accounts), 'account')} "
                   f"with {self.resolved.run_as.expression} ({rules.family} name rules)")
        if self.desired.missing_scope_groups:
            self.add("identities", FAILED, f"scope.groups names {', '.join(self.desired.missing_scope_groups)}, which the "
                                           "directory does not have: the sync refuses to run",
                     "fix scope.groups (DisplayName or GroupId of an Identity Store group)")
            return
        skips = list(self.desired.skips)
        if skips:
            self.add("identities", WARNING, f"{summary}; {len(skips)} cannot get an account",
                     "these people cannot start a Run As session: change the attribute in Identity Center to a value "
                     "that is a legal session tag and account name, or give them another way in",
                     [str(s) for s in skips])
            return
        self.add("identities", OK, summary)

    def _admitted_read(self) -> Any:
        """The directory read and admitted as the sync would (sources.admission); None, with the
        identities link failed, when the sync could not read or would not believe it."""
        from runas_agent.errors import AgentError, UntrustedError
        from runas_agent.host.files import StateDir
        from runas_agent.sources.admission import admit

        try:
            source = self._source()
            fetched = source.fetch()
            return admit(self.resolved, fetched.directory, StateDir(self.resolved.state_dir).snapshot_path,
                         source.describe())
        except UntrustedError as exc:
            self.add("identities", FAILED, f"the directory cannot be believed: {exc}",
                     "the sync refuses it too and changes nothing until this is fixed")
        except AgentError as exc:
            self.add("identities", FAILED, f"the directory could not be read completely: {exc}",
                     "the sync cannot read it either and changes nothing until this is fixed")
        return None

    def _source(self) -> Any:
        session = self.session if self.source_type.needs_aws_credentials else None
        return self.source_type.from_settings(self.cfg.source, session=session)

    def check_accounts(self) -> None:
        from runas_agent.core.desired import Skip
        from runas_agent.core.plan import owned_state
        from runas_agent.errors import AgentError
        from runas_agent.host.accounts import read_host
        from runas_agent.host.files import StateDir
        from runas_agent.host.observe import observe
        from runas_agent.sync import compute_plan

        state = StateDir(self.cfg.state_dir)
        try:
            self.ledger = state.load_ledger()
        except AgentError as exc:
            self.add("accounts", FAILED, str(exc), f"restore {state.ledger_path} from a backup; the sync will not run without it")
            return
        except OSError as exc:
            self.add("accounts", WARNING, f"cannot read {state.ledger_path}: {exc.strerror}", "run the doctor as root")
            return
        host = read_host(self.probe.etc)
        states: dict[str, int] = {}
        changed: list[str] = []
        for name, owned in sorted(self.ledger.accounts.items()):
            kind, user = owned_state(owned, host)
            states[kind] = states.get(kind, 0) + 1
            if kind == "changed":
                changed.append(f"{name}: changed by hand ({user.name} uid={user.uid}); left alone")
            elif kind == "missing":
                changed.append(f"{name}: removed from the host by hand")
        owned_text = (f"runas-agent owns {_n(len(self.ledger.accounts), 'account')} "
                      f"({', '.join(f'{n} {k}' for k, n in sorted(states.items())) or 'none yet'})")
        if self.desired is None:
            status = WARNING if changed else OK
            self.add("accounts", status, f"{owned_text}; conflicts unknown (the directory was not read)", "", changed)
            return
        observation = observe(self.resolved, self.probe.etc)
        _, self.plan = compute_plan(self.resolved, self.directory, observation)
        self.plan = self.admitted.judge(self.plan, observation.ledger, force=False)
        own_skips = {(s.identity, s.name, s.reason) for s in self.desired.skips}
        conflicts = [s for s in self.plan.skips if (s.identity, s.name, s.reason) not in own_skips and isinstance(s, Skip)]
        pending = len(self.plan.actions)
        summary = f"{owned_text}; {_n(len(conflicts), 'conflict')}; the next sync would make {_n(pending, 'change')}"
        details = [f"conflict: {s}" for s in conflicts] + changed + [f"warning: {w}" for w in self.plan.warnings]
        self._add_accounts(summary, details, self._departed_but_held(host), bool(conflicts or changed))

    def _add_accounts(self, summary: str, details: list[str], held: list[str], conflicted: bool) -> None:
        """The accounts check's verdict: held departures fail, then refusals; conflicts warn."""
        if held:
            self.add("accounts", FAILED, f"{summary}; {_n(len(held), 'account')} of people who are gone still "
                                         "resolve, held by running processes",
                     "end the processes named below (the person's sessions or jobs); the next sync then parks the "
                     "account, or run `runas-agent --once` now", held + details)
        elif self.plan.refusals:
            self.add("accounts", FAILED, f"{summary}; the next sync will be refused",
                     "see why below; fix the directory or the safety settings, or run `runas-agent --once --force` "
                     "if the change is meant", details + [f"refused: {r}" for r in self.plan.refusals])
        elif conflicted:
            self.add("accounts", WARNING, summary,
                     "an account or group with a wanted name already exists and is not runas-agent's: rename or remove "
                     "it (the agent never takes one over), or change the person's Run As value", details)
        else:
            self.add("accounts", OK, summary, "", details)

    def _departed_but_held(self, host: Any) -> list[str]:
        """The accounts the plan disables (their people are gone or disabled) while processes still
        run as them: the SSM agent would start a session as such an account (`id NAME` works), and
        the park that stops it waits for them."""
        from runas_agent.core.plan import DisableAccount

        leaving = {a.uid: a for a in self.plan.of(DisableAccount)}
        out = []
        for uid, processes in sorted(self._processes_of(set(leaving)).items()):
            action = leaving[uid]
            user = host.users.get(action.name)
            owned = self.ledger.accounts.get(action.name) if self.ledger else None
            who = (user.comment if user else "") or ", ".join(owned.identities if owned else ())
            more = f" and {len(processes) - 5} more" if len(processes) > 5 else ""
            out.append(f"{action.name} (uid {uid}; {who}) still resolves although {action.reason}: "
                       f"{', '.join(processes[:5])}{more} run as it")
        return out

    def _processes_of(self, uids: set[int]) -> dict[int, list[str]]:
        """`pid 123 (sleep)` of each process running as one of `uids` (real or effective)."""
        holders: dict[int, list[str]] = {}
        if not uids:
            return holders
        for process in self.probe.processes():
            info = getattr(process, "info", None) or {}
            ids = info.get("uids")
            for uid in {getattr(ids, "real", None), getattr(ids, "effective", None)} & uids:
                holders.setdefault(uid, []).append(f"pid {info.get('pid')} ({info.get('name') or '?'})")
        return holders

    # -- the host ---------------------------------------------------------------------------------

    def check_ssm_agent(self) -> None:
        probe = self.probe
        kinds = []
        if any(os.path.exists(path) for path in probe.agent_binaries):
            kinds.append("deb/rpm")
        if os.path.isdir(probe.snap_dir):
            kinds.append("snap")
        units = [os.path.join(d, n) for d in probe.unit_dirs for n in probe.unit_names if os.path.exists(os.path.join(d, n))]
        running = []
        for process in probe.processes():
            info = getattr(process, "info", None) or {}
            names = {info.get("name") or ""}
            names |= {os.path.basename(info.get("exe") or "")}
            cmdline = info.get("cmdline") or []
            if cmdline:
                names.add(os.path.basename(cmdline[0]))
            if SSM_AGENT in names:
                running.append(str(info.get("pid")))
        if not kinds:
            self.add("ssm-agent", FAILED, "the SSM agent is not installed (no /usr/bin/amazon-ssm-agent, no snap)",
                     "install amazon-ssm-agent (the AWS deb/rpm, or `snap install amazon-ssm-agent --classic`)")
            return
        unit_text = f"; unit {', '.join(units)}" if units else "; no systemd unit file found"
        if not running:
            self.add("ssm-agent", FAILED, f"the SSM agent is installed ({', '.join(kinds)}) but not running{unit_text}",
                     "systemctl enable --now amazon-ssm-agent (snap: snap start --enable amazon-ssm-agent)")
            return
        self.add("ssm-agent", OK, f"the SSM agent is installed ({', '.join(kinds)}) and running (pid {', '.join(running)}){unit_text}")

    def _run(self, argv: list[str]) -> Any:
        from runas_agent.host import subp

        return (self.probe.run or subp.run)(argv, ok=tuple(range(256)), timeout=30)

    def check_sudoers(self) -> None:
        from runas_agent.core import sudoers as core
        from runas_agent.errors import CommandError

        cfg = self._defaults()
        if self.probe.euid() != 0:
            self.skip("sudoers", "`visudo -c` reads files only root may read: run the doctor as root")
            return
        try:
            result = self._run([cfg.sudo.visudo, "-c"])
        except CommandError as exc:
            status = FAILED if cfg.sudo.rules else WARNING
            self.add("sudoers", status, f"cannot check the sudoers tree: {exc}",
                     "install sudo (it brings visudo), or set sudo.visudo to its path")
            return
        ignored = []
        try:
            names = sorted(os.listdir(cfg.sudo.sudoers_dir))
        except OSError:
            names = []
        for name in names:
            if name.startswith(core.TEMP_PREFIX):
                continue
            if "." in name or name.endswith("~"):
                ignored.append(f"sudo ignores {os.path.join(cfg.sudo.sudoers_dir, name)}: #includedir skips names "
                               "containing '.' or ending in '~'")
        output = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        if result.returncode != 0:
            problems = [line for line in output if not line.rstrip().endswith("parsed OK")]
            self.add("sudoers", FAILED, "the sudoers tree fails `visudo -c`: sudo refuses to run for everyone",
                     "fix or remove the file visudo names (as root: `visudo -c`, then `visudo -cf FILE` for one file); "
                     "while visudo cannot say which file is broken, runas-agent writes no drop-in (it still removes its own)", problems + ignored)
            return
        if ignored:
            self.add("sudoers", WARNING, "the sudoers tree passes `visudo -c`, but some drop-ins are never read",
                     "rename them without '.' and '~' if they are meant to apply", ignored)
            return
        self.add("sudoers", OK, f"the sudoers tree passes `visudo -c` ({_n(len(output), 'file')} parsed)")

    def check_ssm_user_sudo(self) -> None:
        from runas_agent.core import sudoers as core
        from runas_agent.host.files import read_bytes

        cfg = self._defaults()
        path = os.path.join(cfg.sudo.sudoers_dir, core.SSM_USER_FILE)
        try:
            data = read_bytes(path)
        except OSError as exc:
            self.add("ssm-user-sudo", WARNING, f"cannot read {path}: {exc.strerror}")
            return
        exists = self.probe.user_exists(core.SSM_USER)
        account = "the ssm-user account exists" if exists else "there is no ssm-user account"
        if data is None:
            self.add("ssm-user-sudo", OK, f"{path} is absent: ssm-user has no blanket sudo ({account})")
            return
        content = data.decode("utf-8", "surrogateescape")
        if not core.is_ssm_blanket(content):
            self.add("ssm-user-sudo", WARNING, f"{path} exists but grants more than ssm-user: left alone by runas-agent",
                     "review it by hand", core.rule_lines(content))
            return
        if cfg.sudo.remove_ssm_user_blanket:
            self.add("ssm-user-sudo", WARNING, f"{path} still gives ssm-user blanket sudo ({account}); "
                                               "sudo.remove_ssm_user_blanket is set, so the next sync removes it",
                     "run `runas-agent --once` now, and check the last sync's result if it stays")
            return
        grant = f"{path} gives ssm-user {' '.join(core.rule_lines(content))} ({account})"
        if self.run_as_enabled is False:
            self.add("ssm-user-sudo", WARNING, f"{grant}, and Run As is off: every session lands in ssm-user and is root",
                     "turn Run As on first (see session-preferences), then set sudo.remove_ssm_user_blanket: true")
            return
        self.add("ssm-user-sudo", WARNING, f"{grant}: whoever still lands in ssm-user is root",
                 "set sudo.remove_ssm_user_blanket: true once Run As works (the agent backs the file up, then removes it)")

    def check_last_sync(self) -> None:
        cfg = self._defaults()
        reader = self.probe.last_sync or read_last_sync
        try:
            record = reader()
        except Exception as exc:  # a journal that cannot be opened is a finding, not a crash
            record, problem = None, f"the journal could not be read ({type(exc).__name__}: {exc})"
        else:
            problem = "no sync is recorded in the journal"
            if self.probe.euid() != 0:
                problem += " (as a user outside the systemd-journal group, the journal may hide it: run as root)"
        if record is None:
            from runas_agent.host.files import StateDir

            state = StateDir(cfg.state_dir)
            seen = [p for p in (state.ledger_path, state.snapshot_path) if os.path.exists(p)]
            note = ""
            if seen:
                newest = max(os.path.getmtime(p) for p in seen)
                note = f"; the state in {cfg.state_dir} last changed {_ago(self.probe.now() - newest)} ago"
            self.add("last-sync", WARNING, f"{problem}{note}",
                     "start the service (`systemctl enable --now runas-agent`) and look at `journalctl -u runas-agent`")
            return
        result = record.get("SYNC_RESULT", "")
        when = record.get("REALTIME")
        age = self.probe.now() - when if when else None
        ago = f"{_ago(age)} ago" if age is not None else "at an unknown time"
        counts = ", ".join(f"{record[k]} {k[5:].lower()}" for k in ("SYNC_CREATED", "SYNC_ENABLED", "SYNC_DISABLED",
                                                                     "SYNC_SKIPPED", "SYNC_FAILED") if record.get(k) not in (None, ""))
        text = f"last sync {ago}: {result}" + (f" ({counts})" if counts else "")
        if record.get("SYNC_ERROR"):
            text += f": {record['SYNC_ERROR']}"
        if record.get("SYNC_REFUSALS"):
            text += f": {record['SYNC_REFUSALS']}"
        limit = STALE_INTERVALS * (cfg.daemon.interval_seconds + cfg.daemon.jitter_seconds)
        if result == "failed":
            self.add("last-sync", FAILED, text, "the accounts are left as they were; fix the cause named above "
                                                "(this report's Identity Store checks usually show it)")
        elif result == "refused":
            self.add("last-sync", FAILED, text, "nothing changes until a person decides: fix the directory, or run "
                                                "`runas-agent --once --force` if the change is meant")
        elif age is not None and age > limit:
            self.add("last-sync", WARNING, f"{text}; that is longer than {STALE_INTERVALS} sync intervals",
                     "check that the service runs: `systemctl status runas-agent`")
        elif result in ("partial", "busy"):
            self.add("last-sync", WARNING, text, "see the identities and accounts checks for who was skipped, and "
                                                 "`journalctl -u runas-agent` for failed actions")
        else:
            self.add("last-sync", OK, text)


def _store_remedy(failure: aws.Failure, region: str) -> str:
    if failure.kind is aws.Kind.NOT_FOUND:
        return f"check source.identity_store_id, and that {region} (source.region) is the Identity Center home region"
    if failure.kind is aws.Kind.BAD_CREDENTIALS:
        return "the credentials were rejected: check the instance profile, the clock (signatures expire) and AWS_* variables"
    return ""


def _snake(operation: str) -> str:
    from botocore import xform_name

    return xform_name(operation)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def read_last_sync(limit: int = 50) -> dict[str, Any] | None:
    """The newest sync record the daemon wrote to the journal (abandoned syncs skipped), or None."""
    try:
        from systemd import journal
    except ImportError:
        return None
    from runas_agent.daemon import MESSAGE_SYNC, MESSAGE_SYNC_FAILED

    reader = journal.Reader()
    try:
        reader.add_match(MESSAGE_ID=MESSAGE_SYNC.hex)
        reader.add_disjunction()
        reader.add_match(MESSAGE_ID=MESSAGE_SYNC_FAILED.hex)
        reader.seek_tail()
        for _ in range(limit):
            entry = reader.get_previous()
            if not entry:
                return None
            if entry.get("SYNC_RESULT") in (None, "abandoned"):
                continue
            record = {k: str(v) for k, v in entry.items() if k.startswith("SYNC_")}
            stamp = entry.get("__REALTIME_TIMESTAMP")
            record["REALTIME"] = stamp.timestamp() if stamp is not None else None
            return record
        return None
    finally:
        reader.close()


# --- output ---------------------------------------------------------------------------------------

def counts(checks: list[Check]) -> dict[str, int]:
    out = {OK: 0, WARNING: 0, FAILED: 0, SKIPPED: 0}
    for check in checks:
        out[check.status] += 1
    return out


def render(checks: list[Check], config_path: str) -> str:
    width = max((len(c.name) for c in checks), default=0)
    lines = [f"runas-agent doctor ({config_path})"]
    for check in checks:
        lines.append(f"{MARKS[check.status]} {check.name.ljust(width)}  {check.summary}")
        pad = " " * (len(MARKS[OK]) + 1 + width + 2)
        for detail in check.details:
            lines.append(f"{pad}- {detail}")
        if check.remedy and check.status != OK:
            lines.append(f"{pad}-> {check.remedy}")
    c = counts(checks)
    lines.append(f"{_n(len(checks), 'check')}: {c[OK]} ok, {_n(c[WARNING], 'warning')}, {c[FAILED]} failed, {c[SKIPPED]} skipped")
    return "\n".join(escaped(line) for line in lines)  # a directory value never steers the terminal


def exit_status(checks: list[Check]) -> Exit:
    return Exit.UNHEALTHY if any(c.status == FAILED for c in checks) else Exit.OK


def cmd_doctor(args: argparse.Namespace) -> Exit:
    doctor = Doctor(args.config, ssm_region=args.ssm_region)
    checks = doctor.run()
    if args.json:
        json.dump({"config": args.config, "checks": [c.to_json() for c in checks], "counts": counts(checks),
                   "healthy": exit_status(checks) == Exit.OK}, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(render(checks, args.config))
    return exit_status(checks)


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor", help="check every link of the Run As chain from this host and say how to fix what is broken; "
                       "changes nothing (exit 0: nothing failed, 5: something failed)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--ssm-region", metavar="REGION",
                   help="region whose Session Manager preferences apply to this instance (default: the instance's)")
    p.set_defaults(func=cmd_doctor, needs_config=False)
