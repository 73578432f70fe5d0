"""Add-on registration: the OCM add-on objects shipped in addon_templates/, created if absent.

With these in place (ClusterManagementAddOn, AddOnTemplate, AddOnDeploymentConfig),
`clusteradm addon enable --names federated-learning --clusters c1` is all an admin does
per cluster. RBAC objects in that folder are applied by the deployment (they need more
privilege than the manager should hold), so only the OCM add-on kinds are handled here.

The manager only ever creates what is missing: once an object exists it belongs to the
operator (an AGENT_IMAGE or dataset catalogue set in the AddOnDeploymentConfig, an install
strategy on the ClusterManagementAddOn), and a restart or a leader change must not roll it
back. Upgrades come from `kubectl apply -k addon_templates/` of the new release, whose
template has a new, versioned name.

Registration never stops the manager from driving jobs: `AddonRegistration.run` retries
with backoff until every object exists, and its state is part of the manager's readiness.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fl_kube import resources as r
from fl_kube.backoff import Backoff, BackoffPolicy
from fl_kube.client import KubeApi
from fl_kube.errors import ApiError, Conflict
from fl_kube.events import EventRecorder

log = logging.getLogger(__name__)

ADDON_KINDS: dict[tuple[str, str], r.Resource] = {
    (res.api_version, res.kind): res
    for res in (r.CLUSTER_MANAGEMENT_ADDON, r.ADDON_TEMPLATE, r.ADDON_DEPLOYMENT_CONFIG)
}
# Created in this order: configs exist before the ClusterManagementAddOn points at them.
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


class RegistrationError(Exception):
    """An add-on object could be neither found nor created: which one, and the API's word."""

    def __init__(self, obj: dict[str, Any], cause: ApiError) -> None:
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace")
        name = f"{namespace}/{metadata.get('name')}" if namespace else str(metadata.get("name"))
        super().__init__(f"{obj.get('kind')} {name}: {cause}")
        self.obj = obj


async def register_addon(api: KubeApi, folder: Path | None) -> list[str]:
    """Create the add-on objects that do not exist yet; returns `kind/name` of each created.

    Raises RegistrationError for the first object that can be neither found nor created.
    """
    if folder is None:
        return []
    objects = load_addon_objects(folder)
    if not objects:
        log.warning("no add-on objects found in %s; skipping add-on registration", folder)
        return []
    created: list[str] = []
    for obj in objects:
        res = ADDON_KINDS[(str(obj["apiVersion"]), str(obj["kind"]))]
        metadata = obj.get("metadata") or {}
        name = str(metadata.get("name"))
        namespace = str(metadata["namespace"]) if res.namespaced else None
        try:
            if await api.get_or_none(res, name, namespace=namespace) is not None:
                continue
            if namespace:
                await ensure_namespace(api, namespace)
            await api.create(res, obj, namespace=namespace)
        except Conflict as exc:
            if not exc.already_exists:
                raise RegistrationError(obj, exc) from exc
            continue  # created meanwhile (kubectl apply, another replica): theirs
        except ApiError as exc:
            raise RegistrationError(obj, exc) from exc
        created.append(f"{res.kind}/{name}")
    if created:
        log.info("add-on registered: created %s", ", ".join(created))
    else:
        log.info("add-on objects already exist; left as they are")
    return created


@dataclass
class AddonRegistration:
    """Registers the add-on in the background, retrying with backoff until it succeeds.

    Each failure is a WARNING line and a Warning Event (reason AddonRegistrationFailed, in
    `event_namespace`, about the object that was refused); the manager is not ready
    meanwhile, and keeps driving jobs."""

    api: KubeApi
    folder: Path | None
    events: EventRecorder | None = None
    event_namespace: str = "default"
    policy: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base=1.0, cap=300.0))
    done: bool = False

    async def run(self) -> None:
        backoff = Backoff(self.policy)
        while True:
            try:
                await register_addon(self.api, self.folder)
            except (RegistrationError, OSError, ValueError) as exc:
                delay = backoff.next()
                log.warning(
                    "add-on registration failed (retrying in %.0fs; jobs are still driven): %s",
                    delay,
                    exc,
                )
                if self.events is not None and isinstance(exc, RegistrationError):
                    await self.events.record(
                        exc.obj,
                        type_="Warning",
                        reason="AddonRegistrationFailed",
                        message=f"{exc}; retrying in {delay:.0f}s",
                        namespace=self.event_namespace,
                    )
                await asyncio.sleep(delay)
                continue
            self.done = True
            return


async def ensure_namespace(api: KubeApi, name: str) -> None:
    if await api.get_or_none(r.NAMESPACE, name) is not None:
        return
    try:
        await api.create(r.NAMESPACE, {"metadata": {"name": name}})
    except Conflict as exc:
        if not exc.already_exists:
            raise
