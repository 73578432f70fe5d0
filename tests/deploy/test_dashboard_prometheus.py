"""Every dashboard query returns data from a real Prometheus scraping a real (sandbox) job.

A `prometheus` server on loopback scrapes the hub manager's and two agents' /metrics every
second while a 2-cluster, 2-round digits job runs; then each query of the Grafana dashboard
goes through Prometheus's HTTP API and must return at least one finite value.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for

from .dashboard import load, queries
from .manifests import OCM_CRDS, SAMPLES

PROMETHEUS = shutil.which("prometheus")
CLUSTERS = 2
ROUNDS = 2
NAMESPACE = "default"

pytestmark = [
    pytest.mark.skipif(
        PROMETHEUS is None,
        reason="the `prometheus` binary is not installed (Debian package prometheus; "
        ".ci/run installs it): the dashboard queries are not checked against real data",
    ),
    pytest.mark.timeout(180),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _prometheus(
    workdir: Path, *, hub_port: int, agent_ports: dict[str, int]
) -> AsyncIterator[str]:
    """A Prometheus of our own (never the system service), killed and cleaned up after."""
    assert PROMETHEUS is not None
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "federated-learning-hub-manager",
                "static_configs": [{"targets": [f"127.0.0.1:{hub_port}"]}],
            },
            {
                "job_name": "federated-learning-agent",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{port}"], "labels": {"cluster": cluster}}
                    for cluster, port in agent_ports.items()
                ],
            },
        ],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def _query(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert body.get("status") == "success", f"{expr}: {body.get('error')}"
    return list(body["data"]["result"])


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


async def _run_until(
    tasks: list[asyncio.Task[None]], condition: Callable[[], Awaitable[Any]]
) -> Any:
    """Await the condition, failing early if a component died."""
    waiter = asyncio.ensure_future(condition())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        for task in done:
            task.result()  # raises the component's error
        raise AssertionError("a component stopped")
    return waiter.result()


async def test_every_dashboard_query_returns_data(tmp_path: Path) -> None:
    from fl_sandbox.sandbox import Sandbox
    from hub_manager.app import HubManager
    from hub_manager.settings import HubSettings
    from spoke_agent.app import Agent
    from spoke_agent.settings import AgentSettings

    crd_dirs = [OCM_CRDS] if OCM_CRDS.is_dir() else []
    sandbox = Sandbox(workdir=tmp_path / "sandbox", clusters=CLUSTERS, crd_dirs=crd_dirs)
    tasks: list[asyncio.Task[None]] = []
    apis: list[KubeApi] = []
    async with sandbox:
        manager = HubManager(
            HubSettings(
                kubeconfig=str(sandbox.hub_kubeconfig),
                leader_election=False,
                default_store_path=str(sandbox.model_store_dir),
                metrics_bind_address="127.0.0.1:0",
            )
        )
        tasks.append(asyncio.create_task(manager.run()))
        agents: dict[str, Agent] = {}
        for cluster in sandbox.cluster_names:
            settings = AgentSettings(
                cluster_name=cluster,
                hub_kubeconfig=str(sandbox.agent_hub_kubeconfig(cluster)),
                kubeconfig=str(sandbox.cluster_kubeconfig(cluster)),
                namespace=sandbox.agent_namespace(cluster),
                datasets=sandbox.catalogue_path(cluster),
                metrics_bind_address="127.0.0.1:0",
            )
            hub = await KubeApi.from_kubeconfig(settings.hub_kubeconfig)
            spoke = await KubeApi.from_kubeconfig(settings.kubeconfig)
            apis += [hub, spoke]
            agents[cluster] = Agent(settings, hub=hub, spoke=spoke)
            tasks.append(asyncio.create_task(agents[cluster].run()))
        try:
            await _run_until(
                tasks,
                lambda: wait_for(
                    lambda: manager.metrics_port and all(a.metrics_port for a in agents.values()),
                    timeout=30,
                    message="metrics servers did not start",
                ),
            )
            assert manager.metrics_port is not None
            ports = {c: int(a.metrics_port or 0) for c, a in agents.items()}
            async with (
                _prometheus(tmp_path, hub_port=manager.metrics_port, agent_ports=ports) as base,
                aiohttp.ClientSession() as session,
            ):

                async def all_targets_up() -> bool:
                    with contextlib.suppress(aiohttp.ClientError):
                        up = await _query(session, base, "up")
                        return len(up) == CLUSTERS + 1 and all(s["value"][1] == "1" for s in up)
                    return False

                await _run_until(
                    tasks,
                    lambda: wait_for(
                        all_targets_up, timeout=30, interval=0.2, message="targets not up"
                    ),
                )
                assert sandbox.hub_api is not None
                await _run_job(sandbox.hub_api, tasks)
                await _check_queries(session, base, tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for api in apis:
                await api.close()


async def _run_job(hub: KubeApi, tasks: list[asyncio.Task[None]]) -> None:
    (job,) = [d for d in yaml.safe_load_all((SAMPLES / "digits-fedavg.yaml").read_text()) if d]
    job["metadata"]["namespace"] = NAMESPACE
    job["spec"]["server"]["rounds"] = ROUNDS
    job["spec"]["server"]["minAvailableClients"] = CLUSTERS
    with contextlib.suppress(Exception):
        await hub.create(r.NAMESPACE, {"metadata": {"name": NAMESPACE}})
    await hub.apply(r.FEDERATED_LEARNING, job, field_manager="dashboard-test")
    name = job["metadata"]["name"]

    async def completed() -> bool:
        obj = await hub.get(r.FEDERATED_LEARNING, name, namespace=NAMESPACE)
        phase = (obj.get("status") or {}).get("phase")
        assert phase != "Failed", obj["status"]
        return phase == "Completed"

    await _run_until(
        tasks, lambda: wait_for(completed, timeout=90, interval=0.2, message="job not done")
    )


async def _check_queries(
    session: aiohttp.ClientSession, base: str, tasks: list[asyncio.Task[None]]
) -> None:
    """Wait (bounded) until every query has a finite value: a few scrapes after the job."""
    pending = {expr: title for title, expr in queries(load())}

    async def remaining() -> bool:
        for expr in list(pending):
            if _finite(await _query(session, base, expr)):
                del pending[expr]
        return not pending

    try:
        await _run_until(tasks, lambda: wait_for(remaining, timeout=20, interval=0.5))
    except TimeoutError:
        missing = "\n".join(f"{title}: {expr}" for expr, title in pending.items())
        raise AssertionError(f"dashboard queries without data:\n{missing}") from None
