"""PlacementDecisions are paged at 100 clusters per object, as on a real hub: the emulated
placement controller writes the pages as upstream does, and the hub manager reads every
page of its placement through one label-selected informer."""

from __future__ import annotations

import asyncio
import contextlib

from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.informer import Informer
from fl_kube.waiting import wait_for
from fl_sandbox.ocm.scheduling import DECISION_GROUP_INDEX_LABEL
from fl_sandbox.sandbox import Sandbox
from hub_manager.placement import PLACEMENT_LABEL, decisions_of, selection

NS = "team-a"
EXTRA = 148  # with the sandbox's 2 clusters: 150, two pages


async def test_decisions_of_150_clusters_come_in_two_pages_and_are_all_read(
    sandbox: Sandbox,
) -> None:
    async with await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub:
        await hub.create(r.NAMESPACE, {"metadata": {"name": NS}})
        for i in range(EXTRA):
            await hub.create(
                r.MANAGED_CLUSTER,
                {"metadata": {"name": f"edge-{i:03d}"}, "spec": {"hubAcceptsClient": True}},
            )
        await hub.create(
            r.MANAGED_CLUSTER_SET_BINDING,
            {"metadata": {"name": "global", "namespace": NS}, "spec": {"clusterSet": "global"}},
        )
        await hub.create(r.PLACEMENT, {"metadata": {"name": "wide", "namespace": NS}, "spec": {}})
        # The hub manager's view: every PlacementDecision a Placement owns, cluster-wide.
        decisions = Informer(hub, r.PLACEMENT_DECISION, label_selector=PLACEMENT_LABEL)
        task = asyncio.create_task(decisions.run())
        try:

            def chosen() -> tuple[str, ...]:
                owned = decisions_of(decisions.list(), namespace=NS, placement="wide")
                return selection(None, owned).clusters

            await wait_for(
                lambda: len(chosen()) == EXTRA + 2, timeout=30, message="150 clusters decided"
            )
            assert set(chosen()) == {f"edge-{i:03d}" for i in range(EXTRA)} | set(
                sandbox.cluster_names
            )
            pages = await hub.list(
                r.PLACEMENT_DECISION, namespace=NS, label_selector=f"{PLACEMENT_LABEL}=wide"
            )
            by_name = {p["metadata"]["name"]: p for p in pages.items}
            assert sorted(by_name) == ["wide-decision-1", "wide-decision-2"]
            sizes = [len(by_name[n]["status"]["decisions"]) for n in sorted(by_name)]
            assert sizes == [100, 50]
            for page in by_name.values():
                assert page["metadata"]["labels"][DECISION_GROUP_INDEX_LABEL] == "0"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
