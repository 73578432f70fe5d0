"""Dataset claims end to end: spoke ClusterClaims -> ManagedCluster status -> Placement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from fl_contract import keys, naming
from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from spoke_agent import conditions as cond
from tests.agent.harness import addon_conditions, catalogue, start_agent

NS = "team-a"
DIGITS = naming.dataset_claim_name("digits")
PLACEMENT = "needs-digits"


async def hub_claims(hub: KubeApi, cluster: str) -> dict[str, str]:
    mc = await hub.get(r.MANAGED_CLUSTER, cluster)
    return {c["name"]: c["value"] for c in (mc.get("status") or {}).get("clusterClaims") or []}


async def decided(hub: KubeApi) -> list[str]:
    listed = await hub.list(
        r.PLACEMENT_DECISION,
        namespace=NS,
        label_selector=f"cluster.open-cluster-management.io/placement={PLACEMENT}",
    )
    return sorted(
        d["clusterName"]
        for obj in listed.items
        for d in (obj.get("status") or {}).get("decisions") or []
    )


async def wait_decided(hub: KubeApi, expected: list[str]) -> None:
    async def check() -> bool:
        return await decided(hub) == expected

    await wait_for(check, timeout=15, message=f"placement decides {expected}")


async def degraded(hub: KubeApi, cluster: str) -> dict[str, Any] | None:
    return cond.find(await addon_conditions(hub, cluster), cond.DEGRADED)


async def test_claims_follow_the_catalogue_and_drive_placement(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    c1, c2 = sandbox.cluster_names
    hub = await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig)
    spoke1 = await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig(c1))
    # A claim somebody else owns, with a name the agent would like: never touched.
    foreign = naming.dataset_claim_name("shared")
    await spoke1.create(
        r.CLUSTER_CLAIM, {"metadata": {"name": foreign}, "spec": {"value": "someone-else"}}
    )
    ds1 = catalogue(tmp_path / "c1.yaml", {"digits": tmp_path / "d1", "shared": tmp_path / "s1"})
    ds2 = catalogue(tmp_path / "c2.yaml", {"mnist": tmp_path / "m2"})
    agents = [
        await start_agent(sandbox, c1, datasets=ds1),
        await start_agent(sandbox, c2, datasets=ds2),
    ]
    try:
        await hub.create(r.NAMESPACE, {"metadata": {"name": NS}})
        await hub.create(
            r.MANAGED_CLUSTER_SET_BINDING,
            {"metadata": {"name": "global", "namespace": NS}, "spec": {"clusterSet": "global"}},
        )
        await hub.create(
            r.PLACEMENT,
            {
                "metadata": {"name": PLACEMENT, "namespace": NS},
                "spec": {
                    "predicates": [
                        {
                            "requiredClusterSelector": {
                                "claimSelector": {
                                    "matchExpressions": [{"key": DIGITS, "operator": "Exists"}]
                                }
                            }
                        }
                    ]
                },
            },
        )

        async def c1_published() -> bool:
            claims = await hub_claims(hub, c1)
            return claims.get(DIGITS) == "samples=5,task=classification"

        await wait_for(c1_published, timeout=15, message="cluster1's claim on the hub")
        assert (await hub_claims(hub, c1))[foreign] == "someone-else"
        assert naming.dataset_claim_name("mnist") in await hub_claims(hub, c2)
        await wait_decided(hub, [c1])

        # cluster2 gains the dataset: the agent picks the file change up.
        catalogue(ds2, {"mnist": tmp_path / "m2", "digits": tmp_path / "d2"})
        await wait_decided(hub, [c1, c2])

        # cluster1 loses it: its claim goes, the foreign one stays.
        catalogue(ds1, {"shared": tmp_path / "s1"})
        await wait_decided(hub, [c2])
        claim = await spoke1.get(r.CLUSTER_CLAIM, foreign)
        assert claim["spec"]["value"] == "someone-else"
        assert keys.LABEL_CLAIM_OWNER not in (claim["metadata"].get("labels") or {})
        assert await spoke1.get_or_none(r.CLUSTER_CLAIM, DIGITS) is None

        # A malformed catalogue: Degraded on the add-on, published claims stay.
        ds2.write_text("datasets: [{name: Digits!, path: /x}]")
        bad = await wait_for(
            lambda: degraded(hub, c2), timeout=10, message="Degraded condition appears"
        )
        assert (bad["status"], bad["reason"]) == ("True", cond.REASON_CATALOGUE_INVALID)
        assert "datasets[0].name" in bad["message"]
        assert DIGITS in await hub_claims(hub, c2)
        await wait_decided(hub, [c2])
        assert agents[1].agent.metrics.claims_published._value.get() == 2

        catalogue(ds2, {"digits": tmp_path / "d2"})

        async def healthy() -> bool:
            current = await degraded(hub, c2)
            return current is not None and current["status"] == "False"

        await wait_for(healthy, timeout=10, message="Degraded clears")

        async def mnist_gone() -> bool:
            return naming.dataset_claim_name("mnist") not in await hub_claims(hub, c2)

        await wait_for(mnist_gone, timeout=10, message="mnist claim removed")
    finally:
        for running in agents:
            await running.stop()
        await spoke1.close()
        await hub.close()


async def test_lease_metrics_and_probes(sandbox: Sandbox) -> None:
    cluster = sandbox.cluster_names[0]
    ns = sandbox.agent_namespace(cluster)
    hub = await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig)
    spoke = await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig(cluster))
    running = await start_agent(sandbox, cluster)
    try:
        lease = await wait_for(
            lambda: spoke.get_or_none(r.LEASE, keys.AGENT_LEASE_NAME, namespace=ns),
            timeout=10,
            message="health lease created",
        )
        first = lease["spec"]["renewTime"]

        async def renewed() -> bool:
            current = await spoke.get(r.LEASE, keys.AGENT_LEASE_NAME, namespace=ns)
            return bool(current["spec"]["renewTime"] != first)

        await wait_for(renewed, timeout=5, message="lease renewed")

        async def available() -> bool:
            conditions = await addon_conditions(hub, cluster)
            found = cond.find(conditions, "Available")
            return found is not None and found["status"] == "True"

        await wait_for(available, timeout=15, message="add-on Available from the lease")

        port = running.agent.metrics_port
        assert port
        async with aiohttp.ClientSession() as session:
            for path in ("/healthz", "/readyz"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    assert resp.status == 200, path
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
        for series in (
            'federated_learning_agent_rounds_trained_total{result="UpdateReady"} 0.0',
            'federated_learning_agent_failures_total{reason="DeadlineExceeded"} 0.0',
            'federated_learning_agent_reports_total{result="Training"} 0.0',
            "federated_learning_agent_claims_published 0.0",
            "federated_learning_agent_job_duration_seconds_count 0.0",
            "controller_runtime_reconcile_total",
        ):
            assert series in text, series
    finally:
        await running.stop()
        await spoke.close()
        await hub.close()
