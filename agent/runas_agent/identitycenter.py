"""IAM Identity Center (shell: talks to sso-admin): which instance and Identity Store a host talks to,
and the instance's attributes for access control, whose SSMSessionRunAs is the live Run As expression
for `run_as.expression: from-identity-center` and for `doctor`.

Discovery: sso-admin ListInstances lists the instances visible in a region; `discover` picks the one
the configuration means (the only one, or the one whose Identity Store is configured) or says why
there is none. The Identity Store source, the ABAC reader and `doctor` all pick through it.

Identity Center turns each configured attribute into an STS session tag; Session Manager reads the
one keyed SSMSessionRunAs as the Run As user. `DescribeInstanceAccessControlAttributeConfiguration`
returns them as {"Key": "SSMSessionRunAs", "Value": {"Source": ["${path:userName}"]}}. A host allowed
to call it can follow the live expression instead of repeating it in its config.

Both the sync (`resolve_run_as`) and the doctor read it through `fetch_abac` and `expression_from`, so
they can never disagree about what Identity Center sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Optional

from runas_agent import aws
from runas_agent.core.expression import ExpressionError, parse
from runas_agent.errors import SourceError
from runas_agent.settings import Config, SourceSettings

#: The value of run_as.expression that means "read it from Identity Center at every sync".
FROM_IDENTITY_CENTER = "from-identity-center"
#: The session tag Session Manager takes the Run As user from.
RUN_AS_KEY = "SSMSessionRunAs"
DESCRIBE_ACTION = "sso:DescribeInstanceAccessControlAttributeConfiguration"
LIST_INSTANCES_ACTION = "sso:ListInstances"


class IdentityCenterError(SourceError):
    """Identity Center could not be read, its instance not be found, or its ABAC configuration has no
    usable SSMSessionRunAs attribute. `kind` says which (access_denied, not_found, no_instance,
    several_instances, unreachable, refused, not_enabled, no_key, bad_value) and `action` names the
    IAM action that was denied, if any."""

    def __init__(self, message: str, kind: str, action: str = ""):
        super().__init__(message)
        self.kind = kind
        self.action = action


#: The name this error had when only the ABAC reader raised it.
AbacError = IdentityCenterError


@dataclass(frozen=True)
class Instance:
    """One IAM Identity Center instance as sso-admin ListInstances shows it."""

    arn: str
    identity_store_id: str


def instances_from(records: Iterable[Mapping[str, Any]]) -> tuple[Instance, ...]:
    """The instances of ListInstances' `Instances` records (pure); records without both ids are left out."""
    return tuple(Instance(r["InstanceArn"], r["IdentityStoreId"]) for r in records
                 if isinstance(r.get("InstanceArn"), str) and isinstance(r.get("IdentityStoreId"), str))


def discover(instances: Iterable[Instance], region: Optional[str], setting: str,
             identity_store_id: Optional[str] = None) -> Instance:
    """The instance the configuration means (pure): the one whose store is `identity_store_id`, or
    the only one visible. IdentityCenterError (no_instance, several_instances) otherwise, telling to
    set `setting` (the key that would name it)."""
    found = sorted(set(i for i in instances if identity_store_id is None or i.identity_store_id == identity_store_id),
                   key=lambda i: (i.identity_store_id, i.arn))
    where = f"sso-admin ListInstances in {region}"
    store = f" for Identity Store {identity_store_id}" if identity_store_id else ""
    if not found:
        raise IdentityCenterError(f"{where} shows no IAM Identity Center instance{store}: set {setting}, and check that "
                                  "source.region is the Identity Center home region", "no_instance")
    if len(found) > 1:
        if setting == "source.identity_store_id":
            listed = f"several Identity Stores ({', '.join(sorted({i.identity_store_id for i in found}))})"
        else:
            listed = f"several instances{store} ({', '.join(sorted(i.arn for i in found))})"
        raise IdentityCenterError(f"{where} shows {listed}: set {setting} to the one to use", "several_instances")
    return found[0]


@dataclass(frozen=True)
class AbacConfig:
    """The instance's attributes for access control, as sso-admin describes them."""

    instance_arn: str
    #: ENABLED | CREATION_IN_PROGRESS | CREATION_FAILED
    status: str
    status_reason: str = ""
    #: attribute key -> its Source strings (the API allows one per key)
    attributes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def similar_keys(self, key: str = RUN_AS_KEY) -> list[str]:
        """Keys that differ from `key` only in case: a likely typo worth naming."""
        return sorted(k for k in self.attributes if k != key and k.lower() == key.lower())


def parse_abac(instance_arn: str, response: Mapping[str, Any]) -> AbacConfig:
    """An AbacConfig from a DescribeInstanceAccessControlAttributeConfiguration response (pure)."""
    attributes: dict[str, tuple[str, ...]] = {}
    configuration = response.get("InstanceAccessControlAttributeConfiguration") or {}
    for item in configuration.get("AccessControlAttributes") or []:
        if not isinstance(item, Mapping) or not isinstance(item.get("Key"), str):
            continue
        sources = (item.get("Value") or {}).get("Source") or []
        attributes[item["Key"]] = tuple(s for s in sources if isinstance(s, str))
    return AbacConfig(instance_arn, str(response.get("Status") or ""), str(response.get("StatusReason") or ""), attributes)


def expression_from(abac: AbacConfig) -> str:
    """The SSMSessionRunAs source string, or AbacError saying why there is none to follow."""
    if abac.status and abac.status != "ENABLED":
        reason = f": {abac.status_reason}" if abac.status_reason else ""
        return _raise(f"attributes for access control of {abac.instance_arn} are {abac.status}{reason}", "not_enabled")
    sources = abac.attributes.get(RUN_AS_KEY)
    if sources is None:
        similar = abac.similar_keys()
        hint = f" (there is {', '.join(similar)}: the key must be spelled exactly {RUN_AS_KEY})" if similar else ""
        return _raise(f"Identity Center {abac.instance_arn} has no {RUN_AS_KEY} attribute for access control{hint}", "no_key")
    if len(sources) != 1 or not sources[0]:
        return _raise(f"Identity Center's {RUN_AS_KEY} attribute has {len(sources)} source values; exactly one is expected",
                      "bad_value")
    return sources[0]


def _raise(message: str, kind: str) -> str:
    raise IdentityCenterError(message, kind)


def client(source_cfg: SourceSettings, session: Any = None, service: str = "sso-admin") -> Any:
    """A client for `service` in source.region, honouring source.endpoint_url like the Identity Store
    source does (one endpoint serves identitystore and sso-admin in tests and behind proxies)."""
    return aws.client(service, source_cfg, session=session)


def _failure(exc: Exception, what: str, action: str) -> IdentityCenterError:
    failure = aws.classify(exc)
    if failure.kind is aws.Kind.ACCESS_DENIED:
        return IdentityCenterError(f"{what}: access denied ({failure.message}); the instance role needs {action}",
                                   "access_denied", action)
    if failure.kind is aws.Kind.NOT_FOUND:
        return IdentityCenterError(f"{what}: not found ({failure.message})", "not_found")
    if failure.answered:
        return IdentityCenterError(f"{what}: {failure.code or 'error'}: {failure.message}", "refused")
    if failure.kind is aws.Kind.NO_CREDENTIALS:
        return IdentityCenterError(f"{what}: no AWS credentials ({failure.message})", "unreachable")
    return IdentityCenterError(f"{what}: {failure.message}", "unreachable")


def list_instances(sso_admin: Any) -> tuple[Instance, ...]:
    """Every instance sso-admin ListInstances shows, all pages; IdentityCenterError when it cannot."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        records = [i for page in sso_admin.get_paginator("list_instances").paginate() for i in page.get("Instances", [])]
    except (ClientError, BotoCoreError) as exc:
        raise _failure(exc, f"sso-admin ListInstances in {sso_admin.meta.region_name}", LIST_INSTANCES_ACTION) from None
    return instances_from(records)


def find_instance_arn(sso_admin: Any, identity_store_id: Optional[str] = None) -> str:
    """The Identity Center instance whose store is `identity_store_id`, or the only one visible."""
    instances = list_instances(sso_admin)
    return discover(instances, sso_admin.meta.region_name, "source.instance_arn", identity_store_id).arn


def fetch_abac(source_cfg: SourceSettings, sso_admin: Any) -> AbacConfig:
    """Read the attributes for access control of the configured (or the only) instance."""
    from botocore.exceptions import BotoCoreError, ClientError

    arn = source_cfg.instance_arn or find_instance_arn(sso_admin, source_cfg.identity_store_id)
    try:
        response = sso_admin.describe_instance_access_control_attribute_configuration(InstanceArn=arn)
    except (ClientError, BotoCoreError) as exc:
        failure = _failure(exc, f"sso-admin DescribeInstanceAccessControlAttributeConfiguration of {arn}", DESCRIBE_ACTION)
        if failure.kind == "not_found":
            # What the service answers for an instance without ABAC is UNCONFIRMED; a missing
            # configuration and a wrong instance ARN both land here, and the message says both.
            failure = IdentityCenterError(
                f"attributes for access control are not enabled on {arn}, or source.instance_arn names another "
                f"instance (DescribeInstanceAccessControlAttributeConfiguration: {aws.client_error(exc)[1]})",
                "not_enabled")
        raise failure from None
    return parse_abac(arn, response)


def resolve_run_as(cfg: Config, sso_admin: Any = None) -> Config:
    """`cfg` itself, or, with `run_as.expression: from-identity-center`, a copy holding the live
    SSMSessionRunAs expression. IdentityCenterError (a SourceError: the sync then changes nothing)
    when it cannot be read or is not one the agent can evaluate."""
    if cfg.run_as.expression != FROM_IDENTITY_CENTER:
        return cfg
    abac = fetch_abac(cfg.source, sso_admin or client(cfg.source))
    live = expression_from(abac)
    try:
        parse(live)
    except ExpressionError as exc:
        raise IdentityCenterError(f"Identity Center's {RUN_AS_KEY} value {live!r} {exc}", "bad_value") from None
    return with_expression(cfg, live)


def with_expression(cfg: Config, expression: str) -> Config:
    """`cfg` with run_as.expression replaced (e.g. by the live value)."""
    return replace(cfg, run_as=replace(cfg.run_as, expression=expression))
