"""Informer + Controller running for real against the API server: a level-based loop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prometheus_client import CollectorRegistry

from fl_kube import resources as r
from fl_kube.backoff import BackoffPolicy, RateLimiter
from fl_kube.client import KubeApi
from fl_kube.controller import Controller, Result
from fl_kube.errors import Conflict
from fl_kube.informer import Informer, WatchSettings
from fl_kube.metrics import ControllerMetrics
from fl_kube.waiting import wait_for
from fl_sandbox.apiserver import ApiServer

Key = tuple[str, str]
SETTINGS = WatchSettings(backoff=BackoffPolicy(base=0.02, cap=0.2))


class Mirror:
    """Keeps annotation ``mirror`` equal to label ``source`` on every ConfigMap."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.informer = Informer(api, r.CONFIGMAP, namespace="default", settings=SETTINGS)
        self.registry = CollectorRegistry()
        self.controller: Controller[Key] = Controller(
            "mirror",
            self.reconcile,
            workers=2,
            metrics=ControllerMetrics(self.registry),
            rate_limiter=RateLimiter(BackoffPolicy(base=0.01, cap=0.1)),
        )
        self.informer.subscribe(self.on_event)

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.controller.enqueue((meta["namespace"], meta["name"]))

    async def reconcile(self, key: Key) -> Result | None:
        namespace, name = key
        obj = self.informer.get(name, namespace)
        if obj is None:
            return None  # gone: nothing to do
        meta = obj["metadata"]
        want = (meta.get("labels") or {}).get("source")
        have = (meta.get("annotations") or {}).get("mirror")
        if want == have:
            return None  # level-based: no difference, no write
        await self.api.patch(
            r.CONFIGMAP,
            name,
            {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": {"mirror": want},
                }
            },
            namespace=namespace,
        )
        return None


def patches(server: ApiServer) -> int:
    return sum(1 for rec in server.request_log if rec.method == "PATCH" and rec.status < 300)


async def test_loop_converges_and_writes_only_differences(api: KubeApi, server: ApiServer) -> None:
    mirror = Mirror(api)
    tasks = [
        asyncio.create_task(mirror.informer.run()),
        asyncio.create_task(mirror.controller.run()),
    ]
    try:
        await mirror.informer.wait_synced(5)
        for i in range(5):
            body = {"metadata": {"name": f"cm{i}", "labels": {"source": f"v{i}"}}}
            await api.create(r.CONFIGMAP, body, namespace="default")

        def converged() -> bool:
            return (
                all(
                    (o["metadata"].get("annotations") or {}).get("mirror")
                    == o["metadata"]["labels"]["source"]
                    for o in mirror.informer.list()
                )
                and len(mirror.informer.list()) == 5
            )

        await wait_for(lambda: converged() and mirror.controller.is_idle(), timeout=5)
        assert patches(server) == 5  # one write per object; the echoes wrote nothing

        # Failing writes go through the per-key backoff; the loop still converges.
        server.faults.fail(1.0, status=500, methods=["PATCH"], count=2)
        cm0 = await api.get(r.CONFIGMAP, "cm0", namespace="default")
        cm0["metadata"]["labels"]["source"] = "new"
        await api.replace(r.CONFIGMAP, cm0, namespace="default")  # PUT: not hit by the fault
        await wait_for(
            lambda: (
                (mirror.informer.get("cm0", "default") or {})
                .get("metadata", {})
                .get("annotations", {})
                .get("mirror")
                == "new"
            ),
            timeout=5,
        )
        errors = mirror.registry.get_sample_value(
            "controller_runtime_reconcile_errors_total", {"controller": "mirror"}
        )
        assert errors is not None
        assert errors == 2  # both injected failures went through the backoff path
        assert patches(server) == 6
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_conflicting_writers_settle(api: KubeApi, server: ApiServer) -> None:
    """Two copies of the loop on one object: 409s are retried, the end state is right."""
    first, second = Mirror(api), Mirror(api)
    tasks = [
        asyncio.create_task(coro)
        for m in (first, second)
        for coro in (m.informer.run(), m.controller.run())
    ]
    try:
        await api.create(
            r.CONFIGMAP,
            {"metadata": {"name": "shared", "labels": {"source": "x"}}},
            namespace="default",
        )
        for value in ("a", "b", "c"):
            with contextlib.suppress(Conflict):
                await api.patch(
                    r.CONFIGMAP,
                    "shared",
                    {"metadata": {"labels": {"source": value}}},
                    namespace="default",
                )

        async def settled() -> bool:
            obj = await api.get(r.CONFIGMAP, "shared", namespace="default")
            return bool(
                obj["metadata"].get("annotations", {}).get("mirror") == "c"
                and first.controller.is_idle()
                and second.controller.is_idle()
            )

        await wait_for(settled, timeout=5)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
