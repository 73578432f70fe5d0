"""Status subresource semantics and generation rules."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import error_body

G, V, P = "addon.open-cluster-management.io", "v1alpha1", "managedclusteraddons"
# CustomObjectsApi picks json-patch for a dict body (as against a real cluster): say merge.
MERGE = "application/merge-patch+json"


def addon(name: str = "fl") -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "ManagedClusterAddOn",
        "metadata": {"name": name},
        "spec": {"installNamespace": "one"},
        "status": {"namespace": "ignored-on-create"},
    }


async def test_status_subresource_separation(custom: client.CustomObjectsApi) -> None:
    made = await custom.create_namespaced_custom_object(G, V, "default", P, addon())
    assert "status" not in made, "status in a create is dropped when the status subresource is on"
    assert made["metadata"]["generation"] == 1
    # An object write ignores .status ...
    made["status"] = {"namespace": "x"}
    made["spec"]["installNamespace"] = "two"
    out = await custom.replace_namespaced_custom_object(G, V, "default", P, "fl", made)
    assert "status" not in out
    assert out["spec"]["installNamespace"] == "two"
    assert out["metadata"]["generation"] == 2
    # ... a /status write ignores everything else and leaves generation alone.
    status_patch = {"status": {"namespace": "addon-ns"}, "spec": {"installNamespace": "three"}}
    out = await custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        G, V, "default", P, "fl", status_patch, _content_type=MERGE
    )
    assert out["status"]["namespace"] == "addon-ns"
    assert out["spec"]["installNamespace"] == "two"
    assert out["metadata"]["generation"] == 2
    # Metadata-only changes do not bump generation either.
    labels = {"metadata": {"labels": {"a": "b"}}}
    out = await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        G, V, "default", P, "fl", labels, _content_type=MERGE
    )
    assert out["metadata"]["generation"] == 2
    assert out["metadata"]["labels"] == {"a": "b"}
    spec = {"spec": {"installNamespace": "four"}}
    out = await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        G, V, "default", P, "fl", spec, _content_type=MERGE
    )
    assert out["metadata"]["generation"] == 3
    assert out["status"]["namespace"] == "addon-ns"


async def test_type_without_status_subresource_writes_status(
    custom: client.CustomObjectsApi,
) -> None:
    body = {
        "apiVersion": "cluster.open-cluster-management.io/v1alpha1",
        "kind": "ClusterClaim",
        "metadata": {"name": "c"},
        "spec": {"value": "v"},
    }
    made = await custom.create_cluster_custom_object(
        "cluster.open-cluster-management.io", "v1alpha1", "clusterclaims", body
    )
    assert made["spec"]["value"] == "v"
    with pytest.raises(ApiException) as exc:
        await custom.get_cluster_custom_object_status(
            "cluster.open-cluster-management.io", "v1alpha1", "clusterclaims", "c"
        )
    assert exc.value.status == 404


async def test_status_put_with_stale_version_conflicts(custom: client.CustomObjectsApi) -> None:
    made = await custom.create_namespaced_custom_object(G, V, "default", P, addon())
    spec = {"spec": {"installNamespace": "n"}}
    await custom.patch_namespaced_custom_object(G, V, "default", P, "fl", spec, _content_type=MERGE)  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
    made["status"] = {"namespace": "late"}
    with pytest.raises(ApiException) as exc:
        await custom.replace_namespaced_custom_object_status(G, V, "default", P, "fl", made)
    assert exc.value.status == 409


async def test_custom_resource_put_requires_resource_version(
    custom: client.CustomObjectsApi,
) -> None:
    made = await custom.create_namespaced_custom_object(G, V, "default", P, addon())
    del made["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as exc:
        await custom.replace_namespaced_custom_object(G, V, "default", P, "fl", made)
    assert exc.value.status == 422
    assert "metadata.resourceVersion" in error_body(exc.value)
