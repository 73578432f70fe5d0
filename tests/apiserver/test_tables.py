"""meta.k8s.io/v1 Table responses, as `kubectl get` asks for them."""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from .conftest import ocm_crds_or_skip

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
MCL = "/apis/cluster.open-cluster-management.io/v1/managedclusters"


async def get_table(api: ApiClient, path: str) -> dict[str, Any]:
    data: dict[str, Any] = await api.call_api(
        path,
        "GET",
        header_params={"Accept": TABLE},
        auth_settings=["BearerToken"],
        response_types_map={200: "object"},
        _return_http_data_only=True,
    )
    return data


async def test_printer_columns_of_a_crd(api: ApiClient, custom: client.CustomObjectsApi) -> None:
    ocm_crds_or_skip()
    body = {
        "apiVersion": "cluster.open-cluster-management.io/v1",
        "kind": "ManagedCluster",
        "metadata": {"name": "cluster1"},
        "spec": {
            "hubAcceptsClient": True,
            "managedClusterClientConfigs": [{"url": "https://a"}, {"url": "https://b"}],
        },
    }
    await custom.create_cluster_custom_object(
        "cluster.open-cluster-management.io", "v1", "managedclusters", body
    )
    joined = {
        "type": "ManagedClusterJoined",
        "status": "True",
        "reason": "Joined",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    await custom.patch_cluster_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "cluster.open-cluster-management.io",
        "v1",
        "managedclusters",
        "cluster1",
        {"status": {"conditions": [joined]}},
        _content_type="application/merge-patch+json",
    )
    table = await get_table(api, MCL)
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names == ["Name", "Hub Accepted", "Managed Cluster URLs", "Joined", "Available", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:5] == ["cluster1", True, "https://a,https://b", "True", None]
    assert table["rows"][0]["object"]["metadata"]["name"] == "cluster1"


async def test_builtin_table_and_single_object(api: ApiClient, core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map(
        "default",
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"), data={"a": "1", "b": "2"}),
    )
    table = await get_table(api, "/api/v1/namespaces/default/configmaps/c")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["c", 2]
