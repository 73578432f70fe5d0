"""Informer against the emulated API server: events, resume after drops, 410 re-list."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fl_kube import resources as r
from fl_kube.backoff import BackoffPolicy
from fl_kube.client import KubeApi
from fl_kube.informer import Informer, WatchSettings
from fl_kube.waiting import wait_for
from fl_sandbox.apiserver import ApiServer

FAST = WatchSettings(
    server_timeout=30, inactivity_timeout=10, backoff=BackoffPolicy(base=0.02, cap=0.2)
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []  # (type, name, data value "v")

    def __call__(self, event_type: str, obj: dict[str, Any]) -> None:
        value = (obj.get("data") or {}).get("v", "")
        self.events.append((event_type, obj["metadata"]["name"], value))

    def of(self, name: str) -> list[tuple[str, str]]:
        return [(t, v) for t, n, v in self.events if n == name]


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[None]:
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced(5)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def cm(name: str, value: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"v": value}}


async def test_sees_existing_objects_then_create_update_delete(api: KubeApi) -> None:
    await api.create(r.CONFIGMAP, cm("before", "0"), namespace="default")
    informer = Informer(api, r.CONFIGMAP, namespace="default", settings=FAST)
    seen = Recorder()
    informer.subscribe(seen)
    async with running(informer):
        assert seen.of("before") == [("ADDED", "0")]
        await api.create(r.CONFIGMAP, cm("x", "1"), namespace="default")
        await api.patch(r.CONFIGMAP, "x", {"data": {"v": "2"}}, namespace="default")
        await wait_for(lambda: informer.get("x", "default"), timeout=5)
        await api.delete(r.CONFIGMAP, "x", namespace="default")
        await wait_for(lambda: len(seen.of("x")) == 3, timeout=5)
        assert seen.of("x") == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
        assert informer.get("x", "default") is None
        assert [o["metadata"]["name"] for o in informer.list()] == ["before"]


async def test_label_selector_limits_the_cache(api: KubeApi) -> None:
    informer = Informer(
        api, r.CONFIGMAP, namespace="default", label_selector="app=fl", settings=FAST
    )
    seen = Recorder()
    informer.subscribe(seen)
    async with running(informer):
        await api.create(r.CONFIGMAP, cm("other", "1", app="x"), namespace="default")
        await api.create(r.CONFIGMAP, cm("mine", "1", app="fl"), namespace="default")
        await wait_for(lambda: informer.get("mine", "default"), timeout=5)
        assert informer.get("other", "default") is None
        assert seen.of("other") == []


async def test_resumes_after_dropped_watches_without_missing_events(
    api: KubeApi, server: ApiServer
) -> None:
    informer = Informer(api, r.CONFIGMAP, namespace="default", settings=FAST)
    seen = Recorder()
    informer.subscribe(seen)
    async with running(informer):
        for round_number in range(5):
            await wait_for(lambda: server.faults.drop_watches() > 0, timeout=5)
            name = f"c{round_number}"
            await api.create(r.CONFIGMAP, cm(name, "1"), namespace="default")
            await api.patch(r.CONFIGMAP, name, {"data": {"v": "2"}}, namespace="default")
        await wait_for(lambda: len(seen.events) == 10, timeout=5)
        for round_number in range(5):
            assert seen.of(f"c{round_number}") == [("ADDED", "1"), ("MODIFIED", "2")]
        assert informer.relists == 0  # resumed from its resourceVersion each time
        assert informer.watches >= 6


async def test_recovers_from_410_by_relisting_and_diffing(api: KubeApi, server: ApiServer) -> None:
    for name in ("keep", "change", "remove"):
        await api.create(r.CONFIGMAP, cm(name, "1"), namespace="default")
    informer = Informer(api, r.CONFIGMAP, namespace="default", settings=FAST)
    seen = Recorder()
    informer.subscribe(seen)
    async with running(informer):
        assert len(seen.events) == 3
        # An event through the watch proves the watch is open before the fault goes in.
        await api.patch(r.CONFIGMAP, "keep", {"data": {"v": "1b"}}, namespace="default")
        await wait_for(lambda: seen.of("keep")[-1] == ("MODIFIED", "1b"), timeout=5)
        # Keep the informer away (its GETs fail) while changes happen and history is lost.
        server.faults.fail(
            1.0, status=503, methods=["GET"], path_prefix="/api/v1/namespaces/default/configmaps"
        )
        assert server.faults.drop_watches() == 1
        await api.patch(r.CONFIGMAP, "change", {"data": {"v": "2"}}, namespace="default")
        await api.delete(r.CONFIGMAP, "remove", namespace="default")
        await api.create(r.CONFIGMAP, cm("new", "1"), namespace="default")
        server.faults.compact()
        server.faults.clear()
        await wait_for(lambda: informer.relists == 1 and len(seen.events) == 7, timeout=5)
        assert sorted(seen.events[4:]) == [
            ("ADDED", "new", "1"),
            ("DELETED", "remove", "1"),
            ("MODIFIED", "change", "2"),
        ]
        assert sorted(o["metadata"]["name"] for o in informer.list()) == ["change", "keep", "new"]
        # And it keeps watching from the new list.
        await api.patch(r.CONFIGMAP, "keep", {"data": {"v": "3"}}, namespace="default")
        await wait_for(lambda: seen.of("keep")[-1] == ("MODIFIED", "3"), timeout=5)


async def test_server_timeouts_and_client_inactivity_reconnect(
    api: KubeApi, server: ApiServer
) -> None:
    server.bookmark_interval = 60  # a silent server: only the client timeout notices
    settings = WatchSettings(
        server_timeout=1, inactivity_timeout=0.3, backoff=BackoffPolicy(base=0.02, cap=0.1)
    )
    informer = Informer(api, r.CONFIGMAP, namespace="default", settings=settings)
    seen = Recorder()
    informer.subscribe(seen)
    async with running(informer):
        await wait_for(lambda: informer.watches >= 3, timeout=5)
        await api.create(r.CONFIGMAP, cm("late", "1"), namespace="default")
        await wait_for(lambda: seen.of("late") == [("ADDED", "1")], timeout=5)
        assert informer.relists == 0


async def test_late_subscriber_gets_the_cache_and_wait_synced_times_out(
    api: KubeApi, server: ApiServer
) -> None:
    await api.create(r.CONFIGMAP, cm("a", "1"), namespace="default")
    informer = Informer(api, r.CONFIGMAP, namespace="default", settings=FAST)
    async with running(informer):
        late = Recorder()
        informer.subscribe(late)
        assert late.events == [("ADDED", "a", "1")]
    server.faults.fail(1.0, status=500, methods=["GET"])
    blocked = Informer(api, r.CONFIGMAP, namespace="default", settings=FAST)
    task = asyncio.create_task(blocked.run())
    try:
        with pytest.raises(TimeoutError, match="did not sync"):
            await blocked.wait_synced(0.3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
