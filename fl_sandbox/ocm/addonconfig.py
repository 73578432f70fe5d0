"""Which configs a ManagedClusterAddOn uses, resolved as OCM's addon-manager does.

For each config type (group, resource) the ManagedClusterAddOn's own ``spec.configs`` win,
then the configs of an install-strategy placement that selected the cluster, then the
ClusterManagementAddOn's ``supportedConfigs[].defaultConfig``. An add-on is template based
when its ClusterManagementAddOn supports ``addontemplates``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

ADDON_GROUP: Final = "addon.open-cluster-management.io"
TEMPLATES: Final = "addontemplates"
DEPLOYMENT_CONFIGS: Final = "addondeploymentconfigs"
DEFAULT_INSTALL_NAMESPACE: Final = "open-cluster-management-agent-addon"


@dataclass(frozen=True)
class ConfigRef:
    """One resolved config: its type and where it lives (namespace empty if cluster-scoped)."""

    group: str
    resource: str
    name: str
    namespace: str = ""

    def reference(self, spec_hash: str | None = None, *, applied: bool = True) -> dict[str, Any]:
        """A ``status.configReferences`` entry; ``lastAppliedConfig`` only once applied."""
        desired: dict[str, Any] = {"name": self.name}
        if self.namespace:
            desired["namespace"] = self.namespace
        if spec_hash:
            desired["specHash"] = spec_hash
        entry: dict[str, Any] = {
            "group": self.group,
            "resource": self.resource,
            "name": self.name,
            "desiredConfig": dict(desired),
        }
        if applied:
            entry["lastAppliedConfig"] = dict(desired)
        if self.namespace:
            entry["namespace"] = self.namespace
        return entry


@dataclass(frozen=True)
class AddonSettings:
    """What the install needs from an AddOnDeploymentConfig."""

    install_namespace: str = DEFAULT_INSTALL_NAMESPACE
    variables: dict[str, str] = field(default_factory=dict)
    # agentInstallNamespace as set (None when unset or empty): only then does the
    # addon-manager rewrite the template's namespaces and define INSTALL_NAMESPACE.
    configured_namespace: str | None = None


def uses_template(cma: Mapping[str, Any]) -> bool:
    """Whether the ClusterManagementAddOn is template based (supports ``addontemplates``)."""
    for supported in (cma.get("spec") or {}).get("supportedConfigs") or []:
        if supported.get("resource") == TEMPLATES and (supported.get("group") or "") == ADDON_GROUP:
            return True
    return False


def _ref(entry: Mapping[str, Any], group: str, resource: str) -> ConfigRef | None:
    name = entry.get("name")
    if not name:
        return None
    return ConfigRef(
        group=group, resource=resource, name=str(name), namespace=str(entry.get("namespace") or "")
    )


def resolve_config(
    *,
    group: str,
    resource: str,
    mca: Mapping[str, Any],
    cma: Mapping[str, Any],
    placement_configs: Sequence[Mapping[str, Any]] = (),
) -> ConfigRef | None:
    """The config of one type for this ManagedClusterAddOn, or None when there is none."""
    for entry in (mca.get("spec") or {}).get("configs") or []:
        if entry.get("resource") == resource and (entry.get("group") or "") == group:
            return _ref(entry, group, resource)
    for entry in placement_configs:
        if entry.get("resource") == resource and (entry.get("group") or "") == group:
            return _ref(entry, group, resource)
    for supported in (cma.get("spec") or {}).get("supportedConfigs") or []:
        if supported.get("resource") == resource and (supported.get("group") or "") == group:
            default = supported.get("defaultConfig")
            if default:
                return _ref(default, group, resource)
    return None


def settings_from(deployment_config: Mapping[str, Any] | None) -> AddonSettings:
    """Install namespace (the default when unset or empty) and customized variables."""
    if not deployment_config:
        return AddonSettings()
    spec = deployment_config.get("spec") or {}
    variables = {
        str(v["name"]): str(v.get("value", ""))
        for v in spec.get("customizedVariables") or []
        if v.get("name")
    }
    configured = str(spec.get("agentInstallNamespace") or "") or None
    return AddonSettings(
        install_namespace=configured or DEFAULT_INSTALL_NAMESPACE,
        variables=variables,
        configured_namespace=configured,
    )


def spec_hash(obj: Mapping[str, Any]) -> str:
    """sha256 of the object's spec in canonical JSON, as upstream records ``specHash``."""
    data = json.dumps(obj.get("spec") or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()
