"""Everything the emulated controllers write is valid against the upstream OCM CRDs.

The sandbox serves ``../shared/ocm-crds`` with validation, so an invalid write would be
answered 422; a field the schema does not know would be pruned, and the controller, finding
its write missing on the next look, would write again. So: exercise every controller, let
them settle, resync everything, and check that nothing was refused and nothing rewritten.
"""

from __future__ import annotations

from typing import Any

from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.ocm.scheduling import PLACEMENT_LABEL
from fl_sandbox.sandbox import Sandbox
from tests.conftest import SandboxFactory

CLAIM = "digits.dataset.federated-learning.io"


def writes(sandbox: Sandbox) -> dict[str, int]:
    servers = {"hub": sandbox.hub, **sandbox.spokes}
    return {
        name: sum(
            1
            for rec in server.request_log
            if rec.method not in ("GET", "HEAD") and rec.status < 400
        )
        for name, server in servers.items()
    }


def refused(sandbox: Sandbox) -> list[Any]:
    servers = [sandbox.hub, *sandbox.spokes.values()]
    return [rec for server in servers for rec in server.request_log if rec.status == 422]


async def test_controller_writes_are_valid_and_stable(sandbox_factory: SandboxFactory) -> None:
    async with (
        sandbox_factory(clusters=2, resync_period=None, feedback_interval=60.0) as sb,
        await KubeApi.from_kubeconfig(sb.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sb.cluster_kubeconfig("cluster1")) as spoke,
    ):
        await spoke.create(r.CLUSTER_CLAIM, {"metadata": {"name": CLAIM}, "spec": {"value": "x"}})
        await hub.create(r.NAMESPACE, {"metadata": {"name": "team"}})
        await hub.create(
            r.MANAGED_CLUSTER_SET_BINDING,
            {"metadata": {"name": "global", "namespace": "team"}, "spec": {"clusterSet": "global"}},
        )
        predicate = {"claimSelector": {"matchExpressions": [{"key": CLAIM, "operator": "Exists"}]}}
        await hub.create(
            r.PLACEMENT,
            {
                "metadata": {"name": "p", "namespace": "team"},
                "spec": {"predicates": [{"requiredClusterSelector": predicate}]},
            },
        )
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "default"},
            "data": {"n": "1"},
        }
        await hub.create(
            r.MANIFEST_WORK,
            {
                "metadata": {"name": "w", "namespace": "cluster1"},
                "spec": {
                    "workload": {"manifests": [manifest]},
                    "manifestConfigs": [
                        {
                            "resourceIdentifier": {
                                "resource": "configmaps",
                                "name": "cm",
                                "namespace": "default",
                            },
                            "feedbackRules": [
                                {
                                    "type": "JSONPaths",
                                    "jsonPaths": [{"name": "n", "path": ".data.n"}],
                                }
                            ],
                        }
                    ],
                },
            },
        )

        async def settled() -> bool:
            listed = await hub.list(
                r.PLACEMENT_DECISION, namespace="team", label_selector=f"{PLACEMENT_LABEL}=p"
            )
            chosen = [
                d["clusterName"]
                for obj in listed.items
                for d in (obj.get("status") or {}).get("decisions") or []
            ]
            work = await hub.get(r.MANIFEST_WORK, "w", namespace="cluster1")
            manifests = ((work.get("status") or {}).get("resourceStatus") or {}).get("manifests")
            cluster = await hub.get(r.MANAGED_CLUSTER, "cluster1")
            claims = (cluster.get("status") or {}).get("clusterClaims") or []
            return bool(chosen == ["cluster1"] and manifests and claims) and bool(
                sb.runtime and sb.runtime.is_settled()
            )

        await wait_for(settled, timeout=15, message="every controller did its part")
        assert refused(sb) == []
        before = writes(sb)
        assert sb.runtime is not None
        sb.runtime.resync()
        runtime = sb.runtime
        await wait_for(runtime.is_settled, timeout=15, message="resync finished")
        assert writes(sb) == before, "a controller rewrote objects it had already written"
        assert refused(sb) == []
