"""Emulated placement controller: keeps each Placement's PlacementDecisions and status in
line with the clusters, claims, cluster sets and bindings on the hub.

The choice itself is ``scheduling.schedule``; this module reads the caches, writes only
what differs (decisions created, relabelled, re-statused or deleted; the Placement's
status), and re-evaluates a Placement whenever anything it depends on changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fl_kube import Conflict, KubeApi, NotFound, Result
from fl_kube import resources as r
from fl_sandbox.ocm import scheduling
from fl_sandbox.ocm.runtime import Runtime

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, placement name)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


class PlacementController:
    """Schedules every Placement on the hub."""

    def __init__(self, runtime: Runtime, *, hub: KubeApi) -> None:
        self._hub = hub
        self.placements = runtime.informer(hub, r.PLACEMENT)
        self.decisions = runtime.informer(
            hub, r.PLACEMENT_DECISION, label_selector=scheduling.PLACEMENT_LABEL
        )
        self.clusters = runtime.informer(hub, r.MANAGED_CLUSTER)
        self.sets = runtime.informer(hub, r.MANAGED_CLUSTER_SET)
        self.bindings = runtime.informer(hub, r.MANAGED_CLUSTER_SET_BINDING)
        self.controller = runtime.controller("placement", self._reconcile, workers=2)

        runtime.on(self.placements, lambda _t, obj: self.controller.enqueue(self._key(obj)))
        runtime.on(self.decisions, self._on_decision)
        runtime.on(self.clusters, self._enqueue_all)
        runtime.on(self.sets, self._enqueue_all)
        runtime.on(self.bindings, self._on_binding)

    @staticmethod
    def _key(obj: Mapping[str, Any]) -> Key:
        meta = _meta(obj)
        return (str(meta.get("namespace")), str(meta.get("name")))

    def _enqueue_all(self, _type: str, _obj: dict[str, Any]) -> None:
        for placement in self.placements.list():
            self.controller.enqueue(self._key(placement))

    def _on_binding(self, _type: str, obj: dict[str, Any]) -> None:
        namespace = _meta(obj).get("namespace")
        for placement in self.placements.list():
            if _meta(placement).get("namespace") == namespace:
                self.controller.enqueue(self._key(placement))

    def _on_decision(self, _type: str, obj: dict[str, Any]) -> None:
        meta = _meta(obj)
        owner = (meta.get("labels") or {}).get(scheduling.PLACEMENT_LABEL)
        if owner:
            self.controller.enqueue((str(meta.get("namespace")), str(owner)))

    def _current_decisions(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        return {
            str(_meta(d).get("name")): d
            for d in self.decisions.list()
            if _meta(d).get("namespace") == namespace
            and (_meta(d).get("labels") or {}).get(scheduling.PLACEMENT_LABEL) == name
        }

    async def _reconcile(self, key: Key) -> Result | None:
        namespace, name = key
        placement = self.placements.get(name, namespace)
        if placement is None or _meta(placement).get("deletionTimestamp"):
            return None
        current = self._current_decisions(namespace, name)
        decided = [
            str(d.get("clusterName"))
            for obj in current.values()
            for d in (obj.get("status") or {}).get("decisions") or []
        ]
        result = scheduling.schedule(
            placement,
            clusters=self.clusters.list(),
            cluster_sets=self.sets.list(),
            bindings=[b for b in self.bindings.list() if _meta(b).get("namespace") == namespace],
            decided=decided,
        )
        wanted = scheduling.decision_objects(name, result)
        try:
            for decision in wanted:
                await self._write_decision(placement, decision, current.get(decision.name))
            for extra in sorted(set(current) - {d.name for d in wanted}):
                await self._hub.delete(r.PLACEMENT_DECISION, extra, namespace=namespace)
            status = scheduling.placement_status(placement, result, wanted)
            if status != (placement.get("status") or {}):
                await self._hub.replace(
                    r.PLACEMENT, dict(placement, status=status), subresource="status"
                )
        except NotFound:
            return None  # the Placement went away while we wrote: nothing left to do
        return None

    async def _write_decision(
        self,
        placement: Mapping[str, Any],
        decision: scheduling.DecisionObject,
        existing: dict[str, Any] | None,
    ) -> None:
        namespace = str(_meta(placement).get("namespace"))
        name = str(_meta(placement).get("name"))
        if existing is None:
            try:
                existing = await self._hub.create(
                    r.PLACEMENT_DECISION, scheduling.decision_body(placement, decision)
                )
            except Conflict:
                existing = await self._hub.get(
                    r.PLACEMENT_DECISION, decision.name, namespace=namespace
                )
        labels = dict(_meta(existing).get("labels") or {})
        wanted_labels = decision.labels(name)
        if any(labels.get(k) != v for k, v in wanted_labels.items()):
            existing = await self._hub.patch(
                r.PLACEMENT_DECISION,
                decision.name,
                {
                    "metadata": {
                        "labels": wanted_labels,
                        "resourceVersion": _meta(existing).get("resourceVersion"),
                    }
                },
                namespace=namespace,
            )
        status = decision.status()
        if (existing.get("status") or {}) != status:
            await self._hub.replace(
                r.PLACEMENT_DECISION, dict(existing, status=status), subresource="status"
            )
