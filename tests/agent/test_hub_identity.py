"""The agent under its own least-privilege hub identity (RBAC enforced, granted by the hub
manager): it reports for its cluster and cannot write another cluster's reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fl_contract import keys
from fl_kube import Forbidden, KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from tests.agent.harness import catalogue, round_report, round_spec, spec_configmap, start_agent


async def test_agent_reports_with_its_own_identity_only(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    async with sandbox_factory(
        clusters=2, authorize=True, hub_manager=True, agents=False, datasets=False
    ) as sb:
        c1, c2 = sb.cluster_names
        ns = sb.agent_namespace(c1)
        hub = await KubeApi.from_kubeconfig(sb.hub_kubeconfig)
        spoke = await KubeApi.from_kubeconfig(sb.cluster_kubeconfig(c1))
        as_c1 = await KubeApi.from_kubeconfig(sb.agent_hub_kubeconfig(c1))
        running = await start_agent(
            sb, c1, datasets=catalogue(tmp_path / "ds.yaml", {"digits": tmp_path / "data"})
        )
        try:
            spec = round_spec(sb, cluster=c1, uid="uid-rbac")
            await spoke.create(r.CONFIGMAP, spec_configmap(spec, namespace=ns), namespace=ns)

            async def ready() -> bool:
                found = await round_report(hub, c1)
                return found is not None and found[1].state == "UpdateReady"

            await wait_for(ready, timeout=30, message="report written with the agent's identity")

            other = await hub.get(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=c2)
            forged = {
                "type": "round.federated-learning.io/team-a.digits",
                "status": "True",
                "reason": "UpdateReady",
                "message": "{}",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
            with pytest.raises(Forbidden):
                await as_c1.patch(
                    r.MANAGED_CLUSTER_ADDON,
                    keys.ADDON_NAME,
                    {
                        "metadata": {"resourceVersion": other["metadata"]["resourceVersion"]},
                        "status": {"conditions": [forged]},
                    },
                    namespace=c2,
                    subresource="status",
                )
            assert await round_report(hub, c2) is None
        finally:
            await running.stop()
            for api in (hub, spoke, as_c1):
                await api.close()
