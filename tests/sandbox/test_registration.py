"""Registration against real API servers: clusters joined and available, namespaces, cluster
sets, bindings, and ClusterClaims mirrored into ManagedCluster status."""

from __future__ import annotations

import functools
from typing import Any

from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.ocm.conditions import find
from fl_sandbox.sandbox import Sandbox


def _claims(cluster: dict[str, Any]) -> list[dict[str, str]]:
    return list((cluster.get("status") or {}).get("clusterClaims") or [])


async def test_clusters_are_joined_and_available(sandbox: Sandbox) -> None:
    async with await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub:
        clusters = {c["metadata"]["name"]: c for c in (await hub.list(r.MANAGED_CLUSTER)).items}
        assert sorted(clusters) == ["cluster1", "cluster2"]
        for name, cluster in clusters.items():
            assert cluster["spec"]["hubAcceptsClient"] is True
            assert cluster["spec"]["leaseDurationSeconds"] == 60
            assert cluster["metadata"]["labels"] == {
                "name": name,
                "cluster.open-cluster-management.io/clusterset": "default",
            }
            conditions = cluster["status"]["conditions"]
            for type_, reason in [
                ("HubAcceptedManagedCluster", "HubClusterAdminAccepted"),
                ("ManagedClusterJoined", "ManagedClusterJoined"),
                ("ManagedClusterConditionAvailable", "ManagedClusterAvailable"),
            ]:
                condition = find(conditions, type_)
                assert condition is not None
                assert (condition["status"], condition["reason"]) == ("True", reason)
            assert cluster["spec"]["managedClusterClientConfigs"][0]["url"] == (
                sandbox.spokes[name].url
            )
            assert int(cluster["status"]["capacity"]["cpu"]) >= 1
            assert await hub.get(r.NAMESPACE, name)


async def test_cluster_sets_and_binding_status(sandbox: Sandbox) -> None:
    async with await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub:
        for name in ("global", "default"):
            cluster_set = await wait_for(
                functools.partial(_set_selected, hub, name), timeout=10, message=f"set {name}"
            )
            condition = find(cluster_set["status"]["conditions"], "ClusterSetEmpty")
            assert condition is not None
            assert condition["message"] == "2 ManagedClusters selected"
        await hub.create(r.NAMESPACE, {"metadata": {"name": "team-a"}})
        for name in ("global", "missing"):
            await hub.create(
                r.MANAGED_CLUSTER_SET_BINDING,
                {"metadata": {"name": name, "namespace": "team-a"}, "spec": {"clusterSet": name}},
            )

        async def bound(name: str) -> tuple[str, str] | None:
            binding = await hub.get(r.MANAGED_CLUSTER_SET_BINDING, name, namespace="team-a")
            condition = find((binding.get("status") or {}).get("conditions"), "Bound")
            return (condition["status"], condition["reason"]) if condition else None

        assert await wait_for(lambda: bound("global"), timeout=10) == ("True", "ClusterSetBound")
        assert await wait_for(lambda: bound("missing"), timeout=10) == (
            "False",
            "ClusterSetNotFound",
        )
        await hub.create(
            r.MANAGED_CLUSTER_SET,
            {
                "metadata": {"name": "missing"},
                "spec": {"clusterSelector": {"selectorType": "ExclusiveClusterSetLabel"}},
            },
        )
        await wait_for(
            lambda: _status_is(bound("missing"), ("True", "ClusterSetBound")),
            timeout=10,
            message="binding bound once its set exists",
        )


async def _status_is(pending: Any, expected: tuple[str, str]) -> bool:
    return bool(await pending == expected)


async def _set_selected(hub: KubeApi, name: str) -> dict[str, Any] | None:
    cluster_set = await hub.get(r.MANAGED_CLUSTER_SET, name)
    condition = find((cluster_set.get("status") or {}).get("conditions"), "ClusterSetEmpty")
    return cluster_set if condition and condition["reason"] == "ClustersSelected" else None


async def test_claims_are_mirrored_created_changed_deleted(sandbox: Sandbox) -> None:
    async with (
        await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig("cluster2")) as spoke,
    ):
        claim = {
            "metadata": {"name": "digits.dataset.federated-learning.io"},
            "spec": {"value": "a"},
        }
        created = await spoke.create(r.CLUSTER_CLAIM, claim)

        async def claims_are(expected: list[dict[str, str]]) -> bool:
            return _claims(await hub.get(r.MANAGED_CLUSTER, "cluster2")) == expected

        name = claim["metadata"]["name"]
        await wait_for(lambda: claims_are([{"name": name, "value": "a"}]), timeout=10)
        await spoke.replace(r.CLUSTER_CLAIM, dict(created, spec={"value": "b"}))
        await wait_for(lambda: claims_are([{"name": name, "value": "b"}]), timeout=10)
        assert _claims(await hub.get(r.MANAGED_CLUSTER, "cluster1")) == []
        await spoke.delete(r.CLUSTER_CLAIM, name)
        await wait_for(lambda: claims_are([]), timeout=10, message="claim removed")


async def test_only_the_first_20_custom_claims_are_exposed(sandbox: Sandbox) -> None:
    async with (
        await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig("cluster1")) as spoke,
    ):
        names = [f"c{i:02d}.example.io" for i in range(23)]
        for name in reversed(names):
            await spoke.create(
                r.CLUSTER_CLAIM, {"metadata": {"name": name}, "spec": {"value": "v"}}
            )
        await spoke.create(
            r.CLUSTER_CLAIM, {"metadata": {"name": "id.k8s.io"}, "spec": {"value": "x"}}
        )
        expected = ["id.k8s.io", *names[:20]]

        async def exposed() -> list[str] | None:
            found = [c["name"] for c in _claims(await hub.get(r.MANAGED_CLUSTER, "cluster1"))]
            return found if found == expected else None

        assert await wait_for(exposed, timeout=10, message="20 custom claims") == expected
