"""Embedded resources (the manifests of ManifestWorks and AddOnTemplates) as kube-apiserver
treats them: ObjectMeta validated like a top-level object's (422 naming the field), pruned
to ObjectMeta's fields (with a warning), and refused with 400 when it does not decode.

Each expected status, field and message is what kube-apiserver 1.36 answered to the same
request (a dry-run create on a real hub with the same CRDs)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import error_body, ocm_crds_or_skip

WORK = ("work.open-cluster-management.io", "v1")
ADDON = ("addon.open-cluster-management.io", "v1alpha1")
MANIFEST = "spec.workload.manifests[0]"
PLACEHOLDER = "{{INSTALL_NAMESPACE}}"
RFC1123_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


@pytest.fixture(autouse=True)
def _ocm_crds() -> None:
    ocm_crds_or_skip()


def work(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "work.open-cluster-management.io/v1",
        "kind": "ManifestWork",
        "metadata": {"name": "w"},
        "spec": {"workload": {"manifests": [manifest]}},
    }


def config_map(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "agents", **meta},
        "data": {"a": "b"},
    }


def addon_template(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "addon.open-cluster-management.io/v1alpha1",
        "kind": "AddOnTemplate",
        "metadata": {"name": "federated-learning-0.1.0"},
        "spec": {
            "addonName": "federated-learning",
            "agentSpec": {
                "workload": {
                    "manifests": [
                        # A placeholder is a valid name (a path segment)...
                        {
                            "apiVersion": "v1",
                            "kind": "Namespace",
                            "metadata": {"name": PLACEHOLDER},
                        },
                        # ...but never a valid namespace.
                        {
                            "apiVersion": "v1",
                            "kind": "ServiceAccount",
                            "metadata": {"name": "agent", "namespace": namespace},
                        },
                    ]
                }
            },
        },
    }


def causes(exc: ApiException) -> list[tuple[str, str, str]]:
    body = json.loads(error_body(exc))
    assert body["code"] == 422, body
    return [(c["reason"], c["field"], c["message"]) for c in body["details"]["causes"]]


async def test_addon_template_with_a_placeholder_namespace_is_refused(
    custom: client.CustomObjectsApi,
) -> None:
    with pytest.raises(ApiException) as exc:
        await custom.create_cluster_custom_object(
            *ADDON, "addontemplates", addon_template(PLACEHOLDER)
        )
    field = "spec.agentSpec.workload.manifests[1].metadata.namespace"
    assert causes(exc.value) == [
        ("FieldValueInvalid", field, f'Invalid value: "{PLACEHOLDER}": {RFC1123_LABEL}')
    ]
    assert (
        f'{field}: Invalid value: "{PLACEHOLDER}"' in json.loads(error_body(exc.value))["message"]
    )
    made = await custom.create_cluster_custom_object(
        *ADDON, "addontemplates", addon_template("open-cluster-management-agent-addon")
    )
    manifests = made["spec"]["agentSpec"]["workload"]["manifests"]
    assert manifests[0]["metadata"]["name"] == PLACEHOLDER
    assert manifests[1]["metadata"]["namespace"] == "open-cluster-management-agent-addon"


NOT_CHECKED = (
    "FieldValueInvalid",
    "<nil>",
    "Invalid value: null: some validation rules were not checked because the object was "
    "invalid; correct the existing errors to complete validation",
)
QUALIFIED_NAME_PART = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


@pytest.mark.parametrize(
    ("manifest", "field", "message"),
    [
        pytest.param(
            config_map(namespace="Agents"),
            f"{MANIFEST}.metadata.namespace",
            f'Invalid value: "Agents": {RFC1123_LABEL}',
            id="namespace-not-a-dns-label",
        ),
        pytest.param(
            config_map(namespace="a.b"),
            f"{MANIFEST}.metadata.namespace",
            'Invalid value: "a.b": must not contain dots',
            id="namespace-with-dots",
        ),
        pytest.param(
            config_map(namespace="n" * 64),
            f"{MANIFEST}.metadata.namespace",
            f'Invalid value: "{"n" * 64}": must be no more than 63 characters',
            id="namespace-too-long",
        ),
        pytest.param(
            config_map(name="a/b"),
            f"{MANIFEST}.metadata.name",
            "Invalid value: \"a/b\": may not contain '/'",
            id="name-not-a-path-segment",
        ),
        pytest.param(
            config_map(name=".."),
            f"{MANIFEST}.metadata.name",
            "Invalid value: \"..\": may not be '..'",
            id="name-dot-dot",
        ),
        pytest.param(
            config_map(generateName="x%"),
            f"{MANIFEST}.metadata.generateName",
            "Invalid value: \"x%\": may not contain '%'",
            id="generate-name",
        ),
        pytest.param(
            config_map(labels={"app/x/y": "v"}),
            f"{MANIFEST}.metadata.labels",
            'Invalid value: "app/x/y": a valid label key must consist of',
            id="label-key-two-slashes",
        ),
        pytest.param(
            config_map(labels={"-app": "v"}),
            f"{MANIFEST}.metadata.labels",
            f'Invalid value: "-app": {QUALIFIED_NAME_PART}',
            id="label-key",
        ),
        pytest.param(
            config_map(labels={"app": "a b"}),
            f"{MANIFEST}.metadata.labels",
            'Invalid value: "a b": a valid label must be an empty string or consist of',
            id="label-value",
        ),
        pytest.param(
            config_map(labels={"app": "v" * 64}),
            f"{MANIFEST}.metadata.labels",
            "must be no more than 63 bytes",
            id="label-value-too-long",
        ),
        pytest.param(
            config_map(annotations={"Example.com/Note": "ok", "bad key": "v"}),
            f"{MANIFEST}.metadata.annotations",
            f'Invalid value: "bad key": {QUALIFIED_NAME_PART}',
            id="annotation-key",
        ),
        pytest.param(
            config_map(annotations={"big": "x" * (256 * 1024)}),
            f"{MANIFEST}.metadata.annotations",
            "Too long: may not be more than 262144 bytes",
            id="annotations-size",
        ),
        pytest.param(
            config_map(finalizers=["example.com/a b"]),
            f"{MANIFEST}.metadata.finalizers",
            f'Invalid value: "example.com/a b": {QUALIFIED_NAME_PART}',
            id="finalizer",
        ),
        pytest.param(
            config_map(ownerReferences=[{"apiVersion": "v1", "kind": "Pod", "name": "p"}]),
            f"{MANIFEST}.metadata.ownerReferences.uid",
            'Invalid value: "": must not be empty',
            id="owner-reference",
        ),
        pytest.param(
            config_map(generation=-1),
            f"{MANIFEST}.metadata.generation",
            "Invalid value: -1: must be greater than or equal to 0",
            id="generation",
        ),
        pytest.param(
            {**config_map(), "kind": "Config_Map"},
            f"{MANIFEST}.kind",
            'Invalid value: "Config_Map": may have mixed case, but should otherwise match: '
            "a DNS-1035 label must consist of",
            id="kind",
        ),
        pytest.param(
            {**config_map(), "apiVersion": "a/b/c"},
            f"{MANIFEST}.apiVersion",
            'Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c',
            id="api-version",
        ),
        pytest.param(
            {"kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "agents"}},
            f"{MANIFEST}.apiVersion",
            "Required value",
            id="api-version-missing",
        ),
        pytest.param(
            {**config_map(), "kind": ""},
            f"{MANIFEST}.kind",
            'Invalid value: "": must not be empty',
            id="kind-empty",
        ),
    ],
)
async def test_embedded_metadata_is_validated_like_kube_apiserver(
    custom: client.CustomObjectsApi, manifest: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ApiException) as exc:
        await custom.create_namespaced_custom_object(
            *WORK, "default", "manifestworks", work(manifest)
        )
    found = causes(exc.value)
    # (ManifestWork's CRD has a CEL rule: kube says it was not checked after a blocking
    # error, in a cause of its own.)
    assert [f for _, f, _ in found if f != "<nil>"] == [field], found
    assert message in found[0][2], found
    blocking = found[0][0] in ("FieldValueRequired", "FieldValueTooLong")
    assert (found[-1] == NOT_CHECKED) == blocking, found


async def test_embedded_metadata_is_pruned_to_object_meta_with_a_warning(
    custom: client.CustomObjectsApi,
) -> None:
    manifest = config_map(notMeta="dropped", labels={}, creationTimestamp=None)
    made, _, headers = await custom.create_namespaced_custom_object_with_http_info(
        *WORK, "default", "manifestworks", work(manifest)
    )
    assert made["spec"]["workload"]["manifests"][0]["metadata"] == {
        "name": "cm",
        "namespace": "agents",
    }
    warning = f'299 - "unknown field \\"{MANIFEST}.metadata.notMeta\\""'
    assert warning in headers.getall("Warning")
    strict = {**work(manifest), "metadata": {"name": "strict"}}
    with pytest.raises(ApiException) as exc:
        await custom.create_namespaced_custom_object(
            *WORK, "default", "manifestworks", strict, field_validation="Strict"
        )
    assert exc.value.status == 400
    assert f'unknown field \\"{MANIFEST}.metadata.notMeta\\"' in error_body(exc.value)


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        pytest.param(
            config_map(labels={"app": 1}),
            'metadata: Invalid value: {"labels":{"app":1},"name":"cm","namespace":"agents"}: '
            "json: cannot unmarshal number into Go struct field ObjectMeta.labels of type string",
            id="labels",
        ),
        pytest.param(
            config_map(finalizers={"a": "b"}),
            "cannot unmarshal object into Go struct field ObjectMeta.finalizers of type []string",
            id="finalizers-not-a-list",
        ),
        pytest.param(
            config_map(name=7), "into Go struct field ObjectMeta.name of type string", id="name"
        ),
        pytest.param({**config_map(), "kind": 3}, f"{MANIFEST}.kind: Invalid value: 3", id="kind"),
    ],
)
async def test_embedded_metadata_that_does_not_decode_is_a_bad_request(
    custom: client.CustomObjectsApi, manifest: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ApiException) as exc:
        await custom.create_namespaced_custom_object(
            *WORK, "default", "manifestworks", work(manifest)
        )
    assert exc.value.status == 400
    message = json.loads(error_body(exc.value))["message"]
    assert message.startswith(
        'ManifestWork in version "v1" cannot be handled as a ManifestWork: '
    ), message
    assert fragment in message
