"""Running real agents against the sandbox, and the round specs the hub would send them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import JobRef, RoundReport, RoundSpec, StoreConfig
from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.informer import WatchSettings
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from spoke_agent.app import Agent
from spoke_agent.settings import AgentSettings

FAST_WATCH = WatchSettings(server_timeout=30, inactivity_timeout=40.0)

# What a training container does, in a few lines: write an update through the model store and
# the result record to $FL_RESULT_PATH. With a gate file argument, wait for it first (so a test
# decides when training ends); "fail": exit 1 with a reason as the termination message;
# "crash": log to stderr and exit 3 without writing anything; "silent": exit 0 without a
# result record; "badhash": a record whose sha256 is wrong; "greedy": a record claiming
# more examples than the catalogue's dataset holds. A store that refuses the update fails
# the container with the reason as its termination message.
TRAIN = """
import asyncio, os, pathlib, sys, time
import numpy as np
from fl_contract.models import RoundSpec, TrainingResult
from fl_contract.weights import encode_weights
from fl_core.store import StoreError, open_round_store
mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
result_path = pathlib.Path(os.environ["FL_RESULT_PATH"])
if mode == "fail":
    result_path.write_text("ValueError: the dataset has no rows")
    sys.exit(1)
if mode == "crash":
    for step in range(100):
        print(f"step {step}: loss 0.5", file=sys.stderr)
    print("Traceback (most recent call last):", file=sys.stderr)
    print("MemoryError: cannot allocate 12 GiB for the batch", file=sys.stderr)
    sys.exit(3)
if mode == "silent":
    sys.exit(0)
if mode.startswith("gate="):
    gate = pathlib.Path(mode[5:])
    while not gate.exists():
        time.sleep(0.02)
spec = RoundSpec.from_json(pathlib.Path(os.environ["FL_ROUND_SPEC_PATH"]).read_text())
data = encode_weights({"w": np.full((2, 2), float(spec.round), dtype=np.float32)})
try:
    ref = asyncio.run(open_round_store(spec).put_uri(spec.update_uri, data))
except StoreError as exc:  # as fl-train does: the reason is the termination message
    result_path.write_text(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
sha = "0" * 64 if mode == "badhash" else ref.sha256
examples = 10**15 if mode == "greedy" else 5
result = TrainingResult(update_uri=ref.uri, sha256=sha, num_examples=examples, metrics={"loss": 0.25})
result_path.write_text(result.to_json())
"""


def catalogue(path: Path, datasets: dict[str, Path]) -> Path:
    """Write a catalogue file naming each dataset's folder."""
    entries = [
        {"name": name, "hostPath": str(folder), "samples": 5, "task": "classification"}
        for name, folder in datasets.items()
    ]
    path.write_text(json.dumps({"datasets": entries}))  # JSON is YAML
    for folder in datasets.values():
        folder.mkdir(parents=True, exist_ok=True)
    return path


def round_spec(
    sb: Sandbox,
    *,
    cluster: str,
    uid: str,
    name: str = "digits",
    round_number: int = 1,
    attempt: int = 1,
    mode: str = "ok",
    deadline_seconds: float = 60.0,
    dataset: str | None = "digits",
) -> RoundSpec:
    store = StoreConfig(uri=f"file://{sb.model_store_dir}")
    key = naming.update_key(
        namespace="team-a", job=name, round_number=round_number, cluster=cluster, attempt=attempt
    )
    return RoundSpec(
        job=JobRef(namespace="team-a", name=name, uid=uid),
        cluster=cluster,
        round=round_number,
        attempt=attempt,
        update_uri=f"{store.uri}/{key}",
        store=store,
        image="ocm-federated-learning/trainer:dev",
        command=["python", "-c", TRAIN],
        args=[mode],
        dataset=dataset,
        deadline=datetime.now(UTC) + timedelta(seconds=deadline_seconds),
    )


def spec_configmap(spec: RoundSpec, *, namespace: str) -> dict[str, Any]:
    """The ConfigMap as the work agent applies it from the hub's ManifestWork."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": naming.round_spec_configmap_name(spec.job.uid),
            "namespace": namespace,
            "labels": {
                keys.LABEL_COMPONENT: keys.COMPONENT_ROUND_SPEC,
                keys.LABEL_JOB_UID: spec.job.uid,
                keys.LABEL_JOB_NAMESPACE: spec.job.namespace,
                keys.LABEL_JOB_NAME: spec.job.name,
                keys.LABEL_ROUND: str(spec.round),
            },
        },
        "data": {keys.ROUND_SPEC_KEY: spec.to_json()},
    }


@dataclass
class RunningAgent:
    agent: Agent
    task: asyncio.Task[None]
    apis: list[KubeApi] = field(default_factory=list)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        for api in self.apis:
            await api.close()


async def start_agent(
    sb: Sandbox, cluster: str, *, datasets: Path | None = None, **overrides: Any
) -> RunningAgent:
    """The real agent, in this process, with the sandbox's kubeconfigs and short timings."""
    values: dict[str, Any] = {
        "cluster_name": cluster,
        "hub_kubeconfig": str(sb.agent_hub_kubeconfig(cluster)),
        "kubeconfig": str(sb.cluster_kubeconfig(cluster)),
        "namespace": sb.agent_namespace(cluster),
        "datasets": datasets,
        "metrics_bind_address": "127.0.0.1:0",
        "lease_renew_seconds": 0.5,
        "lease_duration_seconds": 2,
        "catalogue_poll_seconds": 0.1,
        "resync_seconds": 5.0,
        "identity": f"{cluster}-agent-test",
    }
    values.update(overrides)
    settings = AgentSettings.model_validate(values)
    hub = await KubeApi.from_kubeconfig(settings.hub_kubeconfig)
    spoke = await KubeApi.from_kubeconfig(settings.kubeconfig)
    agent = Agent(settings, hub=hub, spoke=spoke, watch=FAST_WATCH)
    task = asyncio.create_task(agent.run(), name=f"agent-{cluster}")
    return RunningAgent(agent=agent, task=task, apis=[hub, spoke])


async def addon_conditions(hub: KubeApi, cluster: str) -> list[dict[str, Any]]:
    addon = await hub.get(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=cluster)
    return list((addon.get("status") or {}).get("conditions") or [])


async def round_report(
    hub: KubeApi, cluster: str, *, namespace: str = "team-a", name: str = "digits"
) -> tuple[dict[str, Any], RoundReport] | None:
    """The job's round condition on the cluster's add-on and the report it carries."""
    wanted = naming.round_condition_type(namespace, name)
    for condition in await addon_conditions(hub, cluster):
        if condition.get("type") == wanted:
            return condition, RoundReport.from_message(condition["message"])
    return None


async def reported(hub: KubeApi, cluster: str, state: str, **kw: Any) -> Any:
    """Wait for the job's report on the cluster's add-on to reach `state`."""

    async def check() -> Any:
        found = await round_report(hub, cluster, **kw)
        return found if found and found[1].state == state else None

    return await wait_for(check, timeout=30, message=f"{cluster}: report {state}")


@dataclass
class AgentCluster:
    """One managed cluster as an agent test sees it: its name, the agent's namespace, a
    client for the hub and one for the cluster, and a catalogue with a `digits` dataset."""

    name: str
    namespace: str
    hub: KubeApi
    spoke: KubeApi
    datasets: Path

    async def deliver(self, spec: RoundSpec) -> None:
        """Put the round spec's ConfigMap in place, as the work agent does."""
        configmap = spec_configmap(spec, namespace=self.namespace)
        await self.spoke.create(r.CONFIGMAP, configmap, namespace=self.namespace)

    async def close(self) -> None:
        await self.hub.close()
        await self.spoke.close()


async def open_cluster(sb: Sandbox, cluster: str, *, tmp_path: Path) -> AgentCluster:
    hub = await KubeApi.from_kubeconfig(sb.hub_kubeconfig)
    spoke = await KubeApi.from_kubeconfig(sb.cluster_kubeconfig(cluster))
    return AgentCluster(
        name=cluster,
        namespace=sb.agent_namespace(cluster),
        hub=hub,
        spoke=spoke,
        datasets=catalogue(tmp_path / "ds.yaml", {"digits": tmp_path / "data"}),
    )
