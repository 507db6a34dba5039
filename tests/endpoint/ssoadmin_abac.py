"""moto 5.2.1's sso-admin, extended with attributes for access control (ABAC), which moto does not
implement: Create-, Describe-, Update- and DeleteInstanceAccessControlAttributeConfiguration.

Importing this module registers the extended response class into tests.endpoint.extension.RESPONSES,
so an Endpoint started afterwards serves it; responses pass through the endpoint's middleware like
every sso-admin call (counted, faults injectable, checked against botocore's model). The
configuration is kept on moto's per-region sso-admin backend, so resetting the endpoint forgets it.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import JsonRESTError
from moto.ssoadmin.models import ssoadmin_backends
from moto.ssoadmin.responses import SSOAdminResponse

from tests.endpoint import extension


class _Error(JsonRESTError):
    """An sso-admin error with the members botocore's model gives it (`Message`, not moto's `message`)."""

    code = 400

    def __init__(self, error_type: str, message: str):
        super().__init__(error_type, message)
        self.description = json.dumps({"__type": error_type, "Message": message})


def _configs(backend: Any) -> dict[str, dict[str, Any]]:
    """instance ARN -> {"Status", "StatusReason", "Attributes"} on one backend."""
    configs = getattr(backend, "runas_abac", None)
    if configs is None:
        configs = backend.runas_abac = {}
    return configs


def _check_instance(backend: Any, arn: str) -> None:
    if not any(i.instance_arn == arn for i in backend.instances):
        raise _Error("ResourceNotFoundException", f"Instance {arn} not found")


class ExtendedSSOAdminResponse(SSOAdminResponse):
    def _attributes(self) -> list[dict[str, Any]]:
        configuration = self._get_param("InstanceAccessControlAttributeConfiguration") or {}
        return list(configuration.get("AccessControlAttributes") or [])

    def create_instance_access_control_attribute_configuration(self) -> str:
        arn = self._get_param("InstanceArn")
        _check_instance(self.ssoadmin_backend, arn)
        configs = _configs(self.ssoadmin_backend)
        if arn in configs:
            raise _Error("ConflictException", "Attributes for access control are already enabled for this instance")
        configs[arn] = {"Status": "ENABLED", "Attributes": self._attributes()}
        return "{}"

    def update_instance_access_control_attribute_configuration(self) -> str:
        arn = self._get_param("InstanceArn")
        _check_instance(self.ssoadmin_backend, arn)
        configs = _configs(self.ssoadmin_backend)
        if arn not in configs:
            raise _Error("ResourceNotFoundException", "Attributes for access control are not enabled for this instance")
        configs[arn]["Attributes"] = self._attributes()
        return "{}"

    def delete_instance_access_control_attribute_configuration(self) -> str:
        arn = self._get_param("InstanceArn")
        _check_instance(self.ssoadmin_backend, arn)
        _configs(self.ssoadmin_backend).pop(arn, None)
        return "{}"

    def describe_instance_access_control_attribute_configuration(self) -> str:
        arn = self._get_param("InstanceArn")
        _check_instance(self.ssoadmin_backend, arn)
        config = _configs(self.ssoadmin_backend).get(arn)
        if config is None:
            raise _Error("ResourceNotFoundException", "Attributes for access control are not enabled for this instance")
        body: dict[str, Any] = {"Status": config["Status"],
                                "InstanceAccessControlAttributeConfiguration": {"AccessControlAttributes": config["Attributes"]}}
        if config.get("StatusReason"):
            body["StatusReason"] = config["StatusReason"]
        return json.dumps(body)


extension.RESPONSES["ssoadmin"] = ExtendedSSOAdminResponse


def instance_arns(region: str, account_id: str = DEFAULT_ACCOUNT_ID) -> list[str]:
    return [i.instance_arn for i in ssoadmin_backends[account_id][region].instances]


def set_attributes(region: str, attributes: Mapping[str, str] | None, *, status: str = "ENABLED", reason: str = "",
                   instance_arn: str | None = None, account_id: str = DEFAULT_ACCOUNT_ID) -> str:
    """Configure ABAC straight into the backend: key -> source string, or None to turn ABAC off.
    Applies to `instance_arn`, or to the only instance of the region. Returns the instance ARN."""
    backend = ssoadmin_backends[account_id][region]
    if instance_arn is None:
        (instance_arn,) = instance_arns(region, account_id)
    configs = _configs(backend)
    if attributes is None:
        configs.pop(instance_arn, None)
    else:
        configs[instance_arn] = {
            "Status": status,
            "StatusReason": reason,
            "Attributes": [{"Key": key, "Value": {"Source": [source]}} for key, source in attributes.items()],
        }
    return instance_arn
