"""The real kubectl against the server: discovery, tables, apply (client- and server-side), watch."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from fl_sandbox.apiserver import ApiServer

from .conftest import REPO_CRDS, client_for, eventually

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


class Kubectl:
    def __init__(self, server: ApiServer, tmp_path: Path, **identity: Any) -> None:
        self.kubeconfig = server.write_kubeconfig(tmp_path / "kubectl.kubeconfig", **identity)
        self.cache = tmp_path / "kube-cache"

    def argv(self, *args: str) -> list[str]:
        assert KUBECTL is not None
        return [
            KUBECTL,
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache),
            *args,
        ]

    async def __call__(self, *args: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await proc.communicate(stdin.encode() if stdin else None)
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {err.decode()}"
        return out.decode()


@pytest.fixture
def kubectl(server: ApiServer, tmp_path: Path) -> Kubectl:
    return Kubectl(server, tmp_path)


async def test_get_namespaces_and_managed_clusters(
    kubectl: Kubectl, custom: client.CustomObjectsApi, crd_dir: Path
) -> None:
    """(The printer columns come from the upstream ManagedCluster CRD: skipped without it.)"""
    out = await kubectl("get", "ns")
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "AGE"]
    assert any(line.split()[:2] == ["default", "Active"] for line in out.splitlines())
    await custom.create_cluster_custom_object(
        "cluster.open-cluster-management.io",
        "v1",
        "managedclusters",
        {
            "apiVersion": "cluster.open-cluster-management.io/v1",
            "kind": "ManagedCluster",
            "metadata": {"name": "cluster1"},
            "spec": {"hubAcceptsClient": True},
        },
    )
    out = await kubectl("get", "managedclusters")
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "HUB", "ACCEPTED"]
    assert row.split()[:2] == ["cluster1", "true"]
    assert "cluster1" in await kubectl("get", "mcl", "cluster1", "-o", "name")


async def test_get_fl_across_namespaces(kubectl: Kubectl) -> None:
    if not REPO_CRDS.is_dir():
        pytest.skip("deploy/crds is not there yet")
    out = await kubectl("get", "fl", "-A")
    assert out == ""  # "No resources found" goes to stderr


MANIFESTS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: demo, namespace: default}
data: {a: "VALUE"}
---
apiVersion: cluster.open-cluster-management.io/v1
kind: ManagedCluster
metadata: {name: cluster9}
spec: {hubAcceptsClient: true}
"""


async def test_client_side_and_server_side_apply(kubectl: Kubectl, core: client.CoreV1Api) -> None:
    await kubectl("apply", "-f", "-", stdin=MANIFESTS.replace("VALUE", "1"))
    await kubectl("apply", "-f", "-", stdin=MANIFESTS.replace("VALUE", "2"))
    demo = await core.read_namespaced_config_map("demo", "default")
    assert demo.data == {"a": "2"}
    assert "kubectl.kubernetes.io/last-applied-configuration" in demo.metadata.annotations
    await kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=MANIFESTS.replace("VALUE", "3"),
    )
    demo = await core.read_namespaced_config_map("demo", "default")
    assert demo.data == {"a": "3"}
    assert "kubectl" in {m.manager for m in demo.metadata.managed_fields}


async def test_get_watch_streams_rows(
    kubectl: Kubectl, server: ApiServer, core: client.CoreV1Api
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *kubectl.argv("get", "configmaps", "-w"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await eventually(
            lambda: server.open_watches > 0, within=15, message="kubectl never watched"
        )
        await core.create_namespaced_config_map(
            "default",
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name="watched"), data={"x": "y"}),
        )
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, "kubectl get -w ended early"
                if line.startswith("watched"):
                    break
        assert line.split()[:2] == ["watched", "1"]
    finally:
        proc.terminate()
        await proc.wait()


async def test_kubectl_create_sends_protobuf_for_builtins(
    kubectl: Kubectl, core: client.CoreV1Api, api: client.ApiClient
) -> None:
    await kubectl("create", "namespace", "team-a")
    await kubectl("create", "configmap", "x", "-n", "team-a", "--from-literal=a=b")
    await kubectl("create", "secret", "generic", "s", "-n", "team-a", "--from-literal=p=q")
    await kubectl("create", "rolebinding", "rb", "-n", "team-a", "--clusterrole=view", "--user=bob")
    assert (await core.read_namespaced_config_map("x", "team-a")).data == {"a": "b"}
    secret = await core.read_namespaced_secret("s", "team-a")
    assert secret.data == {"p": "cQ=="}
    assert secret.type == "Opaque"
    binding = await client.RbacAuthorizationV1Api(api).read_namespaced_role_binding("rb", "team-a")
    assert binding.role_ref.name == "view"
    assert [(s.kind, s.name) for s in binding.subjects] == [("User", "bob")]
    await kubectl("delete", "namespace", "team-a")


async def test_kubectl_with_rbac_over_tls(tmp_path: Path) -> None:
    secured = ApiServer(name="secure", authorize=True, tls=True)
    await secured.start()
    try:
        assert secured.url.startswith("https://")
        admin = Kubectl(secured, tmp_path / "admin")
        assert "default" in await admin("get", "ns")
        bob = Kubectl(secured, tmp_path / "bob", user="bob", groups=["system:authenticated"])
        proc = await asyncio.create_subprocess_exec(
            *bob.argv("get", "configmaps"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode != 0
        assert 'User "bob" cannot list resource "configmaps"' in err.decode()
        api = await client_for(
            secured, tmp_path / "python.kubeconfig"
        )  # kubernetes_asyncio trusts the CA too
        try:
            assert any(
                ns.metadata.name == "default"
                for ns in (await client.CoreV1Api(api).list_namespace()).items
            )
        finally:
            await api.close()
    finally:
        await secured.stop()


def _crd_schema(path: Path) -> dict[str, Any]:
    (crd,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _words(text: str) -> list[str]:
    """kubectl wraps descriptions: compare word by word."""
    return text.split()


async def test_explain_shows_the_field_docs_of_our_crd(kubectl: Kubectl) -> None:
    server = _crd_schema(REPO_CRDS / "federatedlearnings.yaml")["properties"]["spec"]["properties"][
        "server"
    ]
    out = await kubectl("explain", "fl.spec.server")
    assert "KIND:       FederatedLearning" in out
    assert "FIELD: server <Object>" in out
    assert _words(server["description"]) == _words(out.split("DESCRIPTION:")[1].split("FIELDS:")[0])
    for name, field in server["properties"].items():
        assert f"  {name}\t<" in out, name
        assert " ".join(_words(field["description"])) in " ".join(_words(out)), name
    labels = await kubectl("explain", "fl.metadata.labels")
    assert "FIELD: labels <map[string]string>" in labels


async def test_explain_ocm_kinds_and_builtins(kubectl: Kubectl, crd_dir: Path) -> None:
    schema = _crd_schema(
        crd_dir / "0000_00_clusters.open-cluster-management.io_managedclusters.crd.yaml"
    )
    accepts = schema["properties"]["spec"]["properties"]["hubAcceptsClient"]
    out = await kubectl("explain", "managedclusters.spec.hubAcceptsClient")
    assert "FIELD: hubAcceptsClient <boolean>" in out
    assert _words(accepts["description"]) == _words(out.split("DESCRIPTION:")[1])
    manifests = await kubectl("explain", "addontemplates.spec.agentSpec.workload.manifests")
    assert "FIELD: manifests <[]Object>" in manifests
    config_map = await kubectl("explain", "configmaps")
    assert "KIND:       ConfigMap" in config_map
    assert "  metadata\t<ObjectMeta>" in config_map
