"""The OCM hub's ManifestWork webhook rules, which a real hub enforces on every write."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import error_body

WORK = ("work.open-cluster-management.io", "v1")


def work(*manifests: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "work.open-cluster-management.io/v1",
        "kind": "ManifestWork",
        "metadata": {"name": "w"},
        "spec": {"workload": {"manifests": list(manifests)}},
    }


def cm(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "n", **extra},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (work(), "manifests should not be empty"),
        (work(cm("")), "name must be set in manifest"),
        (work(cm("x", generateName="x-")), "generateName must not be set in manifest"),
        (work({**cm("big"), "data": {"k": "x" * (500 * 1024)}}), "exceeds the 512000 limit"),
    ],
)
async def test_manifest_work_webhook(
    custom: client.CustomObjectsApi, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as exc:
        await custom.create_namespaced_custom_object(*WORK, "default", "manifestworks", body)
    assert exc.value.status == 400
    assert message in error_body(exc.value)
    assert "manifestworkvalidators.admission.work.open-cluster-management.io" in error_body(
        exc.value
    )


async def test_valid_manifest_work_is_admitted(custom: client.CustomObjectsApi) -> None:
    made = await custom.create_namespaced_custom_object(
        *WORK, "default", "manifestworks", work(cm("ok"))
    )
    assert made["spec"]["workload"]["manifests"][0]["metadata"]["name"] == "ok"
