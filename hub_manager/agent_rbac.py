"""Per-cluster hub permissions of the add-on agent.

In each cluster namespace where the add-on is enabled (a ManagedClusterAddOn named
`federated-learning` exists), a Role and RoleBinding grant that cluster's own add-on group
`get` on its ManagedClusterAddOn and `get/patch/update` on its status, by resource name.
Nothing is granted to the add-on-wide group, so one cluster's agent cannot write another
cluster's reports (DESIGN.md section 5). Both objects go when the add-on is disabled.
"""

from __future__ import annotations

import logging
from typing import Any

from fl_contract import keys, naming
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.controller import Result
from fl_kube.informer import Informer
from hub_manager.cache import WriteMemo

log = logging.getLogger(__name__)

LABELS = {
    keys.LABEL_COMPONENT: keys.COMPONENT_AGENT_RBAC,
    keys.LABEL_MANAGED_BY: keys.HUB_FIELD_MANAGER,
    keys.LABEL_PART_OF: "ocm-federated-learning",
}
SELECTOR = f"{keys.LABEL_COMPONENT}={keys.COMPONENT_AGENT_RBAC}"
_ADDON_GROUP = r.MANAGED_CLUSTER_ADDON.group


def desired_role(cluster: str) -> dict[str, Any]:
    return {
        "apiVersion": r.ROLE.api_version,
        "kind": r.ROLE.kind,
        "metadata": {
            "name": naming.agent_role_binding_name(),
            "namespace": cluster,
            "labels": dict(LABELS),
        },
        "rules": [
            {
                "apiGroups": [_ADDON_GROUP],
                "resources": ["managedclusteraddons"],
                "resourceNames": [keys.ADDON_NAME],
                "verbs": ["get"],
            },
            {
                "apiGroups": [_ADDON_GROUP],
                "resources": ["managedclusteraddons/status"],
                "resourceNames": [keys.ADDON_NAME],
                "verbs": ["get", "patch", "update"],
            },
        ],
    }


def desired_role_binding(cluster: str) -> dict[str, Any]:
    return {
        "apiVersion": r.ROLE_BINDING.api_version,
        "kind": r.ROLE_BINDING.kind,
        "metadata": {
            "name": naming.agent_role_binding_name(),
            "namespace": cluster,
            "labels": dict(LABELS),
        },
        "roleRef": {
            "apiGroup": r.ROLE.group,
            "kind": r.ROLE.kind,
            "name": naming.agent_role_binding_name(),
        },
        "subjects": [
            {
                "apiGroup": r.ROLE_BINDING.group,
                "kind": "Group",
                "name": naming.cluster_addon_group(cluster),
            }
        ],
    }


def _matches(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    if current is None:
        return False
    labels = (current.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in LABELS.items()):
        return False
    return all(
        current.get(field) == desired[field]
        for field in ("rules", "roleRef", "subjects")
        if field in desired
    )


class AgentRbacReconciler:
    """Keyed by cluster namespace; level-based from three informers' caches."""

    def __init__(
        self,
        api: KubeApi,
        *,
        addons: Informer,
        roles: Informer,
        role_bindings: Informer,
    ) -> None:
        self._api = api
        self._addons = addons
        self._roles = roles
        self._role_bindings = role_bindings
        self._memos = {r.ROLE.kind: WriteMemo(roles), r.ROLE_BINDING.kind: WriteMemo(role_bindings)}

    def keys_for_event(self, obj: dict[str, Any]) -> list[str]:
        metadata = obj.get("metadata") or {}
        if (
            obj.get("kind") == r.MANAGED_CLUSTER_ADDON.kind
            and metadata.get("name") != keys.ADDON_NAME
        ):
            return []
        namespace = metadata.get("namespace")
        return [str(namespace)] if namespace else []

    async def reconcile(self, cluster: str) -> Result | None:
        addon = self._addons.get(keys.ADDON_NAME, cluster)
        enabled = addon is not None and not (addon.get("metadata") or {}).get("deletionTimestamp")
        name = naming.agent_role_binding_name()
        if not enabled:
            for res, cache in ((r.ROLE_BINDING, self._role_bindings), (r.ROLE, self._roles)):
                if cache.get(name, cluster) is not None:
                    self._memos[res.kind].forget((cluster,))
                    await self._api.delete(res, name, namespace=cluster)
                    log.info("removed %s %s/%s: add-on disabled", res.kind, cluster, name)
            return None
        for res, cache, desired in (
            (r.ROLE, self._roles, desired_role(cluster)),
            (r.ROLE_BINDING, self._role_bindings, desired_role_binding(cluster)),
        ):
            memo = self._memos[res.kind]
            fingerprint = repr(desired)
            matches = _matches(cache.get(name, cluster), desired)
            if memo.needs_write((cluster,), fingerprint, cached_matches=matches):
                written = await self._api.apply(res, desired, field_manager=keys.HUB_FIELD_MANAGER)
                memo.wrote((cluster,), fingerprint, written)
                log.info("granted %s its add-on status via %s %s", cluster, res.kind, name)
        return None
