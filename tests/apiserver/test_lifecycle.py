"""Deletion: finalizers, propagation policies, owner-reference GC, namespace contents."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from .conftest import eventually

MERGE = "application/merge-patch+json"
CLUSTER = ("cluster.open-cluster-management.io", "v1", "managedclusters")
WORK = ("work.open-cluster-management.io", "v1", "manifestworks")


def owner_ref_dict(obj: Any) -> dict[str, Any]:
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata

    def get(k: str) -> Any:
        return meta[k] if isinstance(meta, dict) else getattr(meta, k)

    kind = obj["kind"] if isinstance(obj, dict) else obj.kind
    api_version = obj["apiVersion"] if isinstance(obj, dict) else obj.api_version
    return {"apiVersion": api_version, "kind": kind, "name": get("name"), "uid": get("uid")}


def owner_ref(obj: Any) -> client.V1OwnerReference:
    """The typed model for V1ObjectMeta; it serialises to the same four fields."""
    ref = owner_ref_dict(obj)
    return client.V1OwnerReference(
        api_version=ref["apiVersion"], kind=ref["kind"], name=ref["name"], uid=ref["uid"]
    )


async def gone(read: Any) -> bool:
    try:
        await read()
    except client.exceptions.ApiException as exc:
        return exc.status == 404
    return False


async def test_finalizers_hold_deletion_until_removed(core: client.CoreV1Api) -> None:
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="f", finalizers=["example.com/hold"])
    )
    await core.create_namespaced_config_map("default", body)
    await core.delete_namespaced_config_map("f", "default")
    held = await core.read_namespaced_config_map("f", "default")
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["example.com/hold"]
    # A second delete keeps it; adding a finalizer now is refused.
    await core.delete_namespaced_config_map("f", "default")
    with pytest.raises(client.exceptions.ApiException) as exc:
        await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            "f",
            "default",
            {"metadata": {"finalizers": ["example.com/hold", "x/y"]}},
            _content_type=MERGE,
        )
    assert exc.value.status == 422
    await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "f", "default", {"metadata": {"finalizers": None}}, _content_type=MERGE
    )
    assert await gone(lambda: core.read_namespaced_config_map("f", "default"))


async def test_owner_reference_garbage_collection(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    owner = await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    owner.kind, owner.api_version = "ConfigMap", "v1"
    dep = client.V1Secret(
        metadata=client.V1ObjectMeta(name="dep", owner_references=[owner_ref(owner)])
    )
    await core.create_namespaced_secret("default", dep)
    # A cluster-scoped owner of another kind owns a namespaced custom resource.
    cluster = await custom.create_cluster_custom_object(
        *CLUSTER[:2],
        CLUSTER[2],
        {
            "apiVersion": "cluster.open-cluster-management.io/v1",
            "kind": "ManagedCluster",
            "metadata": {"name": "c1"},
            "spec": {},
        },
    )
    work = {
        "apiVersion": "work.open-cluster-management.io/v1",
        "kind": "ManifestWork",
        "metadata": {"name": "w", "ownerReferences": [owner_ref_dict(cluster)]},
        "spec": {
            "workload": {
                "manifests": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "m", "namespace": "default"},
                    }
                ]
            }
        },
    }
    await custom.create_namespaced_custom_object(*WORK[:2], "default", WORK[2], work)
    await core.delete_namespaced_config_map("owner", "default")
    await custom.delete_cluster_custom_object(*CLUSTER[:2], CLUSTER[2], "c1")
    await eventually(
        lambda: gone(lambda: core.read_namespaced_secret("dep", "default")),
        message="dependent secret kept",
    )
    await eventually(
        lambda: gone(
            lambda: custom.get_namespaced_custom_object(*WORK[:2], "default", WORK[2], "w")
        ),
        message="dependent ManifestWork kept",
    )


async def test_dependent_with_a_live_owner_stays(core: client.CoreV1Api) -> None:
    a = await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a"))
    )
    b = await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="b"))
    )
    for o in (a, b):
        o.kind, o.api_version = "ConfigMap", "v1"
    refs = [owner_ref(a), owner_ref(b)]
    await core.create_namespaced_secret(
        "default", client.V1Secret(metadata=client.V1ObjectMeta(name="d", owner_references=refs))
    )
    await core.create_namespaced_secret(
        "default",
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="only-a", owner_references=[owner_ref(a)])
        ),
    )
    await core.delete_namespaced_config_map("a", "default")
    await eventually(
        lambda: gone(lambda: core.read_namespaced_secret("only-a", "default")),
        message="only-a kept",
    )
    assert (await core.read_namespaced_secret("d", "default")).metadata.name == "d"


async def test_orphan_propagation_keeps_dependents(core: client.CoreV1Api) -> None:
    owner = await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="o"))
    )
    owner.kind, owner.api_version = "ConfigMap", "v1"
    await core.create_namespaced_secret(
        "default",
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="kid", owner_references=[owner_ref(owner)])
        ),
    )
    await core.delete_namespaced_config_map("o", "default", propagation_policy="Orphan")
    kid = await core.read_namespaced_secret("kid", "default")
    assert not kid.metadata.owner_references


async def test_namespace_deletion_removes_contents(core: client.CoreV1Api) -> None:
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team")))
    await core.create_namespaced_config_map(
        "team", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a"))
    )
    held = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="held", finalizers=["x/y"]))
    await core.create_namespaced_config_map("team", held)
    await core.delete_namespace("team")
    ns = await core.read_namespace("team")
    assert ns.status.phase == "Terminating"
    with pytest.raises(client.exceptions.ApiException) as exc:
        await core.create_namespaced_config_map(
            "team", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="late"))
        )
    assert exc.value.status == 403
    await eventually(
        lambda: gone(lambda: core.read_namespaced_config_map("a", "team")), message="content kept"
    )
    assert not await gone(lambda: core.read_namespace("team")), (
        "the namespace waits for finalizers of its content"
    )
    await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "held", "team", {"metadata": {"finalizers": []}}, _content_type=MERGE
    )
    await eventually(lambda: gone(lambda: core.read_namespace("team")), message="namespace kept")


async def test_foreground_deletion_waits_for_dependents(core: client.CoreV1Api) -> None:
    owner = await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="fg"))
    )
    owner.kind, owner.api_version = "ConfigMap", "v1"
    ref = [owner_ref(owner)]
    await core.create_namespaced_secret(
        "default", client.V1Secret(metadata=client.V1ObjectMeta(name="plain", owner_references=ref))
    )
    held = client.V1Secret(
        metadata=client.V1ObjectMeta(name="held", owner_references=ref, finalizers=["x/hold"])
    )
    await core.create_namespaced_secret("default", held)
    await core.delete_namespaced_config_map("fg", "default", propagation_policy="Foreground")
    deleting = await core.read_namespaced_config_map("fg", "default")
    assert deleting.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in deleting.metadata.finalizers
    await eventually(
        lambda: gone(lambda: core.read_namespaced_secret("plain", "default")), message="plain kept"
    )
    assert not await gone(lambda: core.read_namespaced_config_map("fg", "default")), (
        "owner waits for the held dependent"
    )
    await core.patch_namespaced_secret(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "held", "default", {"metadata": {"finalizers": None}}, _content_type=MERGE
    )
    await eventually(
        lambda: gone(lambda: core.read_namespaced_config_map("fg", "default")), message="owner kept"
    )
