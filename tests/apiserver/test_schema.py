"""Structural schemas: pruning, defaulting and validation, for the OCM CRDs, the
FederatedLearning CRD and a CRD POSTed at runtime."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import REPO_CRDS, error_body, ocm_crds_or_skip

MERGE = "application/merge-patch+json"
ADDON = ("addon.open-cluster-management.io", "v1alpha1")
WIDGETS = ("example.com", "v1", "widgets")


def causes(exc: ApiException) -> list[tuple[str, str]]:
    """(field, "<field>: <message>") per cause, the way kubectl prints them."""
    body = json.loads(error_body(exc))
    return [(c["field"], f"{c['field']}: {c['message']}") for c in body["details"]["causes"]]


def condition(reason: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "round.federated-learning.io/team-a.mnist",
        "status": "True",
        "reason": reason,
        "message": "{}",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        **extra,
    }


async def test_ocm_addon_status_is_validated(custom: client.CustomObjectsApi) -> None:
    ocm_crds_or_skip()
    body = {
        "apiVersion": "addon.open-cluster-management.io/v1alpha1",
        "kind": "ManagedClusterAddOn",
        "metadata": {"name": "fl"},
        "spec": {},
    }
    await custom.create_namespaced_custom_object(*ADDON, "default", "managedclusteraddons", body)
    ok = await custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        *ADDON,
        "default",
        "managedclusteraddons",
        "fl",
        {"status": {"conditions": [condition("UpdateReady")]}},
        _content_type=MERGE,
    )
    assert ok["status"]["conditions"][0]["reason"] == "UpdateReady"
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            *ADDON,
            "default",
            "managedclusteraddons",
            "fl",
            {
                "status": {
                    "conditions": [condition("not a reason!", lastTransitionTime="yesterday")]
                }
            },
            _content_type=MERGE,
        )
    assert exc.value.status == 422
    found = dict(causes(exc.value))
    assert "status.conditions[0].reason" in found
    assert (
        "should match '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$'"
        in found["status.conditions[0].reason"]
    )
    assert "status.conditions[0].lastTransitionTime" in found
    bare = {"type": "Available", "status": "True"}
    with pytest.raises(ApiException) as missing:
        await custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            *ADDON,
            "default",
            "managedclusteraddons",
            "fl",
            {"status": {"conditions": [bare]}},
            _content_type=MERGE,
        )
    fields = [f for f, _ in causes(missing.value)]
    assert "status.conditions[0].reason" in fields
    assert "status.conditions[0].lastTransitionTime" in fields


async def test_ocm_pruning_defaults_and_embedded_resources(custom: client.CustomObjectsApi) -> None:
    ocm_crds_or_skip()
    mc = await custom.create_cluster_custom_object(
        "cluster.open-cluster-management.io",
        "v1",
        "managedclusters",
        {
            "apiVersion": "cluster.open-cluster-management.io/v1",
            "kind": "ManagedCluster",
            "metadata": {"name": "c1", "labels": {"a": "b"}},
            "spec": {"hubAcceptsClient": True, "notInSchema": 1},
            "extraTopLevel": True,
        },
    )
    assert "notInSchema" not in mc["spec"]
    assert "extraTopLevel" not in mc
    assert mc["spec"]["leaseDurationSeconds"] == 60  # schema default
    assert mc["metadata"]["labels"] == {"a": "b"}
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "n"},
        "data": {"any": "thing"},
    }
    work = await custom.create_namespaced_custom_object(
        "work.open-cluster-management.io",
        "v1",
        "default",
        "manifestworks",
        {
            "apiVersion": "work.open-cluster-management.io/v1",
            "kind": "ManifestWork",
            "metadata": {"name": "w"},
            "spec": {"workload": {"manifests": [manifest]}},
        },
    )
    assert work["spec"]["workload"]["manifests"] == [manifest]
    with pytest.raises(ApiException) as exc:
        await custom.create_cluster_custom_object(
            "cluster.open-cluster-management.io",
            "v1alpha1",
            "clusterclaims",
            {
                "apiVersion": "cluster.open-cluster-management.io/v1alpha1",
                "kind": "ClusterClaim",
                "metadata": {"name": "big"},
                "spec": {"value": "x" * 1025},
            },
        )
    assert exc.value.status == 422
    assert causes(exc.value) == [
        ("spec.value", "spec.value: Too long: may not be more than 1024 bytes")
    ]


async def test_federated_learning_crd(custom: client.CustomObjectsApi) -> None:
    files = sorted(REPO_CRDS.glob("*.yaml")) if REPO_CRDS.is_dir() else []
    if not files:
        pytest.skip("deploy/crds has no FederatedLearning CRD yet")
    crd = yaml.safe_load(files[0].read_text())
    group, version, plural = (
        crd["spec"]["group"],
        crd["spec"]["versions"][0]["name"],
        crd["spec"]["names"]["plural"],
    )
    body = {
        "apiVersion": f"{group}/{version}",
        "kind": crd["spec"]["names"]["kind"],
        "metadata": {"name": "j"},
        "spec": {"server": {"rounds": 0}},
    }
    with pytest.raises(ApiException) as exc:
        await custom.create_namespaced_custom_object(group, version, "default", plural, body)
    assert exc.value.status == 422
    expected = "spec.server.rounds: Invalid value: 0: spec.server.rounds in body should be greater than or equal to 1"
    assert ("spec.server.rounds", expected) in causes(exc.value)
    assert expected in json.loads(error_body(exc.value))["message"]
    body["spec"] = {"server": {"rounds": 2}, "unknownField": 1}
    made = await custom.create_namespaced_custom_object(group, version, "default", plural, body)
    assert "unknownField" not in made["spec"]
    assert made["spec"]["server"]["rounds"] == 2


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "ratio": {
                                        "type": "number",
                                        "exclusiveMinimum": True,
                                        "minimum": 0,
                                    },
                                    "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                                    "port": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "name": {
                                        "type": "string",
                                        "minLength": 2,
                                        "maxLength": 5,
                                        "pattern": "^[a-z]+$",
                                    },
                                    "when": {"type": "string", "format": "date-time"},
                                    "tags": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 2,
                                        "items": {"type": "string"},
                                    },
                                    "items": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "n": {"type": "string"},
                                                "w": {"type": "integer", "default": 5},
                                            },
                                        },
                                    },
                                    "labels": {
                                        "type": "object",
                                        "additionalProperties": {"type": "string"},
                                    },
                                    "free": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                    "nested": {
                                        "type": "object",
                                        "default": {},
                                        "properties": {"depth": {"type": "integer", "default": 3}},
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"ready": {"type": "boolean"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": spec,
    }


async def test_posted_crd_is_served_with_schema(
    api: client.ApiClient, custom: client.CustomObjectsApi
) -> None:
    ext = client.ApiextensionsV1Api(api)
    await ext.create_custom_resource_definition(WIDGET_CRD)  # type: ignore[arg-type]  # a plain dict: the client sends it as is
    crd = await ext.read_custom_resource_definition("widgets.example.com")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    made = await custom.create_namespaced_custom_object(
        *WIDGETS[:2],
        "default",
        WIDGETS[2],
        widget(
            size=3,
            port="http",
            note=None,
            items=[{"n": "x"}],
            labels={"a": "b"},
            free={"deep": {"x": 1}},
            junk=1,
        ),
    )
    spec = made["spec"]
    assert spec["mode"] == "a"
    assert spec["nested"] == {"depth": 3}
    assert spec["items"] == [{"n": "x", "w": 5}]
    assert spec["free"] == {"deep": {"x": 1}}
    assert spec["note"] is None
    assert "junk" not in spec
    with pytest.raises(ApiException) as exc:
        await custom.create_namespaced_custom_object(
            *WIDGETS[:2],
            "default",
            WIDGETS[2],
            {
                **widget(
                    size=1.5, ratio=0, mode="c", port=1.5, name="TOOLONG", when="nope", tags=[]
                ),
                "metadata": {"name": "bad"},
            },
        )
    found = dict(causes(exc.value))
    assert (
        found["spec.size"]
        == 'spec.size: Invalid value: "number": spec.size in body must be of type integer: "number"'
    )
    assert (
        found["spec.ratio"]
        == "spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0"
    )
    assert found["spec.mode"] == 'spec.mode: Unsupported value: "c": supported values: "a", "b"'
    assert "spec.port" in found
    assert "spec.name" in found
    assert found["spec.when"].endswith('must be of type date-time: "nope"')
    assert (
        found["spec.tags"]
        == "spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items"
    )
    with pytest.raises(ApiException) as required:
        await custom.create_namespaced_custom_object(
            *WIDGETS[:2],
            "default",
            WIDGETS[2],
            {**widget(tags=["a", "b", "c"]), "metadata": {"name": "r"}},
        )
    found = dict(causes(required.value))
    assert found["spec.size"] == "spec.size: Required value"
    assert found["spec.tags"] == "spec.tags: Too many: 3: must have at most 2 items"
    with pytest.raises(ApiException) as status_exc:
        await custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            *WIDGETS[:2],
            "default",
            WIDGETS[2],
            "w",
            {"status": {"ready": "yes"}},
            _content_type=MERGE,
        )
    assert [f for f, _ in causes(status_exc.value)] == ["status.ready"]
    # Deleting the CRD stops serving its kind.
    await ext.delete_custom_resource_definition("widgets.example.com")
    with pytest.raises(ApiException) as gone:
        await custom.list_namespaced_custom_object(*WIDGETS[:2], "default", WIDGETS[2])
    assert gone.value.status == 404


async def test_invalid_crd_is_rejected(api: client.ApiClient) -> None:
    bad = json.loads(json.dumps(WIDGET_CRD))
    bad["metadata"]["name"] = "wrong.example.com"
    with pytest.raises(ApiException) as exc:
        await client.ApiextensionsV1Api(api).create_custom_resource_definition(bad)
    assert exc.value.status == 422
    assert [f for f, _ in causes(exc.value)] == ["metadata.name"]


async def test_defaults_added_to_a_crd_show_on_read(
    api: client.ApiClient, custom: client.CustomObjectsApi
) -> None:
    ext = client.ApiextensionsV1Api(api)
    crd = json.loads(json.dumps(WIDGET_CRD))
    await ext.create_custom_resource_definition(crd)
    made = await custom.create_namespaced_custom_object(
        *WIDGETS[:2], "default", WIDGETS[2], widget(size=2)
    )
    assert "color" not in made["spec"]
    live = await ext.read_custom_resource_definition("widgets.example.com")
    crd["metadata"]["resourceVersion"] = live.metadata.resource_version
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]
    props["color"] = {"type": "string", "default": "blue"}
    await ext.replace_custom_resource_definition("widgets.example.com", crd)
    read = await custom.get_namespaced_custom_object(*WIDGETS[:2], "default", WIDGETS[2], "w")
    assert read["spec"]["color"] == "blue"
    assert read["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
