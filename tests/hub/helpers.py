"""Test helpers for the hub manager against a sandbox: start the real manager in process,
create jobs, and report rounds the way an agent does (through the hub API, with the
cluster's own add-on identity, and through the model store)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fl_contract import keys, naming
from fl_contract.models import RoundReport, RoundSpec, StoreConfig, UpdateRef
from fl_contract.weights import decode_weights, encode_weights, sha256_hex
from fl_core.store import open_round_store, open_store
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.errors import Conflict, NotFound
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from hub_manager.app import run_hub_manager
from hub_manager.metrics import HubMetrics
from hub_manager.settings import HubSettings

MANAGER_USER = "fl-hub-manager"
SHAPES = {"dense/kernel": (4, 3), "dense/bias": (3,)}


@dataclass
class RunningManager:
    task: asyncio.Task[None]
    metrics: HubMetrics
    settings: HubSettings

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def manager_settings(sb: Sandbox, **overrides: Any) -> HubSettings:
    kubeconfig = sb.workdir / "hub-manager.kubeconfig"
    if not kubeconfig.exists():
        assert sb.hub is not None
        sb.hub.write_kubeconfig(kubeconfig, user=MANAGER_USER, groups=("system:masters",))
    values: dict[str, Any] = {
        "kubeconfig": str(kubeconfig),
        "leader_election": False,
        "file_store_root": sb.model_store_dir,
        "metrics_bind_address": "127.0.0.1:0",
        "waiting_recheck_seconds": 0.5,
        "resync_seconds": 5.0,
    }
    values.update(overrides)
    return HubSettings(**values)


def start_manager(sb: Sandbox, **overrides: Any) -> RunningManager:
    settings = manager_settings(sb, **overrides)
    metrics = HubMetrics()
    task = asyncio.create_task(run_hub_manager(settings, metrics=metrics), name="hub-manager")
    return RunningManager(task=task, metrics=metrics, settings=settings)


@contextlib.asynccontextmanager
async def manager(sb: Sandbox, **overrides: Any) -> AsyncIterator[RunningManager]:
    running = start_manager(sb, **overrides)
    try:
        yield running
    finally:
        await running.stop()


def hub(sb: Sandbox) -> KubeApi:
    assert sb.hub_api is not None
    return sb.hub_api


async def create_job(
    sb: Sandbox,
    name: str,
    *,
    namespace: str = "team-a",
    rounds: int = 2,
    min_available: int = 2,
    min_fit: int | None = None,
    timeout: str = "20s",  # noqa: ASYNC109 - the roundTimeout, not a cancel scope
    retries: int = 0,
    placement: dict[str, Any] | None = None,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    privacy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    api = hub(sb)
    with contextlib.suppress(Conflict):
        await api.create(r.NAMESPACE, {"metadata": {"name": namespace}})
    server_spec: dict[str, Any] = {
        "rounds": rounds,
        "minAvailableClients": min_available,
        "roundTimeout": timeout,
        "maxRoundRetries": retries,
        "strategy": {"name": "FedAvg"},
    }
    if min_fit is not None:
        server_spec["minFitClients"] = min_fit
    server_spec.update(server or {})
    client_spec: dict[str, Any] = {
        "image": "ocm-federated-learning/trainer:test",
        "placement": placement if placement is not None else {"clusterSets": ["global"]},
    }
    client_spec.update(client or {})
    spec: dict[str, Any] = {"framework": "other", "server": server_spec, "client": client_spec}
    if privacy is not None:
        spec["privacy"] = privacy
    body = {
        "apiVersion": r.FEDERATED_LEARNING.api_version,
        "kind": r.FEDERATED_LEARNING.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    return await api.create(r.FEDERATED_LEARNING, body, namespace=namespace)


async def get_job(sb: Sandbox, name: str, namespace: str = "team-a") -> dict[str, Any]:
    return await hub(sb).get(r.FEDERATED_LEARNING, name, namespace=namespace)


async def wait_status(
    sb: Sandbox,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    *,
    namespace: str = "team-a",
    timeout: float = 30.0,  # noqa: ASYNC109
    message: str = "",
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        obj = await get_job(sb, name, namespace)
        status = obj.get("status") or {}
        return status if check(status) else None

    result: dict[str, Any] = await wait_for(
        probe, timeout=timeout, interval=0.05, message=message or f"status of {name}"
    )
    return result


def phase_is(phase: str) -> Callable[[dict[str, Any]], bool]:
    return lambda status: status.get("phase") == phase


def in_round(round_number: int, attempt: int = 1) -> Callable[[dict[str, Any]], bool]:
    return lambda s: (
        s.get("round") == round_number
        and s.get("attempt") == attempt
        and ((s.get("model") or {}).get("round", 0) < round_number)
    )


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


@dataclass
class Cluster:
    """One cluster's side of the protocol, as its agent would act."""

    sb: Sandbox
    name: str
    api: KubeApi
    updates: int = 0
    reported: list[tuple[int, int]] = field(default_factory=list)

    async def round_spec(self, job_uid: str) -> RoundSpec | None:
        """The spec the hub delivered to this cluster (the ConfigMap on the spoke)."""
        spoke = self.sb.spoke_apis[self.name]
        configmap = await spoke.get_or_none(
            r.CONFIGMAP,
            naming.round_spec_configmap_name(job_uid),
            namespace=self.sb.agent_namespace(self.name),
        )
        if configmap is None:
            return None
        return RoundSpec.from_json((configmap.get("data") or {})[keys.ROUND_SPEC_KEY])

    async def wait_spec(
        self,
        job_uid: str,
        *,
        round_number: int,
        attempt: int = 1,
        timeout: float = 20.0,  # noqa: ASYNC109
    ) -> RoundSpec:
        async def probe() -> RoundSpec | None:
            spec = await self.round_spec(job_uid)
            if spec is not None and (spec.round, spec.attempt) == (round_number, attempt):
                return spec
            return None

        found: RoundSpec = await wait_for(
            probe,
            timeout=timeout,
            message=f"{self.name}: round spec {round_number}/{attempt}",
        )
        return found

    async def train(
        self,
        spec: RoundSpec,
        *,
        examples: int = 100,
        shift: float = 1.0,
        data: bytes | None = None,
        claimed_sha: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> RoundReport:
        """Write an update as the training Job would (with what the spec grants), then
        report it."""
        store = open_round_store(spec)
        try:
            if data is None:
                if spec.global_model is not None:
                    base = decode_weights(
                        await store.get(spec.global_model.uri, sha256=spec.global_model.sha256)
                    )
                else:
                    base = {k: np.zeros(v, dtype=np.float32) for k, v in SHAPES.items()}
                data = encode_weights(
                    {k: (v + np.float32(shift)).astype(np.float32) for k, v in base.items()}
                )
            ref = await store.put_uri(spec.update_uri, data)
        finally:
            await store.close()
        report = RoundReport(
            job_uid=spec.job.uid,
            cluster=self.name,
            round=spec.round,
            attempt=spec.attempt,
            state="UpdateReady",
            update=UpdateRef(uri=ref.uri, sha256=claimed_sha or ref.sha256, num_examples=examples),
            metrics=metrics if metrics is not None else {"loss": 1.0 / spec.round, "accuracy": 0.5},
            finished_at=datetime.now(UTC),
        )
        await self.report(spec, report)
        return report

    async def fail(self, spec: RoundSpec, message: str = "OOMKilled", *, reason: str = "") -> None:
        report = RoundReport(
            job_uid=spec.job.uid,
            cluster=self.name,
            round=spec.round,
            attempt=spec.attempt,
            state="TrainingFailed",
            reason=reason,
            message=message,
        )
        await self.report(spec, report, status="False", reason=reason or "TrainingFailed")

    async def report(
        self,
        spec: RoundSpec,
        report: RoundReport,
        *,
        status: str = "True",
        reason: str = "UpdateReady",
        addon_namespace: str | None = None,
    ) -> None:
        """Set the job's condition on the add-on status: read, modify, PUT with the
        resourceVersion, retry on 409 (what the agent does)."""
        condition_type = naming.round_condition_type(spec.job.namespace, spec.job.name)
        namespace = addon_namespace or self.name
        for _ in range(20):
            addon = await self.api.get(
                r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=namespace
            )
            state = addon.setdefault("status", {})
            conditions = [
                c for c in state.get("conditions") or [] if c.get("type") != condition_type
            ]
            conditions.append(
                {
                    "type": condition_type,
                    "status": status,
                    "reason": reason,
                    "message": report.to_message(),
                    "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
            state["conditions"] = conditions
            try:
                await self.api.replace(r.MANAGED_CLUSTER_ADDON, addon, subresource="status")
            except Conflict:
                continue
            self.reported.append((report.round, report.attempt))
            return
        raise AssertionError(f"{self.name}: could not write the report")

    async def heartbeat(self) -> None:
        """The agent's health Lease on its cluster: the add-on turns Available."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = {
            "apiVersion": r.LEASE.api_version,
            "kind": r.LEASE.kind,
            "metadata": {
                "name": keys.AGENT_LEASE_NAME,
                "namespace": self.sb.agent_namespace(self.name),
            },
            "spec": {
                "holderIdentity": f"agent-{self.name}",
                "leaseDurationSeconds": 60,
                "acquireTime": now,
                "renewTime": now,
            },
        }
        await self.sb.spoke_apis[self.name].apply(r.LEASE, lease, field_manager="test-agent")


async def clusters(sb: Sandbox, *, available: bool = True) -> dict[str, Cluster]:
    """Each cluster's agent side; with `available`, their add-ons turn Available."""
    out = {}
    for name in sb.cluster_names:
        api = await KubeApi.from_kubeconfig(sb.agent_hub_kubeconfig(name))
        out[name] = Cluster(sb=sb, name=name, api=api)
        if available:
            await out[name].heartbeat()
    return out


async def train_round(cs: dict[str, Cluster], uid: str, round_number: int) -> None:
    """Every cluster trains the round once its spec arrives, the i-th shifted by i + 1."""
    for i, cluster in enumerate(cs.values()):
        await cluster.train(await cluster.wait_spec(uid, round_number=round_number), shift=i + 1.0)


async def close_clusters(cs: dict[str, Cluster]) -> None:
    for c in cs.values():
        await c.api.close()


async def store_bytes(sb: Sandbox, uri: str, sha256: str) -> bytes:
    """A model from the jobs' default file:// store (verified against its sha256)."""
    store = open_store(StoreConfig(uri=sb.model_store_dir.resolve().as_uri()))
    try:
        return await store.get(uri, sha256=sha256)
    finally:
        await store.close()


def model_sha(data: bytes) -> str:
    return sha256_hex(data)


async def works_of(sb: Sandbox, uid: str) -> list[dict[str, Any]]:
    listed = await hub(sb).list(r.MANIFEST_WORK, label_selector=f"{keys.LABEL_JOB_UID}={uid}")
    return listed.items


async def exists(sb: Sandbox, res: r.Resource, name: str, namespace: str | None = None) -> bool:
    try:
        await hub(sb).get(res, name, namespace=namespace)
    except NotFound:
        return False
    return True
