"""Emulated work agent: applies the ManifestWorks of one cluster's hub namespace to that
cluster's API server, as OCM's klusterlet work agent does.

- apply each manifest (Update by default: create, or update when the object no longer
  holds what the manifest says; ``ServerSideApply``, ``CreateOnly`` and ``ReadOnly`` when a
  ``manifestConfigs[].updateStrategy`` says so);
- record what was applied (by uid) in an AppliedManifestWork on the spoke, so removing a
  manifest, or the work, deletes exactly what this work created and nothing else;
- report ``Applied``/``Available``/``Degraded`` and ``resourceStatus.manifests`` with
  status feedback, re-reading feedback periodically (upstream's ``Poll`` scrape type);
- hold the finalizer ``cluster.open-cluster-management.io/manifest-work-cleanup`` until
  the applied objects are gone (unless ``deleteOption`` orphans them).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fl_kube import ApiError, Conflict, KubeApi, NotFound, Result, is_temporary
from fl_kube import resources as r
from fl_kube.resources import Resource
from fl_sandbox.ocm import conditions as cond
from fl_sandbox.ocm.feedback import values_for_rules
from fl_sandbox.ocm.runtime import Runtime

log = logging.getLogger(__name__)

FINALIZER: Final = "cluster.open-cluster-management.io/manifest-work-cleanup"
DEFAULT_FIELD_MANAGER: Final = "work-agent"

Key = tuple[str, str]  # (cluster, work name)


@dataclass(frozen=True)
class Applied:
    """One object a work applied, identified down to its uid."""

    group: str
    version: str
    resource: str
    namespace: str
    name: str
    uid: str

    def entry(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "version": self.version,
            "resource": self.resource,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Applied:
        return cls(
            group=str(entry.get("group") or ""),
            version=str(entry.get("version") or ""),
            resource=str(entry.get("resource") or ""),
            namespace=str(entry.get("namespace") or ""),
            name=str(entry.get("name") or ""),
            uid=str(entry.get("uid") or ""),
        )

    def identity(self) -> tuple[str, str, str, str]:
        return (self.group, self.resource, self.namespace, self.name)

    def same_object(self, other: Applied) -> bool:
        return (self.group, self.resource, self.namespace, self.name) == (
            other.group,
            other.resource,
            other.namespace,
            other.name,
        )


def contains(desired: Any, actual: Any) -> bool:
    """Whether ``actual`` holds everything ``desired`` says (server defaults may add more)."""
    if actual is None and isinstance(desired, Mapping | list) and not desired:
        return True  # an empty map or list is the same as none
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and contains(v, actual[k]) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(contains(d, a) for d, a in zip(desired, actual, strict=True))
        )
    return bool(desired == actual)


def _applied_resource(applied: Applied) -> Resource:
    """The resource of a recorded object (enough to address it for a delete)."""
    return Resource(
        applied.group, applied.version, applied.resource, "", namespaced=bool(applied.namespace)
    )


def _matches(identifier: Mapping[str, Any], res: Resource, namespace: str, name: str) -> bool:
    return (
        (identifier.get("group") or "") == res.group
        and identifier.get("resource") == res.plural
        and identifier.get("name") == name
        and (identifier.get("namespace") or "") == namespace
    )


def _manifest_config(
    configs: Sequence[Mapping[str, Any]], res: Resource, namespace: str, name: str
) -> Mapping[str, Any]:
    for config in configs:
        if _matches(config.get("resourceIdentifier") or {}, res, namespace, name):
            return config
    return {}


def _orphaned(work: Mapping[str, Any], applied: Applied) -> bool:
    option = (work.get("spec") or {}).get("deleteOption") or {}
    policy = option.get("propagationPolicy") or "Foreground"
    if policy == "Orphan":
        return True
    if policy != "SelectivelyOrphan":
        return False
    for rule in (option.get("selectivelyOrphans") or {}).get("orphaningRules") or []:
        if (
            (rule.get("group") or "") == applied.group
            and rule.get("resource") == applied.resource
            and (rule.get("namespace") or "") == applied.namespace
            and rule.get("name") == applied.name
        ):
            return True
    return False


class WorkAgent:
    """The work agent of one managed cluster."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        cluster: str,
        hub: KubeApi,
        spoke: KubeApi,
        hub_url: str,
        feedback_interval: float = 5.0,
        retry_interval: float = 1.0,
    ) -> None:
        self.cluster = cluster
        self._hub = hub
        self._spoke = spoke
        self._hub_hash = hashlib.sha256(hub_url.encode()).hexdigest()
        self._feedback_interval = feedback_interval
        self._retry_interval = retry_interval
        self._paused = False
        self._discovered: dict[tuple[str, str], Resource] = {}
        # Every cluster's work agent shares one hub watch of all ManifestWorks (a real one
        # watches its own namespace: a thousand watches on one client would starve it).
        self.works = runtime.informer(hub, r.MANIFEST_WORK)
        self.controller = runtime.controller(f"work-agent-{cluster}", self._reconcile, workers=2)
        runtime.on_namespace(
            self.works,
            cluster,
            lambda _t, obj: self.controller.enqueue(
                (cluster, str((obj.get("metadata") or {}).get("name")))
            ),
        )

    @property
    def paused(self) -> bool:
        """While paused (the cluster is unreachable) works are neither applied nor reported."""
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = value
        if not value:
            for work in self.works.list():
                if (work.get("metadata") or {}).get("namespace") != self.cluster:
                    continue
                self.controller.enqueue(
                    (self.cluster, str((work.get("metadata") or {}).get("name")))
                )

    async def _resource_for(self, manifest: Mapping[str, Any]) -> Resource:
        """The spoke resource of a manifest: known types directly, others by discovery."""
        api_version = str(manifest.get("apiVersion") or "")
        kind = str(manifest.get("kind") or "")
        if not api_version or not kind:
            raise ValueError("a manifest needs apiVersion and kind")
        with contextlib.suppress(KeyError):
            return r.by_kind(api_version, kind)
        key = (api_version, kind)
        if key not in self._discovered:
            try:
                self._discovered[key] = await self._spoke.discover(api_version, kind)
            except NotFound:
                raise ValueError(
                    f"cluster {self.cluster} does not serve apiVersion {api_version!r}, "
                    f"kind {kind!r}: install its CRD there first"
                ) from None
        return self._discovered[key]

    def applied_work_name(self, work_name: str) -> str:
        return f"{self._hub_hash}-{work_name}"

    async def _reconcile(self, key: Key) -> Result | None:
        _cluster, name = key
        work = self.works.get(name, self.cluster)
        if work is None or self._paused:
            return None
        meta = work.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return await self._finalize(work)
        if FINALIZER not in (meta.get("finalizers") or []):
            work = await self._hub.patch(
                r.MANIFEST_WORK,
                name,
                {
                    "metadata": {
                        "finalizers": [*(meta.get("finalizers") or []), FINALIZER],
                        "resourceVersion": meta.get("resourceVersion"),
                    }
                },
                namespace=self.cluster,
            )
        return await self._apply_work(work)

    # -- apply -------------------------------------------------------------------------

    async def _applied_record(self, work_name: str) -> dict[str, Any]:
        amw_name = self.applied_work_name(work_name)
        existing = await self._spoke.get_or_none(r.APPLIED_MANIFEST_WORK, amw_name)
        if existing is not None:
            return existing
        body = {
            "metadata": {"name": amw_name},
            "spec": {
                "hubHash": self._hub_hash,
                "manifestWorkName": work_name,
                "agentID": f"sandbox-work-agent-{self.cluster}",
            },
        }
        try:
            return await self._spoke.create(r.APPLIED_MANIFEST_WORK, body)
        except Conflict:
            return await self._spoke.get(r.APPLIED_MANIFEST_WORK, amw_name)

    async def _apply_one(
        self, manifest: Mapping[str, Any], config: Mapping[str, Any], res: Resource
    ) -> dict[str, Any] | None:
        meta = manifest.get("metadata") or {}
        name = str(meta.get("name") or "")
        if not name:
            raise ValueError(
                "metadata.name is required in a ManifestWork manifest (generateName is not "
                "supported: the work agent must find the object again)"
            )
        namespace = str(meta.get("namespace") or "default") if res.namespaced else None
        body = copy.deepcopy(dict(manifest))
        body["metadata"] = dict(body.get("metadata") or {})
        if namespace:
            body["metadata"]["namespace"] = namespace
        strategy = (config.get("updateStrategy") or {}).get("type") or "Update"
        if strategy == "ReadOnly":
            return await self._spoke.get_or_none(res, name, namespace=namespace)
        if strategy == "ServerSideApply":
            ssa = (config.get("updateStrategy") or {}).get("serverSideApply") or {}
            try:
                return await self._spoke.apply(
                    res,
                    body,
                    field_manager=str(ssa.get("fieldManager") or DEFAULT_FIELD_MANAGER),
                    namespace=namespace,
                    force=bool(ssa.get("force", False)),
                )
            except Conflict as exc:
                # Another manager owns a field: a property of the manifest, reported as
                # Applied False (set serverSideApply.force to take the fields over).
                raise ValueError(f"server-side apply conflict: {exc.message}") from exc
        existing = await self._spoke.get_or_none(res, name, namespace=namespace)
        if existing is None:
            return await self._spoke.create(res, body, namespace=namespace)
        if strategy == "CreateOnly" or _holds(body, existing):
            return existing
        merged_meta = dict(existing.get("metadata") or {})
        for field in ("labels", "annotations"):
            combined = {**(merged_meta.get(field) or {}), **(meta.get(field) or {})}
            if combined:
                merged_meta[field] = combined
        body["metadata"] = merged_meta
        return await self._spoke.replace(res, body, namespace=namespace)

    async def _apply_work(self, work: dict[str, Any]) -> Result | None:
        meta = work.get("metadata") or {}
        name = str(meta.get("name"))
        spec = work.get("spec") or {}
        manifests = (spec.get("workload") or {}).get("manifests") or []
        configs = spec.get("manifestConfigs") or []
        record = await self._applied_record(name)
        previous = [
            Applied.from_entry(e)
            for e in (record.get("status") or {}).get("appliedResources") or []
        ]
        applied: list[Applied] = []
        wanted: set[tuple[str, str, str, str]] = set()  # objects the work still holds
        statuses: list[dict[str, Any]] = []
        has_feedback = False
        failed = False
        for ordinal, manifest in enumerate(manifests):
            resource_meta: dict[str, Any] = {
                "ordinal": ordinal,
                "group": "",
                "version": "",
                "kind": str(manifest.get("kind") or ""),
                "resource": "",
                "name": str((manifest.get("metadata") or {}).get("name") or ""),
                "namespace": "",
            }
            manifest_conditions: list[dict[str, Any]]
            feedback: dict[str, Any] = {}
            try:
                res = await self._resource_for(manifest)
                namespace = (
                    str((manifest.get("metadata") or {}).get("namespace") or "default")
                    if res.namespaced
                    else ""
                )
                resource_meta.update(
                    group=res.group, version=res.version, resource=res.plural, namespace=namespace
                )
                wanted.add((res.group, res.plural, namespace, resource_meta["name"]))
                config = _manifest_config(configs, res, namespace, resource_meta["name"])
                obj = await self._apply_one(manifest, config, res)
            except (ApiError, ValueError) as exc:
                if isinstance(exc, Conflict) or is_temporary(exc):
                    raise  # retried with backoff; not a property of the manifest
                failed = True
                message = str(exc)[:1000]
                manifest_conditions = [
                    cond.condition(
                        "Applied", False, reason="AppliedManifestFailed", message=message
                    ),
                    cond.condition(
                        "Available",
                        "Unknown",
                        reason="ResourceNotAvailable",
                        message="Resource is not available",
                    ),
                ]
                statuses.append({"resourceMeta": resource_meta, "conditions": manifest_conditions})
                continue
            read_only = (config.get("updateStrategy") or {}).get("type") == "ReadOnly"
            if obj is not None and not read_only:  # a ReadOnly object is watched, not owned
                obj_meta = obj.get("metadata") or {}
                applied.append(
                    Applied(
                        group=res.group,
                        version=res.version,
                        resource=res.plural,
                        namespace=namespace,
                        name=resource_meta["name"],
                        uid=str(obj_meta.get("uid") or ""),
                    )
                )
            rules = config.get("feedbackRules") or []
            if rules:
                has_feedback = True
            values, errors = values_for_rules(obj or {}, rules)
            if values:
                feedback = {"values": values}
            manifest_conditions = [
                cond.condition(
                    "Applied",
                    True,
                    reason="AppliedManifestComplete",
                    message="Apply manifest complete",
                ),
                cond.condition(
                    "Available",
                    obj is not None,
                    reason="ResourceAvailable" if obj is not None else "ResourceNotAvailable",
                    message="Resource is available"
                    if obj is not None
                    else "Resource is not available",
                ),
            ]
            if not rules:
                synced = cond.condition(
                    "StatusFeedbackSynced", True, reason="NoStatusFeedbackSynced"
                )
            elif errors:
                synced = cond.condition(
                    "StatusFeedbackSynced",
                    False,
                    reason="StatusFeedbackSyncFailed",
                    message="; ".join(errors)[:1000],
                )
            else:
                synced = cond.condition("StatusFeedbackSynced", True, reason="StatusFeedbackSynced")
            manifest_conditions.append(synced)
            entry: dict[str, Any] = {
                "resourceMeta": resource_meta,
                "conditions": manifest_conditions,
                "statusFeedback": feedback,
            }
            statuses.append(entry)

        # Objects applied before whose manifest failed this time stay recorded (and in place);
        # only objects whose manifest left the work are deleted.
        kept = [
            old
            for old in previous
            if old.identity() in wanted and not any(old.same_object(a) for a in applied)
        ]
        stale = [old for old in previous if old.identity() not in wanted]
        await self._record_applied(record, [*applied, *kept])
        for old in stale:
            if not _orphaned(work, old):
                await self._delete_applied(old)
        await self._write_status(work, statuses)
        waits = [self._feedback_interval] if has_feedback else []
        if failed:
            waits.append(self._retry_interval)  # e.g. a namespace another manifest creates
        return Result(requeue_after=min(waits)) if waits else None

    async def _delete_applied(self, applied: Applied) -> bool:
        """Delete one applied object if it is still the one we created; True when gone."""
        res = _applied_resource(applied)
        namespace = applied.namespace or None
        try:
            await self._spoke.delete(
                res,
                applied.name,
                namespace=namespace,
                uid=applied.uid or None,
                propagation="Background",
            )
        except Conflict:
            return True  # a different object of that name now: not ours to delete
        current = await self._spoke.get_or_none(res, applied.name, namespace=namespace)
        return current is None or (current.get("metadata") or {}).get("uid") != applied.uid

    async def _record_applied(self, record: dict[str, Any], applied: Sequence[Applied]) -> None:
        status = dict(record.get("status") or {})
        status["appliedResources"] = [a.entry() for a in applied]
        if status == (record.get("status") or {}):
            return
        await self._spoke.replace(
            r.APPLIED_MANIFEST_WORK, dict(record, status=status), subresource="status"
        )

    async def _write_status(self, work: dict[str, Any], statuses: list[dict[str, Any]]) -> None:
        meta = work.get("metadata") or {}
        generation = meta.get("generation")
        old_status = work.get("status") or {}
        old_manifests = {
            (m.get("resourceMeta") or {}).get("ordinal"): m
            for m in (old_status.get("resourceStatus") or {}).get("manifests") or []
        }
        for entry in statuses:
            old = old_manifests.get(entry["resourceMeta"]["ordinal"]) or {}
            if (old.get("resourceMeta") or {}) == entry["resourceMeta"]:
                entry["conditions"] = cond.set_conditions(
                    old.get("conditions"), entry["conditions"]
                )
            else:
                entry["conditions"] = cond.set_conditions([], entry["conditions"])
        applied_ok = all(cond.is_true(s["conditions"], "Applied") for s in statuses)
        unavailable = sum(1 for s in statuses if not cond.is_true(s["conditions"], "Available"))
        updates = [
            cond.condition(
                "Applied",
                applied_ok,
                reason="AppliedManifestWorkComplete" if applied_ok else "AppliedManifestWorkFailed",
                message="Apply manifest work complete"
                if applied_ok
                else "Failed to apply manifest work",
                observed_generation=generation,
            ),
            cond.condition(
                "Available",
                unavailable == 0,
                reason="ResourcesAvailable" if unavailable == 0 else "ResourcesNotAvailable",
                message="All resources are available"
                if unavailable == 0
                else f"{unavailable} of {len(statuses)} resources are not available",
                observed_generation=generation,
            ),
            cond.condition(
                "Degraded",
                False,
                reason="ResourcesNotDegraded",
                message="No resource is degraded",
                observed_generation=generation,
            ),
        ]
        status = dict(old_status)
        status["conditions"] = cond.set_conditions(old_status.get("conditions"), updates)
        status["resourceStatus"] = {"manifests": statuses}
        if status == old_status:
            return
        await self._hub.replace(r.MANIFEST_WORK, dict(work, status=status), subresource="status")

    # -- delete ------------------------------------------------------------------------

    async def _finalize(self, work: dict[str, Any]) -> Result | None:
        meta = work.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return None
        name = str(meta.get("name"))
        amw_name = self.applied_work_name(name)
        record = await self._spoke.get_or_none(r.APPLIED_MANIFEST_WORK, amw_name)
        if record is not None:
            pending = False
            for entry in (record.get("status") or {}).get("appliedResources") or []:
                applied = Applied.from_entry(entry)
                if _orphaned(work, applied):
                    continue
                if not await self._delete_applied(applied):
                    pending = True
            if pending:
                return Result(requeue_after=0.2)  # objects with finalizers: look again soon
            await self._spoke.delete(r.APPLIED_MANIFEST_WORK, amw_name)
        finalizers.remove(FINALIZER)
        with contextlib.suppress(NotFound):
            await self._hub.patch(
                r.MANIFEST_WORK,
                name,
                {
                    "metadata": {
                        "finalizers": finalizers,
                        "resourceVersion": meta.get("resourceVersion"),
                    }
                },
                namespace=self.cluster,
            )
        return None


def _holds(body: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    """Whether the live object already holds the manifest (metadata labels/annotations too)."""
    for key, value in body.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        if key == "metadata":
            meta = existing.get("metadata") or {}
            for field in ("labels", "annotations"):
                if not contains(value.get(field) or {}, meta.get(field) or {}):
                    return False
            continue
        if not contains(value, existing.get(key)):
            return False
    return True
