"""Authentication (bearer tokens) and RBAC authorization when authorize=True."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from fl_sandbox.apiserver import ApiServer

from .conftest import client_for, error_body

G, V, P = "addon.open-cluster-management.io", "v1alpha1", "managedclusteraddons"
MERGE = "application/merge-patch+json"


def agent_group(cluster: str) -> str:
    return f"system:open-cluster-management:cluster:{cluster}:addon:federated-learning"


@pytest.fixture
async def secured() -> AsyncIterator[ApiServer]:
    srv = ApiServer(name="hub", authorize=True)
    await srv.start()
    yield srv
    await srv.stop()


async def test_unauthenticated_is_401(secured: ApiServer) -> None:
    anonymous = client.ApiClient(client.Configuration(host=secured.url))
    try:
        with pytest.raises(ApiException) as exc:
            await client.CoreV1Api(anonymous).list_namespace()
        assert exc.value.status == 401
    finally:
        await anonymous.close()


async def test_cluster_agent_cannot_write_another_clusters_addon_status(
    secured: ApiServer, tmp_path: Path
) -> None:
    admin = await client_for(secured, tmp_path / "admin")
    agent = await client_for(
        secured,
        tmp_path / "agent1",
        user="cluster1-agent",
        groups=[agent_group("cluster1"), "system:authenticated"],
    )
    try:
        core, rbac, custom = (
            client.CoreV1Api(admin),
            client.RbacAuthorizationV1Api(admin),
            client.CustomObjectsApi(admin),
        )
        await rbac.create_cluster_role(
            client.V1ClusterRole(
                metadata=client.V1ObjectMeta(name="fl-agent"),
                rules=[
                    client.V1PolicyRule(
                        api_groups=[G], resources=[P], verbs=["get", "list", "watch"]
                    ),
                    client.V1PolicyRule(
                        api_groups=[G],
                        resources=[f"{P}/status"],
                        verbs=["patch", "update"],
                        resource_names=["federated-learning"],
                    ),
                ],
            )
        )
        for cluster in ("cluster1", "cluster2"):
            await core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=cluster))
            )
            await custom.create_namespaced_custom_object(
                G,
                V,
                cluster,
                P,
                {
                    "apiVersion": f"{G}/{V}",
                    "kind": "ManagedClusterAddOn",
                    "metadata": {"name": "federated-learning"},
                    "spec": {},
                },
            )
            await rbac.create_namespaced_role_binding(
                cluster,
                client.V1RoleBinding(
                    metadata=client.V1ObjectMeta(name="fl-agent"),
                    role_ref=client.V1RoleRef(
                        api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="fl-agent"
                    ),
                    subjects=[
                        client.RbacV1Subject(
                            kind="Group",
                            name=agent_group(cluster),
                            api_group="rbac.authorization.k8s.io",
                        )
                    ],
                ),
            )
        mine = client.CustomObjectsApi(agent)
        status = {"status": {"namespace": "addon-ns"}}
        out = await mine.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
            G, V, "cluster1", P, "federated-learning", status, _content_type=MERGE
        )
        assert out["status"]["namespace"] == "addon-ns"
        with pytest.raises(ApiException) as other:
            await mine.patch_namespaced_custom_object_status(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
                G, V, "cluster2", P, "federated-learning", status, _content_type=MERGE
            )
        assert other.value.status == 403
        assert "cannot patch resource" in error_body(other.value)
        # The spec is not writable, and names outside resourceNames are not either.
        with pytest.raises(ApiException) as spec:
            await mine.patch_namespaced_custom_object(  # type: ignore[call-arg]  # _content_type: runtime kwarg, not in the stubs
                G, V, "cluster1", P, "federated-learning", {"spec": {}}, _content_type=MERGE
            )
        assert spec.value.status == 403
        assert (await mine.get_namespaced_custom_object(G, V, "cluster1", P, "federated-learning"))[
            "metadata"
        ]["name"] == "federated-learning"
        with pytest.raises(ApiException) as cms:
            await client.CoreV1Api(agent).list_namespaced_config_map("cluster1")
        assert cms.value.status == 403
        assert any(r.user == "cluster1-agent" and r.status == 403 for r in secured.request_log)
    finally:
        await agent.close()
        await admin.close()


async def test_access_reviews(secured: ApiServer, tmp_path: Path) -> None:
    admin = await client_for(secured, tmp_path / "admin")
    bob = await client_for(secured, tmp_path / "bob", user="bob", groups=["system:authenticated"])
    try:
        await client.RbacAuthorizationV1Api(admin).create_namespaced_role(
            "default",
            client.V1Role(
                metadata=client.V1ObjectMeta(name="cm-reader"),
                rules=[
                    client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get"])
                ],
            ),
        )
        await client.RbacAuthorizationV1Api(admin).create_namespaced_role_binding(
            "default",
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="bob"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="cm-reader"
                ),
                subjects=[
                    client.RbacV1Subject(
                        kind="User", name="bob", api_group="rbac.authorization.k8s.io"
                    )
                ],
            ),
        )

        def ask(verb: str) -> client.V1SelfSubjectAccessReview:
            attrs = client.V1ResourceAttributes(
                namespace="default", verb=verb, resource="configmaps"
            )
            return client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs)
            )

        authz = client.AuthorizationV1Api(bob)
        assert (await authz.create_self_subject_access_review(ask("get"))).status.allowed is True
        assert (
            await authz.create_self_subject_access_review(ask("delete"))
        ).status.allowed is False
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user="bob",
                resource_attributes=client.V1ResourceAttributes(
                    namespace="other", verb="get", resource="configmaps"
                ),
            )
        )
        answer = await client.AuthorizationV1Api(admin).create_subject_access_review(review)
        assert answer.status.allowed is False
    finally:
        await bob.close()
        await admin.close()
