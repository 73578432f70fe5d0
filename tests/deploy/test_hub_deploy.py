"""deploy/: the hub manager's Deployment, RBAC, Service, ServiceMonitor and kustomize base."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fl_contract import keys

from .manifests import (
    ADDON_TEMPLATES,
    DASHBOARD,
    DEPLOY,
    load_docs,
    objects,
    one,
    yaml_files,
)

# The hub manager's own objects: deploy/ without the CRD (owned elsewhere) and the samples.
DOCS = [
    doc
    for path in sorted(DEPLOY.glob("*.yaml"))
    if path.name != "kustomization.yaml"
    for doc in load_docs(path)
]
NAMESPACE = one(DOCS, "Namespace")["metadata"]["name"]
DEPLOYMENT = one(DOCS, "Deployment")
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
ADDON_DOCS = objects(ADDON_TEMPLATES)


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, "empty file"
    for doc in docs:
        assert {"apiVersion", "kind"} <= set(doc)
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]


@pytest.mark.parametrize(
    "folder", [DEPLOY, DEPLOY / "monitoring", ADDON_TEMPLATES], ids=lambda p: p.name
)
def test_kustomize_builds(folder: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize build is not checked")
    built = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    expected = objects(folder)
    if folder == DEPLOY / "monitoring":
        assert [d["kind"] for d in docs] == ["ServiceMonitor"]
        return
    if folder == DEPLOY:
        # The samples are applied by hand (or by the demo), and the ServiceMonitor is
        # opt-in (deploy/monitoring/): neither is part of `make deploy`.
        expected = [d for d in expected if d["kind"] not in (keys.FL_KIND, "ServiceMonitor")]
        configmap = one(docs, "ConfigMap", "federated-learning-dashboard")
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["namespace"] == NAMESPACE
        assert json.loads(configmap["data"][DASHBOARD.name]) == json.loads(DASHBOARD.read_text())
        expected.append(configmap)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in expected
    ), "every manifest in the folder is part of the kustomization, and nothing else"


def test_namespaced_objects_live_in_the_managers_namespace() -> None:
    for doc in DOCS + ADDON_DOCS:
        if doc["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding", "AddOnTemplate"):
            continue
        if doc["kind"] == "ClusterManagementAddOn":
            continue
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def test_manager_deployment_is_hardened_and_its_flags_exist() -> None:
    from hub_manager.__main__ import build_parser, settings_from

    assert POD["securityContext"]["runAsNonRoot"] is True
    assert POD["securityContext"]["runAsUser"] > 0
    security = CONTAINER["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(CONTAINER["resources"]["requests"])
    assert "memory" in CONTAINER["resources"]["limits"]
    assert "/tmp" in {m["mountPath"] for m in CONTAINER["volumeMounts"]}

    args = build_parser().parse_args(CONTAINER["args"])
    env = {e["name"]: e for e in CONTAINER["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    settings = settings_from(args, {"POD_NAMESPACE": NAMESPACE, "POD_NAME": "manager-0"})
    assert settings.metrics_bind_address == ":8080"
    assert settings.leader_election is True
    assert settings.leader_election_namespace == NAMESPACE

    ports = {p["name"]: p["containerPort"] for p in CONTAINER["ports"]}
    assert ports["metrics"] == 8080
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert CONTAINER[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert POD["serviceAccountName"] == one(DOCS, "ServiceAccount")["metadata"]["name"]


def test_service_and_servicemonitor_reach_the_metrics_port() -> None:
    service = one(DOCS, "Service")
    pod_labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    monitor = one(load_docs(DEPLOY / "monitoring" / "servicemonitor.yaml"), "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"


def _grants(roles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for role in roles for rule in role["rules"]]


def _covered(rule: dict[str, Any], held: list[dict[str, Any]]) -> bool:
    """Whether `held` grants every (group, resource, verb, name) of `rule`."""
    for group in rule["apiGroups"]:
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                for name in rule.get("resourceNames") or [None]:
                    if not any(
                        group in h["apiGroups"]
                        and resource in h["resources"]
                        and verb in h["verbs"]
                        and (not h.get("resourceNames") or name in h["resourceNames"])
                        for h in held
                    ):
                        return False
    return True


def _manager_rules() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    account = one(DOCS, "ServiceAccount")["metadata"]["name"]

    def bound(binding_kind: str, role_kind: str) -> list[dict[str, Any]]:
        names = {
            b["roleRef"]["name"]
            for b in DOCS
            if b["kind"] == binding_kind
            and {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in b["subjects"]
        }
        return [d for d in DOCS if d["kind"] == role_kind and d["metadata"]["name"] in names]

    return _grants(bound("ClusterRoleBinding", "ClusterRole")), _grants(
        bound("RoleBinding", "Role")
    )


def test_manager_holds_what_it_grants_each_agent() -> None:
    """Kubernetes refuses a Role granting more than its creator holds (escalation check)."""
    from hub_manager.agent_rbac import desired_role

    cluster_wide, _ = _manager_rules()
    for rule in desired_role("cluster1")["rules"]:
        assert _covered(rule, cluster_wide), rule


def test_manager_may_create_exactly_the_shipped_addon_objects_and_never_change_them() -> None:
    cluster_wide, own_namespace = _manager_rules()
    from hub_manager.addon import load_addon_objects

    applied = load_addon_objects(ADDON_TEMPLATES)
    assert {o["kind"] for o in applied} == {
        "ClusterManagementAddOn",
        "AddOnTemplate",
        "AddOnDeploymentConfig",
    }
    for obj in applied:
        plural = obj["kind"].lower() + "s"
        group = obj["apiVersion"].split("/")[0]
        held = own_namespace if obj["metadata"].get("namespace") else cluster_wide
        for verb in ("get", "create", "update", "patch"):
            rule = {
                "apiGroups": [group],
                "resources": [plural],
                "verbs": [verb],
                "resourceNames": [obj["metadata"]["name"]] if verb != "create" else [],
            }
            # Once they exist they are the operator's (an image, a catalogue, a strategy).
            assert _covered(rule, held) == (verb in ("get", "create")), (obj["kind"], verb)
    namespace_rule = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}
    assert _covered({**namespace_rule, "resourceNames": [NAMESPACE]}, cluster_wide)


def test_manager_rbac_is_least_privilege() -> None:
    cluster_wide, own_namespace = _manager_rules()
    for rule in cluster_wide + own_namespace:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
    # Never reads Secrets cluster-wide, never escalates or binds arbitrary roles.
    assert not _covered(
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}, cluster_wide
    )
    for verb in ("escalate", "bind", "impersonate"):
        assert all(verb not in rule["verbs"] for rule in cluster_wide + own_namespace)
    # Add-on statuses: only the federated-learning one, and only to hand the right on.
    for rule in cluster_wide:
        if "managedclusteraddons/status" in rule["resources"]:
            assert rule["resourceNames"] == [keys.ADDON_NAME]
    # Leader election in its own namespace, not cluster-wide.
    lease = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["update"]}
    assert _covered(lease, own_namespace)
    assert not _covered(lease, cluster_wide)


def test_manager_gets_the_s3_credentials_the_sample_tells_to_create() -> None:
    """The hub reads s3:// credentials from its environment, fed by the Secret the S3
    sample tells to create; the job names no Secret (clusters get presigned URLs)."""
    text = (DEPLOY / "samples" / "digits-s3.yaml").read_text()
    (sample,) = load_docs(DEPLOY / "samples" / "digits-s3.yaml")
    assert "credentialsSecret" not in sample["spec"]["server"]["storage"]["s3"]
    sources = [e["secretRef"] for e in CONTAINER["envFrom"] if "secretRef" in e]
    assert {"name": "federated-learning-store", "optional": True} in sources
    assert "create secret generic \\\n#     federated-learning-store" in text
