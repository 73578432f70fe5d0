"""A ClusterManagementAddOn's ``installStrategy``, as OCM's addon-manager applies it.

``Manual``: nothing (an admin enables the add-on per cluster). ``Placements``: every cluster
in the decisions of the listed Placements gets a ManagedClusterAddOn (owned by the
ClusterManagementAddOn), and the add-on is removed from every cluster no longer decided
(upstream pkg/addon/controllers/addonmanagement). The configs listed with a placement apply
to the clusters it selects, before the ClusterManagementAddOn's defaults.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from fl_kube import Conflict, Informer, KubeApi, Result
from fl_kube import resources as r
from fl_sandbox.ocm.runtime import Runtime
from fl_sandbox.ocm.scheduling import PLACEMENT_LABEL


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _placements(cma: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    strategy = (cma.get("spec") or {}).get("installStrategy") or {}
    if strategy.get("type") != "Placements":
        return []
    return list(strategy.get("placements") or [])


class InstallStrategy:
    """Creates and removes ManagedClusterAddOns from install-strategy placements."""

    def __init__(self, runtime: Runtime, *, hub: KubeApi, addons: Informer, cmas: Informer) -> None:
        self._hub = hub
        self._addons = addons
        self._cmas = cmas
        self.placements = runtime.informer(hub, r.PLACEMENT)
        self.decisions = runtime.informer(hub, r.PLACEMENT_DECISION, label_selector=PLACEMENT_LABEL)
        self.controller = runtime.controller("addon-install-strategy", self._reconcile, workers=1)
        runtime.on(cmas, lambda _t, obj: self.controller.enqueue(str(_meta(obj).get("name"))))
        runtime.on(addons, lambda _t, obj: self.controller.enqueue(str(_meta(obj).get("name"))))
        runtime.on(self.placements, self._enqueue_all)
        runtime.on(self.decisions, self._enqueue_all)

    def _enqueue_all(self, _type: str, _obj: dict[str, Any]) -> None:
        for cma in self._cmas.list():
            self.controller.enqueue(str(_meta(cma).get("name")))

    def decided(self, namespace: str, name: str) -> set[str] | None:
        """The clusters a Placement's decisions hold; None when the Placement does not exist."""
        if self.placements.get(name, namespace) is None:
            return None
        return {
            str(d.get("clusterName"))
            for obj in self.decisions.list()
            if _meta(obj).get("namespace") == namespace
            and (_meta(obj).get("labels") or {}).get(PLACEMENT_LABEL) == name
            for d in (obj.get("status") or {}).get("decisions") or []
        }

    def placement_configs(self, cma: Mapping[str, Any], cluster: str) -> list[Mapping[str, Any]]:
        """The configs of the first install-strategy placement that selects ``cluster``."""
        for placement in _placements(cma):
            chosen = self.decided(str(placement.get("namespace")), str(placement.get("name")))
            if chosen and cluster in chosen:
                return list(placement.get("configs") or [])
        return []

    async def _reconcile(self, name: str) -> Result | None:
        cma = self._cmas.get(name)
        if cma is None or _meta(cma).get("deletionTimestamp"):
            return None
        placements = _placements(cma)
        if not placements:
            return None
        required: set[str] = set()
        for placement in placements:
            chosen = self.decided(str(placement.get("namespace")), str(placement.get("name")))
            required |= chosen or set()
        existing = {
            str(_meta(a).get("namespace"))
            for a in self._addons.list()
            if _meta(a).get("name") == name and not _meta(a).get("deletionTimestamp")
        }
        owner = {
            "apiVersion": r.CLUSTER_MANAGEMENT_ADDON.api_version,
            "kind": "ClusterManagementAddOn",
            "name": name,
            "uid": _meta(cma).get("uid"),
            "controller": True,
            "blockOwnerDeletion": True,
        }
        for cluster in sorted(required - existing):
            with contextlib.suppress(Conflict):
                await self._hub.create(
                    r.MANAGED_CLUSTER_ADDON,
                    {
                        "metadata": {
                            "name": name,
                            "namespace": cluster,
                            "ownerReferences": [owner],
                        },
                        "spec": {},
                    },
                )
        for cluster in sorted(existing - required):
            await self._hub.delete(r.MANAGED_CLUSTER_ADDON, name, namespace=cluster)
        return None
