"""Merge, JSON and strategic merge patches, and server-side apply."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import error_body

MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
MCA = ("addon.open-cluster-management.io", "v1alpha1", "managedclusteraddons")


def addon(name: str) -> dict[str, object]:
    """A ManagedClusterAddOn (a custom resource with a status subresource)."""
    return {
        "apiVersion": "addon.open-cluster-management.io/v1alpha1",
        "kind": "ManagedClusterAddOn",
        "metadata": {"name": name},
        "spec": {},
    }


def pod(name: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="main",
                    image="busybox",
                    env=[
                        client.V1EnvVar(name="A", value="1"),
                        client.V1EnvVar(name="B", value="2"),
                    ],
                ),
                client.V1Container(name="side", image="busybox"),
            ]
        ),
    )


async def test_merge_patch_merges_and_null_deletes(core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map(
        "default",
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="m", labels={"a": "1"}), data={"x": "1", "y": "2"}
        ),
    )
    out = await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "m",
        "default",
        {"metadata": {"labels": {"b": "2"}}, "data": {"x": None, "z": "3"}},
        _content_type=MERGE,
    )
    assert out.data == {"y": "2", "z": "3"}
    assert out.metadata.labels == {"a": "1", "b": "2"}


async def test_json_patch_ops_and_failing_test_is_422(core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="j"), data={"x": "1"})
    )
    ops = [
        {"op": "test", "path": "/data/x", "value": "1"},
        {"op": "add", "path": "/data/y", "value": "2"},
        {"op": "replace", "path": "/data/x", "value": "9"},
        {"op": "copy", "from": "/data/y", "path": "/data/z"},
        {"op": "remove", "path": "/data/y"},
    ]
    out = await core.patch_namespaced_config_map("j", "default", ops)
    assert out.data == {"x": "9", "z": "2"}
    with pytest.raises(ApiException) as exc:
        await core.patch_namespaced_config_map(
            "j", "default", [{"op": "test", "path": "/data/x", "value": "1"}]
        )
    assert exc.value.status == 422
    unchanged = await core.read_namespaced_config_map("j", "default")
    assert unchanged.data == {"x": "9", "z": "2"}


async def test_strategic_merge_by_merge_keys(core: client.CoreV1Api) -> None:
    await core.create_namespaced_pod("default", pod("p"))
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "alpine",
                    "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                },
                {"name": "side", "$patch": "delete"},
            ]
        },
        "metadata": {"finalizers": ["x/y"]},
    }
    out = await core.patch_namespaced_pod("p", "default", patch)  # typed APIs send strategic merge
    assert [c.name for c in out.spec.containers] == ["main"]
    main = out.spec.containers[0]
    assert main.image == "alpine"
    assert [(e.name, e.value) for e in main.env] == [("A", "1"), ("B", "20"), ("C", "3")]
    out = await core.patch_namespaced_pod("p", "default", {"metadata": {"finalizers": ["a/b"]}})
    assert out.metadata.finalizers == ["x/y", "a/b"]


async def test_strategic_merge_on_custom_resource_is_415(
    custom: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    await custom.create_namespaced_custom_object(*MCA[:2], "default", MCA[2], addon("a"))
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            *MCA[:2],
            "default",
            MCA[2],
            "a",
            {"spec": {}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert exc.value.status == 415
    assert json.loads(error_body(exc.value))["reason"] == "UnsupportedMediaType"


async def test_server_side_apply_create_merge_conflict_force(core: client.CoreV1Api) -> None:
    def cfg(**data: str) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": data}

    created, code, _ = await core.patch_namespaced_config_map_with_http_info(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "s", "default", cfg(a="1", b="2"), field_manager="alpha", _content_type=APPLY
    )
    assert code == 201
    assert created.data == {"a": "1", "b": "2"}
    assert [m.manager for m in created.metadata.managed_fields] == ["alpha"]
    assert created.metadata.managed_fields[0].operation == "Apply"
    merged = await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "s", "default", cfg(c="3"), field_manager="beta", _content_type=APPLY
    )
    assert merged.data == {"a": "1", "b": "2", "c": "3"}
    with pytest.raises(ApiException) as exc:
        await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            "s", "default", cfg(a="changed"), field_manager="beta", _content_type=APPLY
        )
    assert exc.value.status == 409
    assert 'conflict with "alpha"' in json.loads(error_body(exc.value))["message"]
    forced = await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "s",
        "default",
        cfg(a="changed", c="3"),
        field_manager="beta",
        force=True,
        _content_type=APPLY,
    )
    assert forced.data["a"] == "changed"
    # alpha re-applies without "b": the field it alone owned is removed; "a" now belongs to beta.
    again = await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "s", "default", cfg(), field_manager="alpha", _content_type=APPLY
    )
    assert again.data == {"a": "changed", "c": "3"}


async def test_apply_requires_field_manager(core: client.CoreV1Api) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "q"}}
    with pytest.raises(ApiException) as exc:
        await core.patch_namespaced_config_map("q", "default", body, _content_type=APPLY)  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
    assert exc.value.status == 400


async def test_apply_owns_condition_entries_by_type(custom: client.CustomObjectsApi) -> None:
    body = addon("a")
    await custom.create_namespaced_custom_object(*MCA[:2], "default", MCA[2], body)

    async def apply_condition(ctype: str, reason: str, *, manager: str) -> Any:
        """Apply a status holding one condition, as `manager`."""
        cond = {
            "type": ctype,
            "status": "True",
            "reason": reason,
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        status = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "metadata": {"name": "a"},
            "status": {"conditions": [cond]},
        }
        return await custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            *MCA[:2], "default", MCA[2], "a", status, field_manager=manager, _content_type=APPLY
        )

    await apply_condition("Available", "Up", manager="addon-manager")
    out = await apply_condition(
        "round.federated-learning.io/ns.job", "UpdateReady", manager="agent"
    )
    assert [c["type"] for c in out["status"]["conditions"]] == [
        "Available",
        "round.federated-learning.io/ns.job",
    ]
    with pytest.raises(ApiException) as exc:
        await apply_condition("Available", "Down", manager="agent")
    assert exc.value.status == 409
    out = await apply_condition(
        "round.federated-learning.io/ns.job", "TrainingFailed", manager="agent"
    )
    assert [c["reason"] for c in out["status"]["conditions"]] == ["Up", "TrainingFailed"]


async def test_reapplying_the_same_configuration_is_a_no_op(core: client.CoreV1Api) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "same"},
        "data": {"a": "1"},
    }
    first = await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "same", "default", body, field_manager="m", _content_type=APPLY
    )
    again = await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "same", "default", body, field_manager="m", _content_type=APPLY
    )
    assert again.metadata.resource_version == first.metadata.resource_version


async def test_apply_owns_nested_leaves(custom: client.CustomObjectsApi) -> None:
    group, version, plural = (
        "addon.open-cluster-management.io",
        "v1alpha1",
        "clustermanagementaddons",
    )

    def cma(**meta: str) -> dict[str, object]:
        return {
            "apiVersion": f"{group}/{version}",
            "kind": "ClusterManagementAddOn",
            "metadata": {"name": "fl"},
            "spec": {"addOnMeta": meta},
        }

    await custom.patch_cluster_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        group,
        version,
        plural,
        "fl",
        cma(displayName="FL", description="d"),
        field_manager="a",
        _content_type=APPLY,
    )
    # Another manager owning a sibling leaf does not conflict ...
    out = await custom.patch_cluster_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        group, version, plural, "fl", cma(description="d"), field_manager="b", _content_type=APPLY
    )
    assert out["spec"]["addOnMeta"] == {"displayName": "FL", "description": "d"}
    # ... and a leaf the first manager drops stays while the second still owns it.
    out = await custom.patch_cluster_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        group, version, plural, "fl", cma(displayName="FL"), field_manager="a", _content_type=APPLY
    )
    assert out["spec"]["addOnMeta"] == {"displayName": "FL", "description": "d"}
    out = await custom.patch_cluster_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        group,
        version,
        plural,
        "fl",
        cma(displayName="FL2"),
        field_manager="b",
        force=True,
        _content_type=APPLY,
    )
    assert out["spec"]["addOnMeta"] == {
        "displayName": "FL2"
    }  # b dropped description and took displayName
    with pytest.raises(ApiException) as exc:
        await custom.patch_cluster_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            group,
            version,
            plural,
            "fl",
            cma(displayName="FL3"),
            field_manager="a",
            _content_type=APPLY,
        )
    assert ".spec.addOnMeta.displayName" in json.loads(error_body(exc.value))["message"]


def test_an_apply_body_in_json_keeps_exponent_numbers() -> None:
    """kube-apiserver reads JSON (YAML 1.2) apply bodies: 1e-05 is a number, not a string."""
    from fl_sandbox.apiserver.resources import parse_body

    body = parse_body(b'{"spec": {"delta": 1e-05}}', "application/apply-patch+yaml")
    assert body == {"spec": {"delta": 1e-05}}
    assert parse_body(b"spec: {delta: 0.5}", "application/apply-patch+yaml") == {
        "spec": {"delta": 0.5}
    }
