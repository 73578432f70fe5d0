"""The sandbox API server, with the upstream OCM CRDs, accepts every manifest we ship.

Objects go through kubernetes_asyncio (fl_kube) by server-side apply, as `kubectl apply
--server-side` would send them, and are read back: what we wrote must still be there (a
field the schema does not know would have been pruned).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fl_kube import Invalid, KubeApi
from fl_kube import resources as r

from .manifests import ADDON_TEMPLATES, DEPLOY, OUR_CRDS, SAMPLES, load_docs, objects

# Needs the Prometheus Operator's CRDs, which a plain hub (and the sandbox) does not serve.
NOT_SERVED = {("monitoring.coreos.com/v1", "ServiceMonitor")}
FIELD_MANAGER = "deploy-tests"
# Kinds we ship that the controllers never touch, so fl_kube does not list them.
DEPLOYMENT = r.Resource("apps", "v1", "deployments", "Deployment", True)
EXTRA = {
    ("v1", "Service"): r.Resource("", "v1", "services", "Service", True),
    ("apps/v1", "Deployment"): DEPLOYMENT,
}


def _resource(doc: dict[str, Any]) -> r.Resource:
    key = (doc["apiVersion"], doc["kind"])
    return EXTRA[key] if key in EXTRA else r.by_kind(*key)


@pytest.fixture
async def hub(tmp_path: Path, crd_dir: Path) -> AsyncIterator[KubeApi]:
    from fl_sandbox.apiserver import ApiServer

    server = ApiServer(name="hub", crd_dirs=[crd_dir])
    await server.start()
    try:
        api = await KubeApi.from_kubeconfig(server.write_kubeconfig(tmp_path / "hub.kubeconfig"))
        try:
            yield api
        finally:
            await api.close()
    finally:
        await server.stop()


def _contained(applied: Any, stored: Any, path: str = "") -> list[str]:
    """Paths where `stored` lost or changed what `applied` said (defaults may be added)."""
    if isinstance(applied, dict):
        if not isinstance(stored, dict):
            return [path or "<root>"]
        return [
            p
            for key, value in applied.items()
            for p in _contained(value, stored.get(key), f"{path}.{key}" if path else key)
        ]
    if isinstance(applied, list):
        if not isinstance(stored, list) or len(stored) != len(applied):
            return [path]
        return [p for i, v in enumerate(applied) for p in _contained(v, stored[i], f"{path}[{i}]")]
    return [] if applied == stored or str(applied) == str(stored) else [path]


async def _apply_all(api: KubeApi, docs: list[dict[str, Any]]) -> None:
    order = {"CustomResourceDefinition": 0, "Namespace": 1}
    for doc in sorted(docs, key=lambda d: order.get(d["kind"], 2)):
        if (doc["apiVersion"], doc["kind"]) in NOT_SERVED:
            continue
        res = _resource(doc)
        namespace = doc["metadata"].get("namespace")
        await api.apply(res, doc, field_manager=FIELD_MANAGER, namespace=namespace)
        stored = await api.get(res, doc["metadata"]["name"], namespace=namespace)
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        assert _contained(body, stored) == [], f"{doc['kind']} {doc['metadata']['name']}"


async def test_hub_accepts_the_deployment_and_the_addon(hub: KubeApi) -> None:
    docs = objects(DEPLOY / "crds") + [
        d for p in sorted(DEPLOY.glob("*.yaml")) if p.name != "kustomization.yaml"
        for d in load_docs(p)
    ]  # fmt: skip
    docs += objects(ADDON_TEMPLATES)
    await _apply_all(hub, docs)
    cma = await hub.get(r.CLUSTER_MANAGEMENT_ADDON, "federated-learning")
    assert cma["spec"]["installStrategy"]["type"] == "Manual"


async def test_hub_accepts_the_samples(hub: KubeApi) -> None:
    await _apply_all(
        hub, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}]
    )
    samples = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in load_docs(path):
            doc["metadata"]["namespace"] = "default"
            samples.append(doc)
    await _apply_all(hub, samples)
    listed = await hub.list(r.FEDERATED_LEARNING, namespace="default")
    assert len(listed.items) == len(samples)


async def test_schema_validation_is_really_on(hub: KubeApi) -> None:
    """The same server refuses what the upstream schema forbids: the checks above mean something."""
    (cma,) = load_docs(ADDON_TEMPLATES / "clustermanagementaddon.yaml")
    cma["spec"]["installStrategy"]["type"] = "Sometimes"
    with pytest.raises(Invalid):
        await hub.apply(r.CLUSTER_MANAGEMENT_ADDON, cma, field_manager=FIELD_MANAGER)
    (crd,) = load_docs(OUR_CRDS / "federatedlearnings.yaml")
    assert crd["spec"]["names"]["kind"] == "FederatedLearning"
    (sample,) = load_docs(SAMPLES / "digits-fedavg.yaml")
    sample["metadata"]["namespace"] = "default"
    sample["spec"]["server"]["rounds"] = 0
    await _apply_all(
        hub, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}]
    )
    with pytest.raises(Invalid):
        await hub.apply(r.FEDERATED_LEARNING, sample, field_manager=FIELD_MANAGER)


async def test_managed_cluster_accepts_the_rendered_agent(tmp_path: Path) -> None:
    """What the addon-manager would put in the ManifestWork, applied to a managed cluster."""
    from fl_sandbox.apiserver import ApiServer

    from .manifests import render_manifests
    from .test_addon_templates import TEMPLATE, _variables

    server = ApiServer(name="cluster1")
    await server.start()
    try:
        api = await KubeApi.from_kubeconfig(server.write_kubeconfig(tmp_path / "c1.kubeconfig"))
        try:
            await _apply_all(api, render_manifests(TEMPLATE, _variables("cluster1")))
            deployment = await api.get(
                DEPLOYMENT,
                "federated-learning-agent",
                namespace="open-cluster-management-agent-addon",
            )
            assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][1] == "cluster1"
        finally:
            await api.close()
    finally:
        await server.stop()
