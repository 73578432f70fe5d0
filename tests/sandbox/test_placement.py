"""The placement controller against real API servers: decisions follow claims, bindings and
numberOfClusters; an empty result has the shape a real hub gives it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.ocm.conditions import find
from fl_sandbox.ocm.scheduling import PLACEMENT_LABEL
from fl_sandbox.sandbox import Sandbox

NS = "team-a"
CLAIM = "digits.dataset.federated-learning.io"


@pytest.fixture
async def hub(sandbox: Sandbox) -> AsyncIterator[KubeApi]:
    async with await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as api:
        await api.create(r.NAMESPACE, {"metadata": {"name": NS}})
        yield api


async def bind(hub: KubeApi, cluster_set: str = "global") -> None:
    await hub.create(
        r.MANAGED_CLUSTER_SET_BINDING,
        {"metadata": {"name": cluster_set, "namespace": NS}, "spec": {"clusterSet": cluster_set}},
    )


async def create_placement(hub: KubeApi, name: str, spec: dict[str, Any]) -> None:
    await hub.create(r.PLACEMENT, {"metadata": {"name": name, "namespace": NS}, "spec": spec})


async def decided(hub: KubeApi, name: str) -> list[str]:
    listed = await hub.list(
        r.PLACEMENT_DECISION, namespace=NS, label_selector=f"{PLACEMENT_LABEL}={name}"
    )
    return sorted(
        d["clusterName"]
        for obj in listed.items
        for d in (obj.get("status") or {}).get("decisions") or []
    )


def satisfied(placement: dict[str, Any]) -> tuple[str, str] | None:
    condition = find((placement.get("status") or {}).get("conditions"), "PlacementSatisfied")
    return (condition["status"], condition["reason"]) if condition else None


async def wait_satisfied(hub: KubeApi, name: str, expected: tuple[str, str]) -> dict[str, Any]:
    """The Placement once its status says ``expected`` (written after the decisions)."""

    async def check() -> dict[str, Any] | None:
        placement = await hub.get(r.PLACEMENT, name, namespace=NS)
        return placement if satisfied(placement) == expected else None

    found: dict[str, Any] = await wait_for(check, timeout=10, message=f"{name}: {expected}")
    return found


async def wait_decided(hub: KubeApi, name: str, expected: list[str]) -> None:
    async def check() -> bool:
        return await decided(hub, name) == expected

    await wait_for(check, timeout=10, message=f"{name} decides {expected}")


CLAIM_SPEC = {
    "predicates": [
        {
            "requiredClusterSelector": {
                "claimSelector": {"matchExpressions": [{"key": CLAIM, "operator": "Exists"}]}
            }
        }
    ]
}


async def test_claim_selector_follows_claims(sandbox: Sandbox, hub: KubeApi) -> None:
    await bind(hub)
    await create_placement(hub, "by-claim", CLAIM_SPEC)
    async with await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig("cluster2")) as spoke:
        await spoke.create(r.CLUSTER_CLAIM, {"metadata": {"name": CLAIM}, "spec": {"value": "n=1"}})
        await wait_decided(hub, "by-claim", ["cluster2"])
        placement = await wait_satisfied(hub, "by-claim", ("True", "AllDecisionsScheduled"))
        assert placement["status"]["numberOfSelectedClusters"] == 1
        decision = await hub.get(r.PLACEMENT_DECISION, "by-claim-decision-1", namespace=NS)
        assert decision["metadata"]["labels"] == {
            PLACEMENT_LABEL: "by-claim",
            "cluster.open-cluster-management.io/decision-group-index": "0",
            "cluster.open-cluster-management.io/decision-group-name": "",
        }
        owner = decision["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Placement",
            "by-claim",
            placement["metadata"]["uid"],
        )
        await spoke.delete(r.CLUSTER_CLAIM, CLAIM)
        await wait_decided(hub, "by-claim", [])


async def test_empty_result_looks_like_a_real_hub(hub: KubeApi) -> None:
    await bind(hub)
    await create_placement(hub, "nothing", CLAIM_SPEC)

    async def unmatched() -> dict[str, Any] | None:
        placement = await hub.get(r.PLACEMENT, "nothing", namespace=NS)
        return placement if satisfied(placement) == ("False", "NoManagedClusterMatched") else None

    placement = await wait_for(unmatched, timeout=10, message="NoManagedClusterMatched")
    assert "numberOfSelectedClusters" not in placement["status"]
    assert placement["status"]["decisionGroups"] == [
        {
            "decisionGroupIndex": 0,
            "decisionGroupName": "",
            "decisions": ["nothing-decision-1"],
            "clusterCount": 0,
        }
    ]
    misconfigured = find(placement["status"]["conditions"], "PlacementMisconfigured")
    assert misconfigured is not None
    assert misconfigured["status"] == "False"
    empty = await hub.get(r.PLACEMENT_DECISION, "nothing-decision-1", namespace=NS)
    assert (empty.get("status") or {}).get("decisions", []) == []


async def test_number_of_clusters_and_binding_changes(hub: KubeApi) -> None:
    await create_placement(hub, "two", {"numberOfClusters": 3})

    async def no_bindings() -> bool:
        placement = await hub.get(r.PLACEMENT, "two", namespace=NS)
        return satisfied(placement) == ("False", "NoManagedClusterSetBindings")

    await wait_for(no_bindings, timeout=10, message="NoManagedClusterSetBindings")
    await bind(hub, "default")
    await wait_decided(hub, "two", ["cluster1", "cluster2"])
    await wait_satisfied(hub, "two", ("False", "NotAllDecisionsScheduled"))
    await hub.patch(r.PLACEMENT, "two", {"spec": {"numberOfClusters": 1}}, namespace=NS)
    await wait_decided(hub, "two", ["cluster1"])
    await hub.delete(r.MANAGED_CLUSTER_SET_BINDING, "default", namespace=NS)
    await wait_decided(hub, "two", [])


async def test_cluster_sets_restrict_the_choice(hub: KubeApi) -> None:
    await bind(hub, "global")
    await create_placement(hub, "elsewhere", {"clusterSets": ["default"]})

    async def no_intersection() -> bool:
        placement = await hub.get(r.PLACEMENT, "elsewhere", namespace=NS)
        return satisfied(placement) == ("False", "NoIntersection")

    await wait_for(no_intersection, timeout=10, message="NoIntersection")
    await bind(hub, "default")
    await wait_decided(hub, "elsewhere", ["cluster1", "cluster2"])


async def test_unreachable_cluster_is_tainted_and_dropped(sandbox: Sandbox, hub: KubeApi) -> None:
    await bind(hub)
    await create_placement(hub, "all", {})
    await wait_decided(hub, "all", ["cluster1", "cluster2"])
    sandbox.set_cluster_reachable("cluster2", False)
    await wait_decided(hub, "all", ["cluster1"])

    async def unknown() -> dict[str, Any] | None:
        cluster = await hub.get(r.MANAGED_CLUSTER, "cluster2")
        available = find(cluster["status"]["conditions"], "ManagedClusterConditionAvailable")
        assert available is not None
        expected = ("Unknown", "ManagedClusterLeaseUpdateStopped")
        return cluster if (available["status"], available["reason"]) == expected else None

    cluster = await wait_for(unknown, timeout=10, message="cluster2 Available Unknown")
    [taint] = cluster["spec"]["taints"]
    assert (taint["key"], taint["effect"]) == (
        "cluster.open-cluster-management.io/unreachable",
        "NoSelect",
    )

    async def addon_unknown() -> bool:
        mca = await hub.get(r.MANAGED_CLUSTER_ADDON, "federated-learning", namespace="cluster2")
        condition = find((mca.get("status") or {}).get("conditions"), "Available")
        return condition is not None and condition["reason"] == "ManagedClusterLeaseUpdateStopped"

    await wait_for(addon_unknown, timeout=10, message="add-on Available Unknown")
    # A tolerating placement still selects it.
    await create_placement(
        hub,
        "tolerant",
        {
            "tolerations": [
                {"key": "cluster.open-cluster-management.io/unreachable", "operator": "Exists"}
            ]
        },
    )
    await wait_decided(hub, "tolerant", ["cluster1", "cluster2"])
    sandbox.set_cluster_reachable("cluster2", True)
    await wait_decided(hub, "all", ["cluster1", "cluster2"])
    cluster = await hub.get(r.MANAGED_CLUSTER, "cluster2")
    assert cluster["spec"].get("taints", []) == []
