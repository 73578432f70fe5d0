"""What the agent asks of the hub's API server per round, counted in its request log.

The agent reads its ManagedClusterAddOn before every report and in every reconcile; those
reads come from a watch of that one object, so a round costs the hub its status writes and
nothing else (a GET only to recover from a 409).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from fl_contract import keys, naming
from fl_kube import Forbidden, KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.ocm.addons import agent_user
from fl_sandbox.sandbox import Sandbox
from tests.agent.harness import AgentCluster, round_report, round_spec, spec_configmap, start_agent

ROUNDS = 3


async def test_a_round_costs_the_hub_its_status_writes_and_no_reads(
    sandbox: Sandbox, agent_cluster: AgentCluster
) -> None:
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    hub, spoke = agent_cluster.hub, agent_cluster.spoke
    assert sandbox.hub is not None
    log = sandbox.hub.request_log
    user = agent_user(cluster, keys.ADDON_NAME)

    def addon_requests(start: int) -> list[Any]:
        return [
            rec
            for rec in log[start:]
            if rec.user == user and rec.resource == "managedclusteraddons"
        ]

    running = await start_agent(sandbox, cluster, datasets=agent_cluster.datasets)
    try:
        await wait_for(
            lambda: any(
                rec.verb == "list" and rec.status == 200 and "fieldSelector" in rec.query
                for rec in addon_requests(0)
            ),
            timeout=10,
            message="the agent lists its ManagedClusterAddOn to watch it",
        )
        await wait_for(running.agent.ready, timeout=10, message="agent ready")
        # Its start-up writes (the catalogue's Degraded condition) are not a round's.
        await asyncio.wait_for(running.agent.claims.synced.wait(), timeout=10)
        start = len(log)
        name = naming.round_spec_configmap_name("uid-requests")
        for round_number in range(1, ROUNDS + 1):
            spec = round_spec(
                sandbox, cluster=cluster, uid="uid-requests", round_number=round_number
            )
            configmap = spec_configmap(spec, namespace=ns)
            if round_number == 1:
                await spoke.create(r.CONFIGMAP, configmap, namespace=ns)
            else:
                body = {"metadata": {"labels": configmap["metadata"]["labels"]}}
                await spoke.patch(
                    r.CONFIGMAP, name, {**body, "data": configmap["data"]}, namespace=ns
                )

            async def done(round_number: int = round_number) -> bool:
                found = await round_report(hub, cluster)
                return bool(
                    found and found[1].round == round_number and found[1].state == "UpdateReady"
                )

            await wait_for(done, timeout=30, message=f"round {round_number} reported")

        requests = addon_requests(start)
        gets = [rec for rec in requests if rec.verb == "get"]
        patches = [rec for rec in requests if rec.verb == "patch"]
        conflicts = [rec for rec in patches if rec.status == 409]
        # A report per state (Training, UpdateReady) per round; a read only after a 409.
        assert len(patches) - len(conflicts) <= 2 * ROUNDS, [rec.path for rec in patches]
        assert len(gets) <= len(conflicts), (len(gets), len(conflicts))
        print(
            f"\nagent requests to the hub per round: {len(gets) / ROUNDS:.2f} GETs of its "
            f"add-on, {len(patches) / ROUNDS:.2f} status writes"
        )
    finally:
        await running.stop()


async def test_the_agent_may_watch_its_add_on_by_name_only(sandbox_factory: Any) -> None:
    """The add-on's hub role (bound by the add-on manager in the cluster namespace) allows a
    list or watch with `metadata.name=federated-learning`, which kube-apiserver authorizes as
    a request for that resource name; without the selector it is every add-on: denied."""
    async with sandbox_factory(clusters=2, authorize=True, datasets=False) as sb:
        by_name = f"metadata.name={keys.ADDON_NAME}"
        mca = r.MANAGED_CLUSTER_ADDON
        async with await KubeApi.from_kubeconfig(sb.agent_hub_kubeconfig("cluster1")) as agent:
            listed = await agent.list(mca, namespace="cluster1", field_selector=by_name)
            assert [o["metadata"]["name"] for o in listed.items] == [keys.ADDON_NAME]
            # Authorized: the watch runs (until its one-second server timeout).
            await open_watch(agent, "cluster1", listed.resource_version, by_name)
            for namespace in sb.cluster_names:
                with pytest.raises(Forbidden):
                    await agent.list(mca, namespace=namespace)
                with pytest.raises(Forbidden):
                    await open_watch(agent, namespace, None, None)
            with pytest.raises(Forbidden):
                await agent.list(mca, namespace="cluster1", field_selector="metadata.name!=x")


async def open_watch(
    api: KubeApi, namespace: str, version: str | None, selector: str | None
) -> None:
    """Watch the add-on until the first event or the server's one-second timeout."""
    stream = api.watch(
        r.MANAGED_CLUSTER_ADDON,
        namespace=namespace,
        resource_version=version,
        field_selector=selector,
        timeout_seconds=1,
    )
    async with contextlib.aclosing(stream) as events:
        async for _ in events:
            break
