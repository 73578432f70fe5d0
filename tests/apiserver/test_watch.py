"""Watch: resume, synthetic ADDED, 410, bookmarks, timeouts, selectors, dropped streams."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from fl_sandbox.apiserver import ApiServer

from .conftest import eventually


def cm(name: str, labels: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data={"k": "v"}
    )


async def collect(stream: watch.Watch, count: int, *, within: float = 3.0) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    async with asyncio.timeout(within):
        async for event in stream:
            events.append((event["type"], event["raw_object"]))
            if len(events) == count:
                break
    return events


async def refused_watch(core: client.CoreV1Api, resource_version: str) -> ApiException:
    """The error that ends a watch of the default namespace's ConfigMaps from
    `resource_version` (one the server no longer holds)."""
    w = watch.Watch()
    with pytest.raises(ApiException) as exc:
        await collect(
            w.stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=resource_version,
                timeout_seconds=5,
            ),
            1,
        )
    await w.close()
    return exc.value


async def test_resume_sees_exactly_the_events_after_the_version(core: client.CoreV1Api) -> None:
    a = await core.create_namespaced_config_map("default", cm("a"))
    since = a.metadata.resource_version
    await core.create_namespaced_config_map("default", cm("b"))
    await core.patch_namespaced_config_map("a", "default", {"data": {"k": "v2"}})
    await core.delete_namespaced_config_map("b", "default")
    await core.create_namespaced_config_map("default", cm("c"))
    w = watch.Watch()
    events = await collect(
        w.stream(
            core.list_namespaced_config_map, "default", resource_version=since, timeout_seconds=5
        ),
        4,
    )
    await w.close()
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
        ("ADDED", "c"),
    ]
    versions = [int(o["metadata"]["resourceVersion"]) for _, o in events]
    assert versions == sorted(versions)
    assert versions[0] > int(since)


async def test_watch_without_version_starts_with_synthetic_added(core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map("default", cm("old1"))
    await core.create_namespaced_config_map("default", cm("old2"))
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, "default", timeout_seconds=5)
    first = await collect(stream, 2)
    assert sorted(o["metadata"]["name"] for _, o in first) == ["old1", "old2"]
    assert {t for t, _ in first} == {"ADDED"}
    await core.create_namespaced_config_map("default", cm("new"))
    live = await collect(stream, 1)
    await w.close()
    assert [(t, o["metadata"]["name"]) for t, o in live] == [("ADDED", "new")]


async def test_compaction_gives_410_expired(server: ApiServer, core: client.CoreV1Api) -> None:
    a = await core.create_namespaced_config_map("default", cm("a"))
    await core.patch_namespaced_config_map("a", "default", {"data": {"k": "2"}})
    server.faults.compact()
    error = await refused_watch(core, a.metadata.resource_version)
    assert error.status == 410
    assert "Expired" in str(error.reason)


async def test_history_limit_bounds_resume(tmp_path: Any) -> None:
    from .conftest import client_for

    small = ApiServer(name="small", history_limit=3)
    await small.start()
    api = await client_for(small, tmp_path / "kc")
    try:
        core = client.CoreV1Api(api)
        first = await core.create_namespaced_config_map("default", cm("x0"))
        for n in range(1, 6):
            await core.create_namespaced_config_map("default", cm(f"x{n}"))
        error = await refused_watch(core, first.metadata.resource_version)
        assert error.status == 410
    finally:
        await api.close()
        await small.stop()


async def test_bookmarks_periodic_and_before_close(
    server: ApiServer, core: client.CoreV1Api
) -> None:
    server.bookmark_interval = 0.2
    made = await core.create_namespaced_config_map("default", cm("a"))
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=made.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    )
    events = await collect(stream, 1)
    await w.close()
    assert events[0][0] == "BOOKMARK"
    assert int(events[0][1]["metadata"]["resourceVersion"]) >= int(made.metadata.resource_version)
    # With a long interval, the stream still ends with a bookmark at its timeout.
    server.bookmark_interval = 3600
    w = watch.Watch()
    tail: list[str] = []
    async with asyncio.timeout(5):
        async for event in w.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=made.metadata.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        ):
            tail.append(event["type"])
    assert tail == ["BOOKMARK"]


async def test_events_are_delivered_while_a_bookmark_is_overdue(
    server: ApiServer, core: client.CoreV1Api
) -> None:
    """A bookmark always due (interval 0) must not starve queued events: each one arrives."""
    server.bookmark_interval = 0
    made = await core.create_namespaced_config_map("default", cm("first"))
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=made.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    )
    names: list[str] = []

    async def changes() -> None:
        for index in range(3):
            await core.create_namespaced_config_map("default", cm(f"later-{index}"))

    writer = asyncio.create_task(changes())
    async with asyncio.timeout(4):
        async for event in stream:
            if event["type"] == "ADDED":
                names.append(event["raw_object"]["metadata"]["name"])
            if len(names) == 3:
                break
    await writer
    await w.close()
    assert names == ["later-0", "later-1", "later-2"]


async def test_stream_closes_at_timeout_seconds(core: client.CoreV1Api) -> None:
    w = watch.Watch()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        async for _ in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=1):
            pass
    assert 0.8 <= loop.time() - started < 3


async def test_label_selector_transitions_on_watch(core: client.CoreV1Api) -> None:
    start = await core.list_namespaced_config_map("default")
    await core.create_namespaced_config_map("default", cm("other", {"app": "x"}))
    await core.create_namespaced_config_map("default", cm("m", {"app": "x"}))
    await core.patch_namespaced_config_map("m", "default", {"metadata": {"labels": {"app": "fl"}}})
    await core.patch_namespaced_config_map("m", "default", {"data": {"k": "2"}})
    await core.patch_namespaced_config_map(
        "m", "default", {"metadata": {"labels": {"app": "gone"}}}
    )
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        label_selector="app in (fl)",
        resource_version=start.metadata.resource_version,
        timeout_seconds=5,
    )
    task = asyncio.ensure_future(collect(stream, 3))
    events = await task
    await w.close()
    assert [(t, o["metadata"]["name"]) for t, o in events] == [
        ("ADDED", "m"),
        ("MODIFIED", "m"),
        ("DELETED", "m"),
    ]


async def test_field_selector_on_watch(core: client.CoreV1Api) -> None:
    start = await core.list_namespaced_config_map("default")
    await core.create_namespaced_config_map("default", cm("skip"))
    await core.create_namespaced_config_map("default", cm("pick"))
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        field_selector="metadata.name=pick",
        resource_version=start.metadata.resource_version,
        timeout_seconds=5,
    )
    events = await collect(stream, 1)
    await w.close()
    assert [(t, o["metadata"]["name"]) for t, o in events] == [("ADDED", "pick")]


async def test_drop_watches_ends_open_streams(server: ApiServer, core: client.CoreV1Api) -> None:
    w = watch.Watch()
    got: list[str] = []

    async def consume() -> None:
        async for event in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=60):
            got.append(event["type"])

    task = asyncio.ensure_future(consume())
    await eventually(lambda: server.faults.drop_watches() > 0, message="no watch to drop")
    async with asyncio.timeout(3):
        await task
    await w.close()


async def test_send_initial_events_ends_with_marked_bookmark(core: client.CoreV1Api) -> None:
    made = await core.create_namespaced_config_map("default", cm("present"))
    w = watch.Watch()
    stream = w.stream(
        core.list_namespaced_config_map,
        "default",
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    )
    events = await collect(stream, 2)
    await w.close()
    assert [t for t, _ in events] == ["ADDED", "BOOKMARK"]
    assert events[1][1]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(events[1][1]["metadata"]["resourceVersion"]) >= int(made.metadata.resource_version)


async def test_watch_of_one_object_by_path(api: client.ApiClient, core: client.CoreV1Api) -> None:
    start = await core.list_namespaced_config_map("default")
    await core.create_namespaced_config_map("default", cm("other"))
    await core.create_namespaced_config_map("default", cm("one"))
    path = "/api/v1/watch/namespaces/default/configmaps/one"
    response = await api.call_api(
        path,
        "GET",
        query_params=[
            ("resourceVersion", start.metadata.resource_version),
            ("timeoutSeconds", "5"),
        ],
        auth_settings=["BearerToken"],
        _preload_content=False,
    )
    async with asyncio.timeout(5):
        line = await response.content.readline()
    response.close()
    assert b'"name":"one"' in line
