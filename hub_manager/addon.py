"""Add-on registration: server-side apply of the OCM add-on objects shipped in addon_templates/.

With these in place (ClusterManagementAddOn, AddOnTemplate, AddOnDeploymentConfig),
`clusteradm addon enable --names federated-learning --clusters c1` is all an admin does
per cluster. RBAC objects in that folder are applied by the deployment (they need more
privilege than the manager should hold), so only the OCM add-on kinds are applied here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from fl_contract import keys
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.errors import Conflict

log = logging.getLogger(__name__)

ADDON_KINDS: dict[tuple[str, str], r.Resource] = {
    (res.api_version, res.kind): res
    for res in (r.CLUSTER_MANAGEMENT_ADDON, r.ADDON_TEMPLATE, r.ADDON_DEPLOYMENT_CONFIG)
}
# Applied in this order: configs exist before the ClusterManagementAddOn points at them.
_ORDER = {"AddOnDeploymentConfig": 0, "AddOnTemplate": 1, "ClusterManagementAddOn": 2}


def load_addon_objects(folder: Path) -> list[dict[str, Any]]:
    """Every OCM add-on object in the folder's YAML files (other kinds are skipped)."""
    if not folder.is_dir():
        return []
    objects: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.y*ml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        for doc in documents:
            if not isinstance(doc, dict):
                continue
            if (str(doc.get("apiVersion")), str(doc.get("kind"))) in ADDON_KINDS:
                objects.append(doc)
    return sorted(objects, key=lambda o: _ORDER.get(str(o.get("kind")), 9))


async def register_addon(api: KubeApi, folder: Path | None) -> list[str]:
    """Apply the add-on objects; returns `kind/name` of each object applied."""
    if folder is None:
        return []
    objects = load_addon_objects(folder)
    if not objects:
        log.warning("no add-on objects found in %s; skipping add-on registration", folder)
        return []
    applied: list[str] = []
    for obj in objects:
        res = ADDON_KINDS[(str(obj["apiVersion"]), str(obj["kind"]))]
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace")
        if res.namespaced and namespace:
            await ensure_namespace(api, str(namespace))
        await api.apply(res, obj, field_manager=keys.HUB_FIELD_MANAGER)
        applied.append(f"{res.kind}/{metadata.get('name')}")
    log.info("add-on registered: %s", ", ".join(applied))
    return applied


async def ensure_namespace(api: KubeApi, name: str) -> None:
    if await api.get_or_none(r.NAMESPACE, name) is not None:
        return
    try:
        await api.create(r.NAMESPACE, {"metadata": {"name": name}})
    except Conflict as exc:
        if not exc.already_exists:
            raise
