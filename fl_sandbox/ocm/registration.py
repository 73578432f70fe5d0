"""Emulated cluster registration: what OCM's registration hub controllers and each
klusterlet's registration agent keep true on the hub.

- one ManagedCluster per spoke, accepted, Joined and Available, with its claims, version
  and capacity, and a namespace of the same name on the hub;
- the ManagedClusterSets ``global`` (every cluster) and ``default`` (clusters labelled
  ``cluster.open-cluster-management.io/clusterset=default``), with ``ClusterSetEmpty``;
- ``Bound`` on each ManagedClusterSetBinding (True when its set exists).

Everything is written through the hub's API, with resourceVersion preconditions.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

from fl_kube import ApiError, Conflict, Informer, KubeApi, NotFound, Result
from fl_kube import resources as r
from fl_sandbox.ocm import conditions as cond
from fl_sandbox.ocm.claims import MAX_CUSTOM_CLAIMS, exposed_claims
from fl_sandbox.ocm.runtime import Runtime
from fl_sandbox.ocm.scheduling import CLUSTER_SET_LABEL, set_members

log = logging.getLogger(__name__)

LEASE_DURATION_SECONDS: Final = 60
UNREACHABLE_TAINT: Final = "cluster.open-cluster-management.io/unreachable"
UNAVAILABLE_TAINT: Final = "cluster.open-cluster-management.io/unavailable"


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _capacity() -> dict[str, str]:
    """This machine's cpu and memory, as a node-less stand-in for the spoke's capacity."""
    cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    result = {"cpu": str(cpus)}
    if memory:
        result["memory"] = f"{memory // 1024}Ki"
    return result


def default_cluster_sets() -> list[dict[str, Any]]:
    """The two sets a hub creates by itself."""
    return [
        {
            "apiVersion": r.MANAGED_CLUSTER_SET.api_version,
            "kind": "ManagedClusterSet",
            "metadata": {"name": "global"},
            "spec": {"clusterSelector": {"selectorType": "LabelSelector", "labelSelector": {}}},
        },
        {
            "apiVersion": r.MANAGED_CLUSTER_SET.api_version,
            "kind": "ManagedClusterSet",
            "metadata": {"name": "default"},
            "spec": {"clusterSelector": {"selectorType": "ExclusiveClusterSetLabel"}},
        },
    ]


class Registration:
    """Keeps every spoke registered on the hub and the cluster sets' status current."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        hub: KubeApi,
        spokes: Mapping[str, KubeApi],
        spoke_urls: Mapping[str, str] | None = None,
        max_custom_claims: int = MAX_CUSTOM_CLAIMS,
    ) -> None:
        self._hub = hub
        self._spokes = dict(spokes)
        self._urls = dict(spoke_urls or {})
        self._max_custom_claims = max_custom_claims
        self._versions: dict[str, str] = {}
        self.unreachable: set[str] = set()
        self.clusters = runtime.informer(hub, r.MANAGED_CLUSTER)
        self.sets = runtime.informer(hub, r.MANAGED_CLUSTER_SET)
        self.bindings = runtime.informer(hub, r.MANAGED_CLUSTER_SET_BINDING)
        self.claims: dict[str, Informer] = {
            name: runtime.informer(api, r.CLUSTER_CLAIM) for name, api in self._spokes.items()
        }
        self.cluster_controller = runtime.controller("registration", self._reconcile_cluster)
        self.set_controller = runtime.controller("clusterset", self._reconcile_set)
        self.binding_controller = runtime.controller("clustersetbinding", self._reconcile_binding)

        runtime.on(self.clusters, self._on_cluster)
        runtime.on(self.sets, self._on_set)
        runtime.on(self.bindings, self._on_binding)
        for name, informer in self.claims.items():
            runtime.on(informer, self._claims_changed(name))
        for name in self._spokes:
            self.cluster_controller.enqueue(name)

    async def bootstrap(self) -> None:
        """Create what a fresh hub has: the default cluster sets and each cluster namespace."""
        for body in default_cluster_sets():
            with contextlib.suppress(Conflict):
                await self._hub.create(r.MANAGED_CLUSTER_SET, body)
        for name, spoke in self._spokes.items():
            await self._ensure_namespace(name)
            self._versions[name] = await _server_version(spoke)

    def set_reachable(self, name: str, reachable: bool) -> None:
        """Simulate the cluster's registration agent stopping (or resuming) its lease."""
        (self.unreachable.discard if reachable else self.unreachable.add)(name)
        self.cluster_controller.enqueue(name)

    def available_condition(self, name: str) -> dict[str, Any]:
        """The ``ManagedClusterConditionAvailable`` the hub shows for the cluster."""
        if name in self.unreachable:
            return cond.condition(
                "ManagedClusterConditionAvailable",
                "Unknown",
                reason="ManagedClusterLeaseUpdateStopped",
                message="Registration agent stopped updating its lease.",
            )
        return cond.condition(
            "ManagedClusterConditionAvailable",
            True,
            reason="ManagedClusterAvailable",
            message="Managed cluster is available",
        )

    # -- event handlers (quick: enqueue keys) ----------------------------------------

    def _claims_changed(self, cluster: str) -> Callable[[str, dict[str, Any]], None]:
        def handler(_type: str, _obj: dict[str, Any]) -> None:
            self.cluster_controller.enqueue(cluster)

        return handler

    def _on_cluster(self, _type: str, obj: dict[str, Any]) -> None:
        name = _name(obj)
        if name in self._spokes:
            self.cluster_controller.enqueue(name)
        for cluster_set in self.sets.list():
            self.set_controller.enqueue(_name(cluster_set))

    def _on_set(self, _type: str, obj: dict[str, Any]) -> None:
        self.set_controller.enqueue(_name(obj))
        for binding in self.bindings.list():
            meta = binding.get("metadata") or {}
            self.binding_controller.enqueue((str(meta.get("namespace")), str(meta.get("name"))))

    def _on_binding(self, _type: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.binding_controller.enqueue((str(meta.get("namespace")), str(meta.get("name"))))

    # -- reconcilers -------------------------------------------------------------------

    async def _ensure_namespace(self, name: str) -> None:
        with contextlib.suppress(Conflict):
            await self._hub.create(r.NAMESPACE, {"metadata": {"name": name}})

    async def _reconcile_cluster(self, name: str) -> Result | None:
        cluster = self.clusters.get(name)
        if cluster is None:
            await self._ensure_namespace(name)
            try:
                cluster = await self._hub.create(r.MANAGED_CLUSTER, self._desired_cluster(name))
            except Conflict:
                return Result(requeue_after=0.05)  # the cache has not seen it yet
        if (cluster.get("metadata") or {}).get("deletionTimestamp"):
            return None
        cluster = await self._sync_taints(cluster)
        status = dict(cluster.get("status") or {})
        status["conditions"] = cond.set_conditions(
            status.get("conditions"),
            [
                cond.condition(
                    "HubAcceptedManagedCluster",
                    True,
                    reason="HubClusterAdminAccepted",
                    message="Accepted by hub cluster admin",
                ),
                cond.condition(
                    "ManagedClusterJoined",
                    True,
                    reason="ManagedClusterJoined",
                    message="Managed cluster joined",
                ),
                self.available_condition(name),
            ],
        )
        if name not in self.unreachable:  # an unreachable agent reports nothing new
            status["clusterClaims"] = exposed_claims(
                self.claims[name].list(), max_custom=self._max_custom_claims
            )
        if self._versions.get(name):
            status["version"] = {"kubernetes": self._versions[name]}
        capacity = _capacity()
        status["capacity"] = capacity
        status["allocatable"] = capacity
        if status == (cluster.get("status") or {}):
            return None
        body = dict(cluster, status=status)
        await self._hub.replace(r.MANAGED_CLUSTER, body, subresource="status")
        return None

    async def _sync_taints(self, cluster: dict[str, Any]) -> dict[str, Any]:
        """Taint an unreachable cluster ``NoSelect`` as the hub does; untaint it once back."""
        name = _name(cluster)
        spec = dict(cluster.get("spec") or {})
        current = list(spec.get("taints") or [])
        others = [t for t in current if t.get("key") not in (UNREACHABLE_TAINT, UNAVAILABLE_TAINT)]
        wanted = others
        if name in self.unreachable:
            existing = next((t for t in current if t.get("key") == UNREACHABLE_TAINT), None)
            wanted = [
                *others,
                existing
                or {
                    "key": UNREACHABLE_TAINT,
                    "effect": "NoSelect",
                    "timeAdded": cond.now_rfc3339(),
                },
            ]
        if wanted == current:
            return cluster
        spec["taints"] = wanted
        return await self._hub.replace(r.MANAGED_CLUSTER, dict(cluster, spec=spec))

    def _desired_cluster(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "hubAcceptsClient": True,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        }
        if self._urls.get(name):
            spec["managedClusterClientConfigs"] = [{"url": self._urls[name]}]
        return {
            "apiVersion": r.MANAGED_CLUSTER.api_version,
            "kind": "ManagedCluster",
            "metadata": {
                "name": name,
                "labels": {"name": name, CLUSTER_SET_LABEL: "default"},
            },
            "spec": spec,
        }

    async def _reconcile_set(self, name: str) -> Result | None:
        cluster_set = self.sets.get(name)
        if cluster_set is None:
            return None
        members = set_members(cluster_set, self.clusters.list())
        if members:
            update = cond.condition(
                "ClusterSetEmpty",
                False,
                reason="ClustersSelected",
                message=f"{len(members)} ManagedClusters selected",
            )
        else:
            update = cond.condition(
                "ClusterSetEmpty",
                True,
                reason="NoClusterMatched",
                message="No ManagedCluster selected",
            )
        status = dict(cluster_set.get("status") or {})
        status["conditions"] = cond.set_conditions(status.get("conditions"), [update])
        if status == (cluster_set.get("status") or {}):
            return None
        await self._hub.replace(
            r.MANAGED_CLUSTER_SET, dict(cluster_set, status=status), subresource="status"
        )
        return None

    async def _reconcile_binding(self, key: tuple[str, str]) -> Result | None:
        namespace, name = key
        binding = self.bindings.get(name, namespace)
        if binding is None:
            return None
        set_name = (binding.get("spec") or {}).get("clusterSet") or name
        if self.sets.get(str(set_name)) is not None:
            update = cond.condition("Bound", True, reason="ClusterSetBound")
        else:
            update = cond.condition("Bound", False, reason="ClusterSetNotFound")
        status = dict(binding.get("status") or {})
        status["conditions"] = cond.set_conditions(status.get("conditions"), [update])
        if status == (binding.get("status") or {}):
            return None
        try:
            await self._hub.replace(
                r.MANAGED_CLUSTER_SET_BINDING,
                dict(binding, status=status),
                namespace=namespace,
                subresource="status",
            )
        except NotFound:
            return None
        return None


async def _server_version(api: KubeApi) -> str:
    """The spoke API server's ``gitVersion`` (empty when it does not say)."""
    try:
        info = await api.version()
    except ApiError as exc:  # version is cosmetic: never fail registration over it
        log.debug("could not read the server version: %s", exc)
        return ""
    return str(info.get("gitVersion") or "")
