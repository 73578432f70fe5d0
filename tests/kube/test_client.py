"""KubeApi against the emulated API server, over HTTP through kubernetes_asyncio."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from fl_kube import resources as r
from fl_kube.client import KubeApi, WatchEvent
from fl_kube.errors import Conflict, Gone, Invalid, NotFound, ServerError, TooManyRequests
from fl_sandbox.apiserver import ApiServer


def configmap(name: str, data: dict[str, str], **labels: str) -> dict[str, object]:
    return {"metadata": {"name": name, "labels": labels}, "data": data}


async def test_crud_round_trip(api: KubeApi) -> None:
    created = await api.create(r.CONFIGMAP, configmap("cm", {"a": "1"}), namespace="default")
    assert created["kind"] == "ConfigMap"
    assert created["metadata"]["uid"]
    got = await api.get(r.CONFIGMAP, "cm", namespace="default")
    assert got["data"] == {"a": "1"}
    got["data"]["b"] = "2"
    replaced = await api.replace(r.CONFIGMAP, got, namespace="default")
    assert replaced["data"] == {"a": "1", "b": "2"}
    assert int(replaced["metadata"]["resourceVersion"]) > int(got["metadata"]["resourceVersion"])
    assert await api.delete(r.CONFIGMAP, "cm", namespace="default") is True
    assert await api.delete(r.CONFIGMAP, "cm", namespace="default") is False
    assert await api.get_or_none(r.CONFIGMAP, "cm", namespace="default") is None
    with pytest.raises(NotFound) as info:
        await api.get(r.CONFIGMAP, "cm", namespace="default")
    assert info.value.reason == "NotFound"


async def test_conflicts_already_exists_and_stale_resource_version(api: KubeApi) -> None:
    first = await api.create(r.CONFIGMAP, configmap("cm", {"a": "1"}), namespace="default")
    with pytest.raises(Conflict) as exists:
        await api.create(r.CONFIGMAP, configmap("cm", {}), namespace="default")
    assert exists.value.already_exists
    await api.patch(r.CONFIGMAP, "cm", {"data": {"a": "2"}}, namespace="default")
    with pytest.raises(Conflict) as stale:
        await api.replace(r.CONFIGMAP, first, namespace="default")
    assert not stale.value.already_exists
    with pytest.raises(Conflict):
        await api.patch(
            r.CONFIGMAP,
            "cm",
            {"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}, "data": {}},
            namespace="default",
        )


async def test_patch_types(api: KubeApi) -> None:
    await api.create(r.CONFIGMAP, configmap("cm", {"a": "1", "b": "2"}), namespace="default")
    merged = await api.patch(
        r.CONFIGMAP, "cm", {"data": {"b": None, "c": "3"}}, namespace="default"
    )
    assert merged["data"] == {"a": "1", "c": "3"}
    jsoned = await api.patch(
        r.CONFIGMAP,
        "cm",
        [
            {"op": "test", "path": "/data/a", "value": "1"},
            {"op": "replace", "path": "/data/a", "value": "9"},
        ],
        namespace="default",
        patch_type="json",
    )
    assert jsoned["data"]["a"] == "9"
    with pytest.raises(Invalid):
        await api.patch(
            r.CONFIGMAP,
            "cm",
            [{"op": "test", "path": "/data/a", "value": "wrong"}],
            namespace="default",
            patch_type="json",
        )
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "main", "image": "x", "env": [{"name": "A", "value": "1"}]}]
        },
    }
    await api.create(r.POD, pod, namespace="default")
    strategic = await api.patch(
        r.POD,
        "p",
        {"spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}},
        namespace="default",
        patch_type="strategic",
    )
    env = strategic["spec"]["containers"][0]["env"]
    assert {e["name"] for e in env} == {"A", "B"}
    assert strategic["spec"]["containers"][0]["image"] == "x"


async def test_server_side_apply_creates_then_merges(api: KubeApi) -> None:
    applied = await api.apply(
        r.CONFIGMAP,
        {"metadata": {"name": "cm", "namespace": "default"}, "data": {"a": "1"}},
        field_manager="tester",
    )
    assert applied["data"] == {"a": "1"}
    again = await api.apply(
        r.CONFIGMAP,
        {
            "metadata": {"name": "cm", "namespace": "default", "labels": {"x": "y"}},
            "data": {"a": "2"},
        },
        field_manager="tester",
    )
    assert again["data"]["a"] == "2"
    assert again["metadata"]["labels"] == {"x": "y"}
    managers = {m.get("manager") for m in again["metadata"].get("managedFields") or []}
    assert "tester" in managers


async def test_status_subresource_and_generation(api: KubeApi) -> None:
    job = {
        "metadata": {"name": "j"},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            }
        },
    }
    created = await api.create(r.JOB, job, namespace="default")
    updated = await api.patch(
        r.JOB, "j", {"status": {"active": 1}}, namespace="default", subresource="status"
    )
    assert updated["status"]["active"] == 1
    assert updated["metadata"]["generation"] == created["metadata"]["generation"]
    ignored = await api.patch(r.JOB, "j", {"status": {"active": 5}}, namespace="default")
    assert ignored["status"]["active"] == 1
    status = await api.get(r.JOB, "j", namespace="default", subresource="status")
    assert status["status"]["active"] == 1


async def test_list_with_selectors_and_cluster_scope(api: KubeApi) -> None:
    await api.create(r.NAMESPACE, {"metadata": {"name": "team-a"}})
    for ns, name, env in [
        ("default", "a", "prod"),
        ("default", "b", "dev"),
        ("team-a", "c", "prod"),
    ]:
        await api.create(r.CONFIGMAP, configmap(name, {}, env=env), namespace=ns)
    everywhere = await api.list(r.CONFIGMAP, label_selector="env=prod")
    assert sorted(i["metadata"]["name"] for i in everywhere.items) == ["a", "c"]
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in everywhere.items)
    assert everywhere.resource_version.isdigit()
    in_default = await api.list(
        r.CONFIGMAP, namespace="default", label_selector="env in (prod,dev)"
    )
    assert sorted(i["metadata"]["name"] for i in in_default.items) == ["a", "b"]
    by_name = await api.list(r.CONFIGMAP, namespace="default", field_selector="metadata.name=b")
    assert [i["metadata"]["name"] for i in by_name.items] == ["b"]
    namespaces = await api.list(r.NAMESPACE)
    assert "team-a" in {i["metadata"]["name"] for i in namespaces.items}


async def test_watch_streams_events_after_a_resource_version(api: KubeApi) -> None:
    start = await api.list(r.CONFIGMAP, namespace="default")
    await api.create(r.CONFIGMAP, configmap("w", {"a": "1"}), namespace="default")
    await api.patch(r.CONFIGMAP, "w", {"data": {"a": "2"}}, namespace="default")
    await api.delete(r.CONFIGMAP, "w", namespace="default")
    seen: list[WatchEvent] = []
    stream = api.watch(
        r.CONFIGMAP, namespace="default", resource_version=start.resource_version, timeout_seconds=5
    )
    async with contextlib.aclosing(stream) as events:
        async for event in events:
            if event.type != "BOOKMARK":
                seen.append(event)
            if len(seen) == 3:
                break
    assert [e.type for e in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert seen[1].object["data"] == {"a": "2"}
    assert seen[0].object["kind"] == "ConfigMap"


async def test_watch_of_a_compacted_version_raises_gone(api: KubeApi, server: ApiServer) -> None:
    start = await api.list(r.CONFIGMAP, namespace="default")
    await api.create(r.CONFIGMAP, configmap("x", {}), namespace="default")
    server.faults.compact()
    stream = api.watch(
        r.CONFIGMAP, namespace="default", resource_version=start.resource_version, timeout_seconds=5
    )
    async with contextlib.aclosing(stream) as events:
        with pytest.raises(Gone):
            await anext(events)


async def test_watch_ends_at_the_server_timeout(api: KubeApi) -> None:
    start = await api.list(r.CONFIGMAP, namespace="default")
    stream = api.watch(
        r.CONFIGMAP, namespace="default", resource_version=start.resource_version, timeout_seconds=1
    )
    async with contextlib.aclosing(stream) as events:
        types = [event.type async for event in events]
    assert set(types) <= {"BOOKMARK"}


async def test_injected_failures_map_to_errors(api: KubeApi, server: ApiServer) -> None:
    server.faults.fail(1.0, status=429, retry_after=3, count=1)
    with pytest.raises(TooManyRequests) as throttled:
        await api.list(r.CONFIGMAP, namespace="default")
    assert throttled.value.retry_after == 3
    server.faults.fail(1.0, status=500, count=1)
    with pytest.raises(ServerError):
        await api.list(r.CONFIGMAP, namespace="default")
    await api.list(r.CONFIGMAP, namespace="default")  # rules retired


async def test_invalid_names_fail_before_any_request(api: KubeApi) -> None:
    with pytest.raises(ValueError, match="namespaced"):
        await api.get(r.CONFIGMAP, "x")
    with pytest.raises(ValueError, match="cluster-scoped"):
        await api.get(r.NAMESPACE, "x", namespace="default")
    with pytest.raises(ValueError, match=r"metadata\.name"):
        await api.replace(r.CONFIGMAP, {"data": {}}, namespace="default")


async def test_version(api: KubeApi) -> None:
    version = await api.version()
    assert version["gitVersion"].startswith("v1.")


async def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--kubeconfig"):
        await KubeApi.from_kubeconfig(tmp_path / "absent.kubeconfig")
