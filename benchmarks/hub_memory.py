"""`python -m benchmarks.hub_memory [--clusters 1000]`: the hub manager's memory per cluster.

The hub's API server (the sandbox's, in its own process so that its memory is not counted)
holds N managed clusters as a hub sees them: a ManagedCluster, a cluster namespace and a
ManagedClusterAddOn with the add-on Available. One job selects all N (PlacementDecisions in
pages of 100, as the placement controller writes them). The real hub manager runs in this
process; tracemalloc measures what it holds once idle (no clusters) and once round 1 is
under way with every cluster's report in (its informer caches of ManagedClusters, add-ons,
ManifestWorks, the agents' Roles and RoleBindings and PlacementDecisions; the job's
per-cluster state: round session, write memos, participant states). The difference divided
by N is the cost of one cluster. Results go to benchmarks/results/hub_memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import platform
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import report as report_file
from fl_contract import keys, naming
from fl_contract.models import RoundReport
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.errors import Conflict
from fl_kube.waiting import wait_for
from hub_manager.app import run_hub_manager
from hub_manager.metrics import HubMetrics
from hub_manager.placement import PLACEMENT_LABEL
from hub_manager.settings import HubSettings

RESULTS = Path(__file__).resolve().parent / "results" / "hub_memory.json"
OCM_CRDS = Path(__file__).resolve().parents[2] / "shared" / "ocm-crds"
NAMESPACE = "team-a"
JOB = "fleet"
PAGE = 100  # clusters per PlacementDecision, as upstream
CONCURRENCY = 16


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _gather(items: list[Any], act: Callable[[Any], Awaitable[None]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: Any) -> None:
        async with gate:
            await act(item)

    await asyncio.gather(*(one(i) for i in items))


async def _register(hub: KubeApi, cluster: str) -> None:
    await hub.create(
        r.MANAGED_CLUSTER, {"metadata": {"name": cluster}, "spec": {"hubAcceptsClient": True}}
    )
    await hub.create(r.NAMESPACE, {"metadata": {"name": cluster}})
    addon = await hub.create(
        r.MANAGED_CLUSTER_ADDON,
        {"metadata": {"name": keys.ADDON_NAME, "namespace": cluster}, "spec": {}},
        namespace=cluster,
    )
    addon["status"] = {
        "namespace": "open-cluster-management-agent-addon",
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "ProbeAvailable",
                "message": f"{keys.ADDON_NAME} add-on is available.",
                "lastTransitionTime": _now(),
            }
        ],
    }
    await hub.replace(r.MANAGED_CLUSTER_ADDON, addon, subresource="status")


async def _report(hub: KubeApi, cluster: str, uid: str) -> None:
    """The agent's Training report, written as the agent writes it (a condition)."""
    report = RoundReport(job_uid=uid, cluster=cluster, round=1, attempt=1, state="Training")
    for _ in range(10):
        addon = await hub.get(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=cluster)
        addon["status"]["conditions"].append(
            {
                "type": naming.round_condition_type(NAMESPACE, JOB),
                "status": "Unknown",
                "reason": "Training",
                "message": report.to_message(),
                "lastTransitionTime": _now(),
            }
        )
        with contextlib.suppress(Conflict):
            await hub.replace(r.MANAGED_CLUSTER_ADDON, addon, subresource="status")
            return


async def _decide(hub: KubeApi, clusters: list[str]) -> None:
    """What the placement controller writes: the decisions in pages, then the status."""
    placement_name = naming.placement_name(JOB)

    async def placement() -> dict[str, Any] | None:
        return await hub.get_or_none(r.PLACEMENT, placement_name, namespace=NAMESPACE)

    found = await wait_for(placement, timeout=60, message="the job's Placement")
    for index in range(0, len(clusters), PAGE):
        page = await hub.create(
            r.PLACEMENT_DECISION,
            {
                "metadata": {
                    "name": f"{placement_name}-decision-{index // PAGE + 1}",
                    "namespace": NAMESPACE,
                    "labels": {
                        PLACEMENT_LABEL: placement_name,
                        "cluster.open-cluster-management.io/decision-group-index": "0",
                        "cluster.open-cluster-management.io/decision-group-name": "",
                    },
                }
            },
            namespace=NAMESPACE,
        )
        page["status"] = {
            "decisions": [{"clusterName": c, "reason": ""} for c in clusters[index : index + PAGE]]
        }
        await hub.replace(r.PLACEMENT_DECISION, page, subresource="status")
    found["status"] = {
        "numberOfSelectedClusters": len(clusters),
        "conditions": [
            {
                "type": "PlacementSatisfied",
                "status": "True",
                "reason": "AllDecisionsScheduled",
                "message": "All cluster decisions scheduled",
                "lastTransitionTime": _now(),
            }
        ],
    }
    await hub.replace(r.PLACEMENT, found, subresource="status")


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def measure(clusters: int, workdir: Path) -> dict[str, Any]:
    kubeconfig = workdir / "hub.kubeconfig"
    command = [sys.executable, "-m", "fl_sandbox.apiserver", "--name", "hub"]
    command += ["--kubeconfig", str(kubeconfig), "--history-limit", str(20 * clusters + 10000)]
    if OCM_CRDS.is_dir():
        command += ["--crd-dir", str(OCM_CRDS)]
    server = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert server.stdout is not None
    await asyncio.wait_for(server.stdout.readline(), timeout=60)
    manager: asyncio.Task[None] | None = None
    try:
        async with await KubeApi.from_kubeconfig(kubeconfig) as hub:
            settings = HubSettings(
                kubeconfig=str(kubeconfig),
                leader_election=False,
                file_store_root=workdir / "models",
                metrics_bind_address="127.0.0.1:0",
            )
            tracemalloc.start()
            manager = asyncio.create_task(run_hub_manager(settings, metrics=HubMetrics()))

            async def registered() -> bool:
                listed = await hub.list(r.CLUSTER_MANAGEMENT_ADDON)
                return bool(listed.items)

            await wait_for(registered, timeout=60, message="the manager registered the add-on")
            await asyncio.sleep(1.0)  # its informers are listed and idle
            idle = _traced()

            names = [f"cluster-{i:04d}" for i in range(clusters)]
            started = time.monotonic()
            await _gather(names, lambda c: _register(hub, c))
            await hub.create(r.NAMESPACE, {"metadata": {"name": NAMESPACE}})
            job = await hub.create(
                r.FEDERATED_LEARNING,
                {
                    "apiVersion": r.FEDERATED_LEARNING.api_version,
                    "kind": r.FEDERATED_LEARNING.kind,
                    "metadata": {"name": JOB, "namespace": NAMESPACE},
                    "spec": {
                        "framework": "other",
                        "server": {
                            "rounds": 1,
                            "minAvailableClients": clusters,
                            "roundTimeout": "1h",
                            "strategy": {"name": "FedAvg"},
                        },
                        "client": {"image": "trainer:1", "placement": {"clusterSets": ["global"]}},
                    },
                },
                namespace=NAMESPACE,
            )
            await _decide(hub, names)
            work = naming.manifest_work_name(job["metadata"]["uid"])

            async def delivered() -> bool:
                listed = await hub.list(
                    r.MANIFEST_WORK, label_selector=f"{keys.LABEL_JOB_UID}={job['metadata']['uid']}"
                )
                return len([o for o in listed.items if o["metadata"]["name"] == work]) == clusters

            await wait_for(delivered, timeout=600, interval=1.0, message="every round spec")
            uid = str(job["metadata"]["uid"])
            await _gather(names, lambda c: _report(hub, c, uid))

            async def reported() -> bool:
                obj = await hub.get(r.FEDERATED_LEARNING, JOB, namespace=NAMESPACE)
                summary = (obj.get("status") or {}).get("participantSummary") or {}
                return (summary.get("states") or {}).get("Training") == clusters

            await wait_for(reported, timeout=600, interval=1.0, message="every report folded in")
            await asyncio.sleep(2.0)  # the informers have every event
            loaded = _traced()
            obj = await hub.get(r.FEDERATED_LEARNING, JOB, namespace=NAMESPACE)
            status_bytes = len(json.dumps(obj["status"], separators=(",", ":")))
            seconds = time.monotonic() - started
    finally:
        if manager is not None:
            manager.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await manager
        tracemalloc.stop()
        server.terminate()
        await server.wait()
    return {
        "clusters": clusters,
        "idle_bytes": idle,
        "loaded_bytes": loaded,
        "per_cluster_bytes": round((loaded - idle) / clusters),
        "status_bytes": status_bytes,
        "seconds_to_round_in_progress": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hub_memory", description=__doc__)
    parser.add_argument("--clusters", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fl-hub-memory-") as folder:
        # A small run first, so that what the manager imports or builds once (numpy,
        # the strategies, the clients) is not counted as the clusters' cost.
        for name in ("warm-up", "measured"):
            (Path(folder) / name).mkdir()
        asyncio.run(measure(10, Path(folder) / "warm-up"))
        result = asyncio.run(measure(args.clusters, Path(folder) / "measured"))
    result["python"] = platform.python_version()
    report_file.write(RESULTS, result)
    print(
        f"hub manager with {result['clusters']} clusters in a round: "
        f"{result['per_cluster_bytes'] / 1024:.1f} KiB per cluster above idle "
        f"({result['idle_bytes'] / 2**20:.1f} MiB idle, {result['loaded_bytes'] / 2**20:.1f} MiB "
        f"loaded, traced by tracemalloc); status {result['status_bytes'] / 1024:.1f} KiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
