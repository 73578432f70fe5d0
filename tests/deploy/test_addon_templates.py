"""The add-on's hub objects: upstream schemas, OCM rendering, least privilege."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
import yaml

from fl_contract import keys
from fl_contract.models import DatasetCatalogue

from .manifests import (
    ADDON_TEMPLATES,
    BUILTIN_VARIABLES,
    OCM_CRDS,
    containers,
    objects,
    one,
    render_manifests,
    template_variables,
)
from .openapi import load_crds, pruned_fields, validation_errors

DOCS = objects(ADDON_TEMPLATES)
TEMPLATE = one(DOCS, "AddOnTemplate")
CMA = one(DOCS, "ClusterManagementAddOn")
ADC = one(DOCS, "AddOnDeploymentConfig")
READ_VERBS = {"get", "list", "watch"}
MANIFEST_WORK_LIMIT = 500 * 1024


@pytest.fixture(scope="module")
def ocm_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    if not OCM_CRDS.is_dir():
        pytest.skip(f"upstream OCM CRDs not found at {OCM_CRDS} (../shared/ocm-crds)")
    return load_crds(OCM_CRDS)


def _variables(cluster: str = "cluster1") -> dict[str, str]:
    values = {v["name"]: v.get("value", "") for v in ADC["spec"]["customizedVariables"]}
    values |= {
        "CLUSTER_NAME": cluster,
        "INSTALL_NAMESPACE": ADC["spec"]["agentInstallNamespace"],
        "HUB_KUBECONFIG": "/managed/hub-kubeconfig/kubeconfig",
    }
    return values


OCM_OBJECTS = [d for d in DOCS if "open-cluster-management.io/" in d["apiVersion"]]


def test_every_ocm_kind_is_shipped() -> None:
    kinds = sorted(d["kind"] for d in OCM_OBJECTS)
    assert kinds == ["AddOnDeploymentConfig", "AddOnTemplate", "ClusterManagementAddOn"]


@pytest.mark.parametrize("obj", OCM_OBJECTS, ids=lambda o: o["kind"])
def test_ocm_objects_valid_against_upstream_schema(
    obj: dict[str, Any], ocm_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    schema = ocm_schemas.get((obj["apiVersion"], obj["kind"]))
    assert schema is not None, f"no upstream CRD serves {obj['apiVersion']} {obj['kind']}"
    assert validation_errors(obj, schema) == []
    assert pruned_fields(obj, schema) == [], "the API server would drop these fields"


def test_cluster_management_addon_points_at_the_shipped_configs() -> None:
    assert CMA["metadata"]["name"] == keys.ADDON_NAME
    assert TEMPLATE["spec"]["addonName"] == keys.ADDON_NAME
    assert CMA["spec"]["installStrategy"]["type"] == "Manual"
    defaults = {
        (c["group"], c["resource"]): c["defaultConfig"] for c in CMA["spec"]["supportedConfigs"]
    }
    group = "addon.open-cluster-management.io"
    assert defaults[(group, "addontemplates")] == {"name": TEMPLATE["metadata"]["name"]}
    assert defaults[(group, "addondeploymentconfigs")] == {
        "name": ADC["metadata"]["name"],
        "namespace": ADC["metadata"]["namespace"],
    }


def test_template_renders_into_a_valid_manifest_work(
    ocm_schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    rendered = render_manifests(TEMPLATE, _variables())
    work = {
        "apiVersion": "work.open-cluster-management.io/v1",
        "kind": "ManifestWork",
        "metadata": {"name": "addon-federated-learning-deploy-0", "namespace": "cluster1"},
        "spec": {**TEMPLATE["spec"]["agentSpec"], "workload": {"manifests": rendered}},
    }
    schema = ocm_schemas[("work.open-cluster-management.io/v1", "ManifestWork")]
    assert validation_errors(work, schema) == []
    assert len(json.dumps(rendered).encode()) < MANIFEST_WORK_LIMIT
    assert "{{" not in json.dumps(rendered)
    namespace = ADC["spec"]["agentInstallNamespace"]
    for obj in rendered:
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]


def test_every_variable_is_provided_and_every_provided_one_used() -> None:
    provided = {v["name"] for v in ADC["spec"]["customizedVariables"]}
    used = template_variables(TEMPLATE)
    assert used - provided - set(BUILTIN_VARIABLES) == set(), "variables nobody sets"
    assert provided - used == set(), "variables the template ignores"


def test_a_realistic_catalogue_survives_rendering() -> None:
    """Variables are pasted into JSON unescaped: the documented flow style must survive."""
    catalogue = (
        "{datasets: [{name: digits, hostPath: /var/lib/federated-learning/digits, "
        "samples: 1437, task: classification}]}"
    )
    rendered = render_manifests(TEMPLATE, {**_variables(), "DATASET_CATALOGUE": catalogue})
    configmap = one(rendered, "ConfigMap")
    (value,) = configmap["data"].values()
    parsed = DatasetCatalogue.model_validate(yaml.safe_load(value))
    assert [d.name for d in parsed.datasets] == ["digits"]


def test_agent_deployment_is_hardened_and_its_flags_exist() -> None:
    from spoke_agent.__main__ import build_parser

    rendered = render_manifests(TEMPLATE, _variables("cluster7"))
    deployment = one(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] != 0
    (name, container), *_ = list(containers(rendered))
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])

    args = build_parser().parse_args(container["args"])
    assert args.cluster_name == "cluster7"
    # The install namespace comes from the Pod itself, whatever the addon-manager renamed
    # the template's literal namespace to.
    assert args.namespace is None
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert args.hub_kubeconfig == "/managed/hub-kubeconfig/kubeconfig"

    # Probes run in the container against METRICS_PORT; the declared port is its default.
    port = int(args.metrics_bind_address.rsplit(":", 1)[1])
    assert port == 8081
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert f"http://127.0.0.1:{port}{path}" in container[probe]["exec"]["command"][-1]

    # The catalogue file the agent reads is the ConfigMap the template ships.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (volume_name,) = [n for n, v in volumes.items() if "configMap" in v]
    assert args.datasets.startswith(mounts[volume_name] + "/")
    configmap = one(rendered, "ConfigMap")
    assert volumes[volume_name]["configMap"]["name"] == configmap["metadata"]["name"]
    assert args.datasets.rsplit("/", 1)[1] in configmap["data"]
    # Every writable path is a volume: the root filesystem stays read-only.
    assert "/tmp" in mounts.values()
    # The addon-manager injects the hub kubeconfig volume itself; a second one would clash.
    assert "/managed/hub-kubeconfig" not in mounts.values(), shlex.join(container["args"])
    assert deployment["metadata"]["name"] == name


def _rules(obj: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    table: dict[tuple[str, str], set[str]] = {}
    for rule in obj["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table.setdefault((group, resource), set()).update(rule["verbs"])
    return table


def test_agent_spoke_rbac_covers_what_the_agent_does_and_no_more() -> None:
    rendered = render_manifests(TEMPLATE, _variables())
    cluster_rules = _rules(one(rendered, "ClusterRole"))
    assert cluster_rules == {
        ("cluster.open-cluster-management.io", "clusterclaims"): {
            "get", "list", "watch", "create", "update", "patch", "delete",
        }
    }  # fmt: skip
    rules = _rules(one(rendered, "Role"))
    assert rules[("batch", "jobs")] == {"get", "list", "watch", "create", "delete"}
    assert rules[("", "pods")] == READ_VERBS
    assert rules[("", "configmaps")] == READ_VERBS
    # No store credentials on clusters (presigned URLs); only a secure round's own client
    # secrets, created and read back by name, never listed or watched.
    assert rules[("", "secrets")] == {"get", "create", "delete"}
    assert {"get", "create", "update"} <= rules[("coordination.k8s.io", "leases")]
    assert set(rules) == {
        ("batch", "jobs"),
        ("", "pods"),
        ("", "configmaps"),
        ("", "secrets"),
        ("coordination.k8s.io", "leases"),
    }
    assert all("*" not in verbs for verbs in rules.values())
    account = one(rendered, "ServiceAccount")["metadata"]["name"]
    deployment = one(rendered, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account
    for kind, role_kind in (("RoleBinding", "Role"), ("ClusterRoleBinding", "ClusterRole")):
        binding = one(rendered, kind)
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": one(rendered, role_kind)["metadata"]["name"],
        }
        assert [s["name"] for s in binding["subjects"]] == [account]


def test_hub_permissions_are_read_only_and_held_by_the_addon_manager() -> None:
    (registration,) = TEMPLATE["spec"]["registration"]
    assert registration["type"] == "KubeClient"
    (permission,) = registration["kubeClient"]["hubPermissions"]
    assert permission["type"] == "CurrentCluster"
    role_name = permission["currentCluster"]["clusterRoleName"]
    role = one(DOCS, "ClusterRole", role_name)
    for rule in role["rules"]:
        # Bound for the add-on-wide group too: a write here would let one cluster's agent
        # forge another cluster's reports.
        assert set(rule["verbs"]) <= READ_VERBS, rule
        assert all("/" not in r for r in rule["resources"]), "no subresources (status)"
        assert rule.get("resourceNames") == [keys.ADDON_NAME]
    bindings = [
        d for d in DOCS if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == role_name
    ]
    subjects = [s for b in bindings for s in b["subjects"]]
    assert {
        "kind": "ServiceAccount",
        "name": "addon-manager-controller-sa",
        "namespace": "open-cluster-management-hub",
    } in subjects
