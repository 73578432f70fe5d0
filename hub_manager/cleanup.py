"""Removing what a job placed in other namespaces: its ManifestWorks, Placement and
ManagedClusterSetBindings (owner references cannot reach across namespaces), and its
objects in the model store (unless its retention policy says Retain)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from fl_contract import keys, naming
from fl_core.store import StoreError
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.errors import NotFound
from fl_kube.informer import Informer
from fl_kube.timestamps import parse_time
from hub_manager import retention
from hub_manager import status as st
from hub_manager.placement import cluster_sets
from hub_manager.settings import HubSettings

log = logging.getLogger(__name__)

REDELETE_AFTER = 10.0  # seconds before a delete the cache has not reflected is sent again
# A deleted job keeps its finalizer until its ManifestWorks are gone (the work agents have
# cleaned the spokes), at most this long: an unreachable cluster must not pin the job.
CLEANUP_WAIT = 120.0
WORK_GONE_RECHECK = 1.0
STORE_RETRY = 10.0  # seconds between attempts to delete a deleted job's objects


class JobCleaner:
    def __init__(
        self,
        api: KubeApi,
        *,
        jobs: Informer,
        works: Informer,
        settings: HubSettings | None = None,
    ) -> None:
        self._api = api
        self._jobs = jobs
        self._works = works
        self._settings = settings  # None: leave the model store alone
        self._deleted: dict[tuple[str, str], float] = {}  # (namespace, name) -> when
        self._finalizing: set[str] = set()
        self._store_cleaned: set[str] = set()

    def works_of(self, uid: str) -> list[dict[str, Any]]:
        return [
            w
            for w in self._works.list()
            if ((w.get("metadata") or {}).get("labels") or {}).get(keys.LABEL_JOB_UID) == uid
        ]

    async def remove_works(self, uid: str, *, keep: set[str] | None = None) -> int:
        """Delete the job's ManifestWorks except in the `keep` clusters; returns how many."""
        removed = 0
        for work in self.works_of(uid):
            metadata = work["metadata"]
            if metadata.get("deletionTimestamp") or metadata["namespace"] in (keep or set()):
                continue
            slot = (str(metadata["namespace"]), str(metadata["name"]))
            now = time.monotonic()
            if slot in self._deleted and now - self._deleted[slot] < REDELETE_AFTER:
                continue  # deleted a moment ago; the cache has not seen it go yet
            self._deleted[slot] = now
            if await self._api.delete(r.MANIFEST_WORK, slot[1], namespace=slot[0]):
                removed += 1
        return removed

    async def finalize(
        self, obj: dict[str, Any], *, spec_placement: dict[str, Any], now: datetime
    ) -> float | None:
        """Remove the job's objects, then its finalizer. Returns a delay while ManifestWorks
        are still going away (their agents clean the spokes first), None when released."""
        metadata = obj["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if keys.FINALIZER not in finalizers:
            return None
        uid, namespace, name = (
            str(metadata["uid"]),
            str(metadata["namespace"]),
            str(metadata["name"]),
        )
        await self.remove_works(uid)
        if uid not in self._finalizing:
            self._finalizing.add(uid)
            # Works the cache may not have seen yet (created just before the deletion).
            work_name = naming.manifest_work_name(uid)
            for cluster in st.round_participants(obj.get("status") or {}):
                if cluster and self._works.get(work_name, cluster) is None:
                    await self._api.delete(r.MANIFEST_WORK, work_name, namespace=cluster)
        deleted_at = parse_time(metadata.get("deletionTimestamp"))
        waited = (now - deleted_at).total_seconds() if deleted_at else CLEANUP_WAIT
        if self.works_of(uid) and waited < CLEANUP_WAIT:
            return WORK_GONE_RECHECK
        if self._settings is not None and uid not in self._store_cleaned:
            # After the works: no training Job writes into the job's folder any more.
            try:
                await retention.delete_job_objects(
                    obj,
                    default_path=self._settings.default_store_path,
                    file_store_root=self._settings.file_store_root,
                )
            except StoreError as exc:
                if waited < CLEANUP_WAIT:
                    log.warning("%s/%s: %s; trying again", namespace, name, exc)
                    return STORE_RETRY
                log.warning("%s/%s: %s; left in the store", namespace, name, exc)
            self._store_cleaned.add(uid)
        await self._api.delete(r.PLACEMENT, naming.placement_name(name), namespace=namespace)
        for cluster_set in cluster_sets(spec_placement):
            if not self._set_needed_elsewhere(namespace, cluster_set, uid):
                await self._delete_binding(namespace, cluster_set)
        patch = {
            "metadata": {
                "finalizers": [f for f in finalizers if f != keys.FINALIZER],
                "resourceVersion": metadata["resourceVersion"],
            }
        }
        try:
            await self._api.patch(r.FEDERATED_LEARNING, name, patch, namespace=namespace)
        except NotFound:
            pass  # released by an earlier pass (this one ran on a stale cache): done
        else:
            log.info("%s/%s: cleaned up and released", namespace, name)
        self._finalizing.discard(uid)
        self._store_cleaned.discard(uid)
        return None

    def _set_needed_elsewhere(self, namespace: str, cluster_set: str, uid: str) -> bool:
        for job in self._jobs.list():
            meta = job.get("metadata") or {}
            if meta.get("namespace") != namespace or meta.get("uid") == uid:
                continue
            if meta.get("deletionTimestamp"):
                continue
            placement = ((job.get("spec") or {}).get("client") or {}).get("placement") or {}
            if cluster_set in cluster_sets(placement):
                return True
        return False

    async def _delete_binding(self, namespace: str, cluster_set: str) -> None:
        """Only a binding this manager created (an admin's own binding stays)."""
        binding = await self._api.get_or_none(
            r.MANAGED_CLUSTER_SET_BINDING, cluster_set, namespace=namespace
        )
        labels = ((binding or {}).get("metadata") or {}).get("labels") or {}
        if binding is not None and labels.get(keys.LABEL_MANAGED_BY) == keys.HUB_FIELD_MANAGER:
            await self._api.delete(r.MANAGED_CLUSTER_SET_BINDING, cluster_set, namespace=namespace)
