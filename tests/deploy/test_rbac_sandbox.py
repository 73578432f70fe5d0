"""The shipped RBAC is enough, on a hub that enforces it, and keeps clusters apart.

The sandbox hub authorizes every request. The hub manager runs as its ServiceAccount with
nothing but deploy/rbac.yaml; the agents run with the identities the add-on registration
issues and the hub permissions of addon_templates/ plus what the manager grants each
cluster. A whole job must complete without one refused request, and one cluster's agent
must not be able to write another cluster's report.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from fl_contract import keys, naming
from fl_kube import Forbidden, KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for

from .manifests import DEPLOY, SAMPLES, load_docs

NAMESPACE = "open-cluster-management-federated-learning"
ACCOUNT = "federated-learning-hub-manager"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
GROUPS = ("system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated")

pytestmark = pytest.mark.timeout(120)


async def _install_hub_rbac(admin: KubeApi) -> None:
    """What `kubectl apply -k deploy/` does for the manager's identity."""
    for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
        for doc in load_docs(DEPLOY / name):
            res = r.by_kind(doc["apiVersion"], doc["kind"])
            await admin.apply(
                res, doc, field_manager="kubectl", namespace=doc["metadata"].get("namespace")
            )


def _job() -> dict[str, Any]:
    (job,) = [d for d in yaml.safe_load_all((SAMPLES / "digits-fedavg.yaml").read_text()) if d]
    job["metadata"]["namespace"] = "default"
    job["spec"]["server"]["rounds"] = 2
    job["spec"]["server"]["minAvailableClients"] = 2
    return dict(job)


async def test_a_job_completes_with_only_the_shipped_permissions(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    from hub_manager.app import HubManager
    from hub_manager.settings import HubSettings

    async with sandbox_factory(clusters=2, agents=True, authorize=True) as sandbox:
        admin: KubeApi = sandbox.hub_api
        await _install_hub_rbac(admin)
        kubeconfig = sandbox.hub.write_kubeconfig(
            tmp_path / "manager.kubeconfig", user=USER, groups=GROUPS
        )
        manager = HubManager(
            HubSettings(
                kubeconfig=str(kubeconfig),
                leader_election=True,
                leader_election_namespace=NAMESPACE,
                default_store_path=str(sandbox.model_store_dir),
                metrics_bind_address="0",
            )
        )
        task = asyncio.create_task(manager.run())
        try:
            with contextlib.suppress(Exception):
                await admin.create(r.NAMESPACE, {"metadata": {"name": "default"}})
            job = _job()
            await admin.apply(r.FEDERATED_LEARNING, job, field_manager="kubectl")

            async def phase() -> str | None:
                if task.done():
                    task.result()
                obj = await admin.get(
                    r.FEDERATED_LEARNING, job["metadata"]["name"], namespace="default"
                )
                value = (obj.get("status") or {}).get("phase")
                return value if value in ("Completed", "Failed") else None

            assert await wait_for(phase, timeout=90, interval=0.2) == "Completed"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        refused = [
            f"{rec.method} {rec.path}" for rec in sandbox.hub.request_log if rec.status == 403
        ]
        assert refused == [], "requests the shipped RBAC did not allow"
        by_manager = [rec for rec in sandbox.hub.request_log if rec.user == USER]
        assert any(rec.resource == "manifestworks" for rec in by_manager)
        assert any(
            rec.resource == "roles" and rec.verb in ("create", "patch") for rec in by_manager
        )


async def test_one_clusters_agent_cannot_write_another_clusters_report(
    sandbox_factory: Any,
) -> None:
    async with sandbox_factory(clusters=2, authorize=True) as sandbox:
        admin: KubeApi = sandbox.hub_api
        # The per-cluster grant the hub manager makes (hub_manager.agent_rbac), for both.
        from hub_manager.agent_rbac import desired_role, desired_role_binding

        for cluster in sandbox.cluster_names:
            await admin.apply(r.ROLE, desired_role(cluster), field_manager="test")
            await admin.apply(r.ROLE_BINDING, desired_role_binding(cluster), field_manager="test")
        condition = {
            "type": naming.round_condition_type("default", "digits"),
            "status": "True",
            "reason": "UpdateReady",
            "message": "{}",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        patch = {"status": {"conditions": [condition]}}
        # (Reading another cluster's add-on is possible: the addon-manager binds the read-only
        # hub role to the add-on-wide group too. Writing must not be.)
        async with await KubeApi.from_kubeconfig(sandbox.agent_hub_kubeconfig("cluster1")) as agent:
            own = await agent.get(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace="cluster1")
            assert own["metadata"]["namespace"] == "cluster1"
            await agent.patch(
                r.MANAGED_CLUSTER_ADDON,
                keys.ADDON_NAME,
                patch,
                namespace="cluster1",
                subresource="status",
            )
            with pytest.raises(Forbidden):
                await agent.patch(
                    r.MANAGED_CLUSTER_ADDON,
                    keys.ADDON_NAME,
                    patch,
                    namespace="cluster2",
                    subresource="status",
                )
