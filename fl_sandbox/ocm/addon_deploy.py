"""The agent's deploy ManifestWork, rendered from the add-on's AddOnTemplate as OCM's
addon-manager renders it.

``agentSpec`` is a ManifestWork spec; every ``{{VARIABLE}}`` is replaced in its JSON text
(``CLUSTER_NAME``, ``INSTALL_NAMESPACE``, ``HUB_KUBECONFIG`` and the AddOnDeploymentConfig's
``customizedVariables``); Deployments and DaemonSets get the hub kubeconfig Secret mounted
at ``/managed/hub-kubeconfig`` and the ``HUB_KUBECONFIG``/``CLUSTER_NAME``/``INSTALL_NAMESPACE``
environment (KubeClient registration); manifests annotated
``addon.open-cluster-management.io/deletion-orphan`` are orphaned when the add-on goes.
The work is ``addon-<addon>-deploy-0`` in the cluster namespace, owned by the add-on.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from fl_kube import resources as r

ADDON_NAME_LABEL: Final = "open-cluster-management.io/addon-name"
ORPHAN_ANNOTATION: Final = "addon.open-cluster-management.io/deletion-orphan"
HUB_KUBECONFIG_DIR: Final = "/managed/hub-kubeconfig"
HUB_KUBECONFIG_PATH: Final = HUB_KUBECONFIG_DIR + "/kubeconfig"
_WORKLOADS: Final = frozenset({("apps/v1", "Deployment"), ("apps/v1", "DaemonSet")})
_LEFTOVER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class RenderError(ValueError):
    """The template cannot be rendered for this cluster (unknown variable, broken JSON)."""


def deploy_work_name(addon: str) -> str:
    return f"addon-{addon}-deploy-0"


def _plural(api_version: str, kind: str) -> tuple[str, str]:
    group = api_version.rpartition("/")[0]
    try:
        return group, r.by_kind(api_version, kind).plural
    except KeyError:
        return group, kind.lower() + "s"


def _decorate(manifest: dict[str, Any], *, secret: str, env: Mapping[str, str]) -> None:
    pod = ((manifest.get("spec") or {}).get("template") or {}).get("spec")
    if not isinstance(pod, dict):
        return
    volumes = pod.setdefault("volumes", [])
    if not any(v.get("name") == "hub-kubeconfig" for v in volumes):
        volumes.append({"name": "hub-kubeconfig", "secret": {"secretName": secret}})
    for container in pod.get("containers") or []:
        mounts = container.setdefault("volumeMounts", [])
        if not any(m.get("name") == "hub-kubeconfig" for m in mounts):
            mounts.append({"name": "hub-kubeconfig", "mountPath": HUB_KUBECONFIG_DIR})
        variables = container.setdefault("env", [])
        present = {v.get("name") for v in variables}
        variables.extend({"name": k, "value": v} for k, v in env.items() if k not in present)


def render_agent_spec(
    template: Mapping[str, Any],
    *,
    cluster: str,
    addon: str,
    namespace: str,
    variables: Mapping[str, str],
) -> dict[str, Any]:
    """The deploy ManifestWork's spec for one cluster; ``RenderError`` says what is wrong."""
    builtin = {
        "CLUSTER_NAME": cluster,
        "INSTALL_NAMESPACE": namespace,
        "HUB_KUBECONFIG": HUB_KUBECONFIG_PATH,
    }
    values = {**variables, **builtin}
    text = json.dumps((template.get("spec") or {}).get("agentSpec") or {})
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    missing = sorted(set(_LEFTOVER.findall(text)))
    if missing:
        raise RenderError(
            f"AddOnTemplate {(template.get('metadata') or {}).get('name')}: no value for "
            f"{', '.join(missing)}: add them to the AddOnDeploymentConfig's customizedVariables"
        )
    try:
        spec: dict[str, Any] = json.loads(text)
    except ValueError as exc:
        raise RenderError(
            f"the rendered agentSpec is not valid JSON ({exc}): a customized variable holds "
            "a character that needs escaping (double quote or backslash)"
        ) from exc
    manifests = (spec.get("workload") or {}).get("manifests") or []
    orphans: list[dict[str, str]] = []
    for manifest in manifests:
        meta = manifest.get("metadata") or {}
        key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
        if key in _WORKLOADS:
            _decorate(manifest, secret=f"{addon}-hub-kubeconfig", env=builtin)
        if ORPHAN_ANNOTATION in (meta.get("annotations") or {}):
            group, plural = _plural(*key)
            rule = {"group": group, "resource": plural, "name": str(meta.get("name"))}
            if meta.get("namespace"):
                rule["namespace"] = str(meta["namespace"])
            orphans.append(rule)
    if orphans:
        spec["deleteOption"] = {
            "propagationPolicy": "SelectivelyOrphan",
            "selectivelyOrphans": {"orphaningRules": orphans},
        }
    return spec


def deploy_work(mca: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The ManifestWork object carrying the rendered agent to the cluster."""
    meta = mca.get("metadata") or {}
    addon = str(meta.get("name"))
    return {
        "apiVersion": r.MANIFEST_WORK.api_version,
        "kind": r.MANIFEST_WORK.kind,
        "metadata": {
            "name": deploy_work_name(addon),
            "namespace": meta.get("namespace"),
            "labels": {ADDON_NAME_LABEL: addon},
            "ownerReferences": [
                {
                    "apiVersion": r.MANAGED_CLUSTER_ADDON.api_version,
                    "kind": "ManagedClusterAddOn",
                    "name": addon,
                    "uid": meta.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(dict(spec)),
    }
