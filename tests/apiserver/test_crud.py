"""Metadata, errors, optimistic concurrency, selectors and discovery through kubernetes_asyncio."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from fl_sandbox.apiserver import ApiServer

from .conftest import error_body


def cm(name: str, labels: dict[str, str] | None = None, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data=data or {"k": "v"}
    )


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error_body(exc))
    return body


async def test_create_sets_metadata_and_answers_201(core: client.CoreV1Api) -> None:
    _, code, _ = await core.create_namespaced_config_map_with_http_info("default", cm("a"))
    assert code == 201
    first = await core.read_namespaced_config_map("a", "default")
    second = await core.create_namespaced_config_map("default", cm("b"))
    assert first.metadata.uid
    assert first.metadata.uid != second.metadata.uid
    assert first.metadata.creation_timestamp is not None
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    listed = await core.list_namespaced_config_map("default")
    assert [i.metadata.name for i in listed.items] == ["a", "b"]
    assert int(listed.metadata.resource_version) >= int(second.metadata.resource_version)


async def test_errors_are_status_bodies(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as missing:
        await core.read_namespaced_config_map("nope", "default")
    body = status_of(missing.value)
    assert missing.value.status == 404
    assert body["kind"] == "Status"
    assert body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "nope" not found'
    await core.create_namespaced_config_map("default", cm("dup"))
    with pytest.raises(ApiException) as dup:
        await core.create_namespaced_config_map("default", cm("dup"))
    assert dup.value.status == 409
    assert status_of(dup.value)["reason"] == "AlreadyExists"


async def test_namespace_must_exist(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map("ghost", cm("a"))
    assert exc.value.status == 404
    assert status_of(exc.value)["message"] == 'namespaces "ghost" not found'


async def test_generate_name(core: client.CoreV1Api) -> None:
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="job-"))
    made = await core.create_namespaced_config_map("default", body)
    assert made.metadata.name.startswith("job-")
    assert len(made.metadata.name) == len("job-") + 5


async def test_invalid_names_and_labels_are_422(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map("default", cm("Bad_Name"))
    assert exc.value.status == 422
    assert status_of(exc.value)["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as bad_label:
        await core.create_namespaced_config_map("default", cm("ok", labels={"a": "x" * 64}))
    assert bad_label.value.status == 422


async def test_finalizers_and_owner_references_are_validated(core: client.CoreV1Api) -> None:
    """kube-apiserver's ObjectMeta rules, with its field paths and wording."""
    with_finalizer = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="f", finalizers=["example.com/a b"])
    )
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map("default", with_finalizer)
    (cause,) = status_of(exc.value)["details"]["causes"]
    assert cause["field"] == "metadata.finalizers"
    assert cause["message"].startswith('Invalid value: "example.com/a b": name part must consist')
    orphan = client.V1ObjectMeta(name="o", finalizers=["orphan", "foregroundDeletion"])
    with pytest.raises(ApiException) as both:
        await core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=orphan))
    assert (
        "finalizer orphan and foregroundDeletion cannot be both set"
        in (status_of(both.value)["message"])
    )
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": ""}
    with pytest.raises(ApiException) as no_uid:
        await core.create_namespaced_config_map(
            "default",
            {"metadata": {"name": "w", "ownerReferences": [owner]}},  # type: ignore[arg-type]  # a plain dict: the client sends it as is
        )
    (cause,) = status_of(no_uid.value)["details"]["causes"]
    assert (cause["field"], cause["message"]) == (
        "metadata.ownerReferences.uid",
        'Invalid value: "": must not be empty',
    )


async def test_stale_put_and_patch_conflict(core: client.CoreV1Api) -> None:
    made = await core.create_namespaced_config_map("default", cm("c"))
    made.data = {"k": "v2"}
    updated = await core.replace_namespaced_config_map("c", "default", made)
    assert updated.data == {"k": "v2"}
    made.data = {"k": "v3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as exc:
        await core.replace_namespaced_config_map("c", "default", made)
    assert exc.value.status == 409
    assert status_of(exc.value)["reason"] == "Conflict"
    stale = {"metadata": {"resourceVersion": made.metadata.resource_version}, "data": {"k": "v4"}}
    with pytest.raises(ApiException) as patch_exc:
        await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            "c", "default", stale, _content_type="application/merge-patch+json"
        )
    assert patch_exc.value.status == 409
    fresh = {
        "metadata": {"resourceVersion": updated.metadata.resource_version},
        "data": {"k": "v5"},
    }
    done = await core.patch_namespaced_config_map(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
        "c", "default", fresh, _content_type="application/merge-patch+json"
    )
    assert done.data == {"k": "v5"}


async def test_no_op_update_keeps_resource_version(core: client.CoreV1Api) -> None:
    made = await core.create_namespaced_config_map("default", cm("n"))
    same = await core.patch_namespaced_config_map("n", "default", {"data": {"k": "v"}})
    assert same.metadata.resource_version == made.metadata.resource_version


async def test_method_not_allowed(api: ApiClient) -> None:
    with pytest.raises(ApiException) as exc:
        await api.call_api(
            "/api/v1/namespaces/default/configmaps",
            "PUT",
            body={},
            header_params={"Content-Type": "application/json"},
            auth_settings=["BearerToken"],
            response_types_map={200: "object"},
        )
    assert exc.value.status == 405


async def test_label_selector_grammar(core: client.CoreV1Api) -> None:
    await core.create_namespaced_config_map("default", cm("a", {"env": "prod", "tier": "web"}))
    await core.create_namespaced_config_map("default", cm("b", {"env": "dev"}))
    await core.create_namespaced_config_map("default", cm("c", {"tier": "db"}))

    async def names(selector: str) -> list[str]:
        items = (await core.list_namespaced_config_map("default", label_selector=selector)).items
        return [i.metadata.name for i in items]

    assert await names("env=prod") == ["a"]
    assert await names("env==dev") == ["b"]
    assert await names("env!=prod") == ["b", "c"]
    assert await names("env in (prod,dev)") == ["a", "b"]
    assert await names("env notin (prod)") == ["b", "c"]
    assert await names("tier") == ["a", "c"]
    assert await names("!tier") == ["b"]
    assert await names("env,tier=web") == ["a"]
    with pytest.raises(ApiException) as exc:
        await names("env in ()")
    assert exc.value.status == 400


async def test_field_selectors(core: client.CoreV1Api) -> None:
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="other")))
    await core.create_namespaced_config_map("default", cm("a"))
    await core.create_namespaced_config_map("other", cm("a"))
    await core.create_namespaced_config_map("other", cm("b"))
    everywhere = await core.list_config_map_for_all_namespaces(field_selector="metadata.name=a")
    assert sorted(i.metadata.namespace for i in everywhere.items) == ["default", "other"]
    other = await core.list_config_map_for_all_namespaces(
        field_selector="metadata.namespace=other,metadata.name!=a"
    )
    assert [i.metadata.name for i in other.items] == ["b"]
    with pytest.raises(ApiException) as exc:
        await core.list_namespaced_config_map("default", field_selector="status.phase=Running")
    assert exc.value.status == 400


async def test_pagination(core: client.CoreV1Api) -> None:
    for n in range(5):
        await core.create_namespaced_config_map("default", cm(f"p{n}"))
    first = await core.list_namespaced_config_map("default", limit=2)
    assert len(first.items) == 2
    assert first.metadata._continue
    assert first.metadata.remaining_item_count == 3
    rest = await core.list_namespaced_config_map(
        "default", limit=10, _continue=first.metadata._continue
    )
    assert [i.metadata.name for i in first.items + rest.items] == [f"p{n}" for n in range(5)]


async def test_discovery(api: ApiClient, server: ApiServer) -> None:
    versions = await client.CoreApi(api).get_api_versions()
    assert versions.versions == ["v1"]
    groups = await client.ApisApi(api).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {
        "batch",
        "coordination.k8s.io",
        "rbac.authorization.k8s.io",
        "apiextensions.k8s.io",
    } <= names
    assert {
        "cluster.open-cluster-management.io",
        "addon.open-cluster-management.io",
        "work.open-cluster-management.io",
    } <= names
    core_resources = await client.CoreV1Api(api).get_api_resources()
    by_name = {r.name: r for r in core_resources.resources}
    assert by_name["namespaces"].namespaced is False
    assert by_name["configmaps"].kind == "ConfigMap"
    assert "namespaces/status" in by_name
    cluster = await client.CustomObjectsApi(api).get_api_resources(
        "cluster.open-cluster-management.io", "v1"
    )
    mcl = next(r for r in cluster.resources if r.name == "managedclusters")
    assert mcl.kind == "ManagedCluster"
    assert not mcl.namespaced
    assert "mcl" in mcl.short_names
    version = await client.VersionApi(api).get_code()
    assert version.major == "1"
    assert server.url.startswith("http://127.0.0.1:")


async def test_typed_apis_serve_builtin_kinds(api: ApiClient) -> None:
    batch = client.BatchV1Api(api)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="train"),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="c", image="busybox")],
                )
            )
        ),
    )
    made = await batch.create_namespaced_job("default", job)
    assert made.spec.backoff_limit == 6
    assert made.metadata.generation == 1
    job.metadata.name = "bad"
    job.spec.template.spec.restart_policy = "Always"
    with pytest.raises(ApiException) as exc:
        await batch.create_namespaced_job("default", job)
    assert exc.value.status == 422
    assert "restartPolicy" in status_of(exc.value)["message"]
    leases = client.CoordinationV1Api(api)
    lease = await leases.create_namespaced_lease(
        "default",
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="l"), spec=client.V1LeaseSpec(holder_identity="me")
        ),
    )
    assert lease.spec.holder_identity == "me"
    rbac = client.RbacAuthorizationV1Api(api)
    role = client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name="r"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get"])],
    )
    assert (await rbac.create_cluster_role(role)).rules[0].verbs == ["get"]
    secret = await client.CoreV1Api(api).create_namespaced_secret(
        "default",
        client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"token": "abc"}),
    )
    assert secret.data == {"token": "YWJj"}
    assert secret.type == "Opaque"


async def test_malformed_bodies_are_client_errors(api: ApiClient) -> None:
    async def post(path: str, body: object) -> int:
        try:
            await api.call_api(
                path,
                "POST",
                body=body,
                header_params={"Content-Type": "application/json"},
                auth_settings=["BearerToken"],
                response_types_map={201: "object"},
            )
        except ApiException as exc:
            return int(exc.status)
        return 201

    assert await post("/api/v1/namespaces/default/configmaps", {"metadata": {"name": 5}}) == 400
    assert await post("/api/v1/namespaces", {"metadata": {"name": "x"}, "spec": 5}) == 400
    assert (
        await post("/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}, "data": [1]})
        == 400
    )
    assert await post("/api/v1/namespaces/default/configmaps", [1, 2]) == 400


async def test_unknown_fields_of_builtin_kinds(api: ApiClient, core: client.CoreV1Api) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labelz": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo"}], "nodeNmae": "x"},
    }
    _, _, headers = await core.create_namespaced_pod_with_http_info("default", body)  # type: ignore[arg-type]  # a plain dict: the client sends it as is
    made = await api.call_api(
        "/api/v1/namespaces/default/pods/p",
        "GET",
        auth_settings=["BearerToken"],
        response_types_map={200: "object"},
        _return_http_data_only=True,
    )
    assert "nodeNmae" not in made["spec"]
    assert "imagee" not in made["spec"]["containers"][0]
    assert "labelz" not in made["metadata"]
    assert '299 - "unknown field \\"spec.containers[0].imagee\\""' in headers.getall("Warning")
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_config_map(
            "default",
            {"metadata": {"name": "s"}, "daat": {}},  # type: ignore[arg-type]  # a plain dict: the client sends it as is
            field_validation="Strict",
        )
    assert exc.value.status == 400
    assert (
        json.loads(error_body(exc.value))["message"]
        == 'strict decoding error: unknown field "daat"'
    )
