"""The agent's deploy ManifestWork, rendered from the add-on's AddOnTemplate as OCM's
addon-manager renders it (pkg/addon/templateagent in open-cluster-management-io/ocm).

``agentSpec`` is a ManifestWork spec. Each manifest's JSON text has its ``{{VARIABLE}}``s
replaced (``CLUSTER_NAME``, ``HUB_KUBECONFIG``, ``INSTALL_NAMESPACE`` only when the
AddOnDeploymentConfig sets ``agentInstallNamespace``, and the config's
``customizedVariables``; an unknown variable becomes "", as upstream's fasttemplate does).
Then, as upstream's decorators do: Deployments and DaemonSets get the hub kubeconfig Secret
mounted at ``/managed/hub-kubeconfig`` and the built-in values as environment (KubeClient
registration); when ``agentInstallNamespace`` is set, every namespaced manifest's
``metadata.namespace``, a Namespace's name and (Cluster)RoleBinding subjects' namespaces
become it. Jobs and Pods annotated (or labelled) ``addon.open-cluster-management.io/addon-pre-delete``
go to the pre-delete hook work instead, run when the add-on is deleted. Manifests annotated
``addon.open-cluster-management.io/deletion-orphan`` are orphaned when the add-on goes.
The work is ``addon-<addon>-deploy-0`` in the cluster namespace, owned by the add-on.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fl_kube import resources as r
from fl_sandbox.ocm.addonconfig import DEFAULT_INSTALL_NAMESPACE

log = logging.getLogger(__name__)

ADDON_NAME_LABEL: Final = "open-cluster-management.io/addon-name"
ORPHAN_ANNOTATION: Final = "addon.open-cluster-management.io/deletion-orphan"
PRE_DELETE_KEY: Final = "addon.open-cluster-management.io/addon-pre-delete"
PRE_DELETE_FINALIZER: Final = "addon.open-cluster-management.io/addon-pre-delete"
HUB_KUBECONFIG_DIR: Final = "/managed/hub-kubeconfig"
HUB_KUBECONFIG_PATH: Final = HUB_KUBECONFIG_DIR + "/kubeconfig"
_WORKLOADS: Final = frozenset({("apps/v1", "Deployment"), ("apps/v1", "DaemonSet")})
_BINDINGS: Final = frozenset({"RoleBinding", "ClusterRoleBinding"})
_HOOK_KINDS: Final = frozenset({("batch/v1", "Job"), ("v1", "Pod")})
_VARIABLE = re.compile(r"\{\{([^{}]*)\}\}")


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


def _set_namespace(manifest: dict[str, Any], namespace: str) -> None:
    """Upstream's namespace decorator (only applied when agentInstallNamespace is set)."""
    meta = manifest.setdefault("metadata", {})
    if meta.get("namespace"):
        meta["namespace"] = namespace
    if manifest.get("kind") == "Namespace":
        meta["name"] = namespace
    if manifest.get("kind") in _BINDINGS:
        for subject in manifest.get("subjects") or []:
            if isinstance(subject, dict):
                subject["namespace"] = namespace


def is_pre_delete_hook(manifest: Mapping[str, Any]) -> bool:
    """A Job or Pod labelled or annotated as the add-on's pre-delete hook."""
    key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
    meta = manifest.get("metadata") or {}
    marked = PRE_DELETE_KEY in (meta.get("labels") or {}) or PRE_DELETE_KEY in (
        meta.get("annotations") or {}
    )
    return key in _HOOK_KINDS and marked


def registration_namespace(template: Mapping[str, Any], configured: str | None) -> str:
    """Where the agent is installed (``status.namespace``), as upstream decides it: the
    AddOnDeploymentConfig's agentInstallNamespace, else the first Deployment's (then
    DaemonSet's) namespace in the template, else OCM's default add-on namespace."""
    if configured:
        return configured
    manifests = (((template.get("spec") or {}).get("agentSpec") or {}).get("workload") or {}).get(
        "manifests"
    ) or []
    for kind in ("Deployment", "DaemonSet"):
        for manifest in manifests:
            namespace = (manifest.get("metadata") or {}).get("namespace")
            if manifest.get("kind") == kind and namespace and "{{" not in str(namespace):
                return str(namespace)
    return DEFAULT_INSTALL_NAMESPACE


@dataclass(frozen=True)
class AgentWorks:
    """The rendered deploy work spec, and the pre-delete hook work spec if there is a hook."""

    deploy: dict[str, Any]
    hook: dict[str, Any] | None


def render_agent_spec(
    template: Mapping[str, Any],
    *,
    cluster: str,
    addon: str,
    configured_namespace: str | None,
    variables: Mapping[str, str],
) -> AgentWorks:
    """The deploy (and hook) ManifestWork specs for one cluster; ``RenderError`` says what
    is wrong. ``configured_namespace`` is the AddOnDeploymentConfig's agentInstallNamespace."""
    builtin = {"CLUSTER_NAME": cluster}
    if configured_namespace:
        builtin["INSTALL_NAMESPACE"] = configured_namespace
    preset = {"HUB_KUBECONFIG": HUB_KUBECONFIG_PATH, **builtin}
    values = {**preset, **variables, **builtin}
    agent_spec = copy.deepcopy(dict((template.get("spec") or {}).get("agentSpec") or {}))
    workload = agent_spec.pop("workload", None) or {}
    unknown: set[str] = set()

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            unknown.add(name)
        return values.get(name, "")

    deploy: list[dict[str, Any]] = []
    hooks: list[dict[str, Any]] = []
    for raw in workload.get("manifests") or []:
        text = _VARIABLE.sub(substitute, json.dumps(raw))
        try:
            manifest: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise RenderError(
                f"the rendered agentSpec is not valid JSON ({exc}): a customized variable holds "
                "a character that needs escaping (double quote or backslash)"
            ) from exc
        key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
        if key in _WORKLOADS:
            _decorate(manifest, secret=f"{addon}-hub-kubeconfig", env=preset)
        if configured_namespace:
            _set_namespace(manifest, configured_namespace)
        (hooks if is_pre_delete_hook(manifest) else deploy).append(manifest)
    if unknown:
        log.warning(
            "AddOnTemplate %s for %s: no value for %s; rendered as empty, as OCM does",
            (template.get("metadata") or {}).get("name"),
            cluster,
            ", ".join(sorted(unknown)),
        )
    spec: dict[str, Any] = {**agent_spec, "workload": {"manifests": deploy}}
    orphans: list[dict[str, str]] = []
    for manifest in deploy:
        meta = manifest.get("metadata") or {}
        if ORPHAN_ANNOTATION in (meta.get("annotations") or {}):
            group, plural = _plural(str(manifest.get("apiVersion")), str(manifest.get("kind")))
            rule = {"group": group, "resource": plural, "name": str(meta.get("name"))}
            if meta.get("namespace"):
                rule["namespace"] = str(meta["namespace"])
            orphans.append(rule)
    if orphans:
        spec["deleteOption"] = {
            "propagationPolicy": "SelectivelyOrphan",
            "selectivelyOrphans": {"orphaningRules": orphans},
        }
    return AgentWorks(deploy=spec, hook=_hook_spec(hooks) if hooks else None)


def _hook_spec(hooks: list[dict[str, Any]]) -> dict[str, Any]:
    """The hook work: its Jobs and Pods, with the well-known status fed back."""
    configs = []
    for manifest in hooks:
        meta = manifest.get("metadata") or {}
        group, plural = _plural(str(manifest.get("apiVersion")), str(manifest.get("kind")))
        configs.append(
            {
                "resourceIdentifier": {
                    "group": group,
                    "resource": plural,
                    "name": str(meta.get("name")),
                    "namespace": str(meta.get("namespace") or ""),
                },
                "feedbackRules": [{"type": "WellKnownStatus"}],
            }
        )
    return {"workload": {"manifests": hooks}, "manifestConfigs": configs}


def hook_work_name(addon: str) -> str:
    return f"addon-{addon}-pre-delete"


def hook_completed(work: Mapping[str, Any] | None) -> bool:
    """Upstream's test: the work is Available and every hook Job fed back JobComplete=True
    (every hook Pod PodPhase=Succeeded)."""
    if work is None:
        return False
    status = work.get("status") or {}
    if not any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in status.get("conditions") or []
    ):
        return False
    configs = (work.get("spec") or {}).get("manifestConfigs") or []
    if not configs:
        return False
    manifests = (status.get("resourceStatus") or {}).get("manifests") or []
    for config in configs:
        ident = config.get("resourceIdentifier") or {}
        wanted, expected = (
            ("JobComplete", "True")
            if ident.get("resource") == "jobs"
            else ("PodPhase", "Succeeded")
        )
        found = None
        for entry in manifests:
            meta = entry.get("resourceMeta") or {}
            if (meta.get("resource"), meta.get("name"), meta.get("namespace") or "") == (
                ident.get("resource"),
                ident.get("name"),
                ident.get("namespace") or "",
            ):
                for value in (entry.get("statusFeedback") or {}).get("values") or []:
                    if value.get("name") == wanted:
                        found = (value.get("fieldValue") or {}).get("string")
        if found != expected:
            return False
    return True


def deploy_work(
    mca: Mapping[str, Any], spec: Mapping[str, Any], *, name: str | None = None
) -> dict[str, Any]:
    """The ManifestWork object carrying the rendered agent (or its hook) to the cluster."""
    meta = mca.get("metadata") or {}
    addon = str(meta.get("name"))
    return {
        "apiVersion": r.MANIFEST_WORK.api_version,
        "kind": r.MANIFEST_WORK.kind,
        "metadata": {
            "name": name or deploy_work_name(addon),
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
