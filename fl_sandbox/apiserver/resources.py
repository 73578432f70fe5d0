"""Create, read, update, patch and delete with kube-apiserver's semantics: metadata,
optimistic concurrency, status subresource, generation, finalizers, schema, field managers."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import errors, protobuf
from .admission import admit
from .builtin_fields import prune_builtin
from .builtin_rules import apply_builtin_rules
from .builtin_types import ResourceType
from .crds import CRD_GROUP, check_crd, crd_status
from .embedded import EmbeddedTypeError
from .fields import record_update, server_side_apply
from .metadata import (
    LABEL_NAMED,
    PATH_SEGMENT_NAMED,
    check_meta,
    check_name,
    generated_name,
    new_uid,
    now,
)
from .patching import json_patch, merge_patch, strategic_merge
from .schema import process
from .store import Obj, Store

NAMESPACES = ("", "namespaces")
CRD_GR = (CRD_GROUP, "customresourcedefinitions")
FOREGROUND = "foregroundDeletion"
_SERVER_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


@dataclass
class Target:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None = None

    @property
    def gr(self) -> tuple[str, str]:
        return self.rtype.group_resource


@dataclass
class WriteOptions:
    manager: str
    dry_run: bool = False
    strict: bool = False
    warn: bool = True
    warnings: list[str] = field(default_factory=list)  # sent back as Warning headers


def as_version(obj: Obj, rtype: ResourceType) -> Obj:
    """The stored object as the requested version (no conversion: apiVersion only)."""
    if obj.get("apiVersion") == rtype.api_version:
        return obj
    return {**obj, "apiVersion": rtype.api_version}


def _spec_part(obj: Obj, *, exclude_status: bool) -> Obj:
    skip = ("metadata", "status") if exclude_status else ("metadata",)
    return {k: v for k, v in obj.items() if k not in skip}


_BODY_TYPES = ("application/json", "application/yaml", "application/octet-stream", "text/plain", "")


def parse_body(raw: bytes, content_type: str) -> Any:
    """JSON or YAML bodies; anything else (protobuf, CBOR) is 415 so clients fall back to JSON."""
    media = content_type.split(";")[0].strip().lower()
    if media == protobuf.MEDIA_TYPE:
        try:
            return protobuf.decode(raw)
        except protobuf.ProtobufError as exc:
            raise errors.ApiError(415, "UnsupportedMediaType", str(exc)) from exc
    if media not in _BODY_TYPES and media not in (MERGE, JSON_PATCH, STRATEGIC, APPLY):
        raise errors.ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {media!r})",
        )
    if not raw:
        raise errors.bad_request("the request body is empty")
    try:
        # JSON is YAML as kube-apiserver reads it (YAML 1.2: 1e-05 is a number), and what
        # clients send as apply patches; PyYAML's YAML 1.1 would read 1e-05 as a string.
        if "yaml" in content_type and raw.lstrip()[:1] not in (b"{", b"["):
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise errors.bad_request(f"the request body is not valid: {exc}") from exc


class Resources:
    """The write funnel every verb goes through; hooks let the GC and CRD registry react."""

    def __init__(
        self,
        *,
        store: Store,
        on_write: Callable[[ResourceType, Obj | None, Obj | None], None],
    ) -> None:
        self.store = store
        self._on_write = on_write  # (type, old, new); new None means removed

    # ---- reads ----
    def get(self, t: Target) -> Obj:
        obj = self.store.get(t.gr, t.namespace or "", t.name or "")
        if obj is None:
            raise errors.not_found(t.rtype.plural, t.rtype.group, t.name or "")
        return as_version(obj, t.rtype)

    def _require_namespace(self, namespace: str, *, creating: bool) -> None:
        ns = self.store.get(NAMESPACES, "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                f"unable to create new content in namespace {namespace} because it is being terminated",
                plural="namespaces",
                name=namespace,
            )

    # ---- shared checks ----
    def _check_kind(self, t: Target, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        kind = body.get("kind")
        if kind and kind != t.rtype.kind:
            raise errors.bad_request(
                f"the kind in the body ({kind}) does not match the kind of the URL ({t.rtype.kind})"
            )
        version = body.get("apiVersion")
        if version and version != t.rtype.api_version:
            raise errors.bad_request(
                f"the API version in the data ({version}) does not match the expected API version ({t.rtype.api_version})"
            )
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        return body

    def _finish(self, t: Target, obj: Obj, old: Obj | None, opts: WriteOptions) -> Obj:
        """Defaults, schema and validation; raises 422 with every cause found."""
        rtype = t.rtype
        if rtype.builtin:
            obj, unknown = prune_builtin(rtype.group_resource, obj)
            self._unknown_fields(unknown, opts)
        causes = check_meta(obj["metadata"])
        causes += apply_builtin_rules(rtype, obj, old) if rtype.builtin else []
        if rtype.group_resource == CRD_GR:
            check_crd(obj)
            obj["status"] = crd_status(obj)
        if rtype.validate and rtype.schema is not None:
            try:
                obj, pruned, schema_causes = process(obj, rtype.schema)
            except EmbeddedTypeError as exc:
                raise errors.bad_request(
                    f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
                    f"{rtype.kind}: {exc}"
                ) from None
            self._unknown_fields(pruned, opts)
            causes += schema_causes
        if causes:
            raise errors.invalid(rtype.kind, rtype.group, obj["metadata"].get("name", ""), causes)
        admit(rtype.group_resource, obj, status_only=t.subresource == "status")
        return obj

    @staticmethod
    def _unknown_fields(paths: list[str], opts: WriteOptions) -> None:
        """fieldValidation: Strict refuses unknown fields; Warn (the default) drops them with a
        warning; Ignore drops them silently."""
        if not paths:
            return
        if opts.strict:
            raise errors.bad_request(
                "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in paths)
            )
        if opts.warn:
            opts.warnings.extend(f'unknown field "{p}"' for p in paths)

    # ---- create ----
    def create(
        self, t: Target, body: Any, opts: WriteOptions, *, managed_fields: list[Any] | None = None
    ) -> Obj:
        rtype = t.rtype
        obj = copy.deepcopy(self._check_kind(t, body))
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta = obj.setdefault("metadata", {})
        for key in ("name", "generateName", "namespace"):
            if not isinstance(meta.get(key, ""), str):
                raise errors.bad_request(
                    f"json: cannot unmarshal {type(meta[key]).__name__} into Go struct field ObjectMeta.metadata.{key} of type string"
                )
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != t.namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = t.namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = generated_name(meta["generateName"])
            else:
                raise errors.invalid(
                    rtype.kind,
                    rtype.group,
                    "",
                    [
                        (
                            "FieldValueRequired",
                            "metadata.name",
                            "metadata.name: Required value: name or generateName is required",
                        )
                    ],
                )
        name = meta["name"]
        name_causes = check_name(
            name,
            label=rtype.group_resource in LABEL_NAMED,
            path_segment=rtype.group_resource in PATH_SEGMENT_NAMED,
        )
        if name_causes:
            raise errors.invalid(rtype.kind, rtype.group, name, name_causes)
        if rtype.namespaced:
            self._require_namespace(t.namespace or "", creating=True)
        if self.store.get(t.gr, t.namespace or "", name) is not None:
            raise errors.already_exists(rtype.plural, rtype.group, name)
        for key in _SERVER_META:
            meta.pop(key, None)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now()
        if rtype.tracks_generation:
            meta["generation"] = 1
        if rtype.status_subresource:
            obj.pop("status", None)
        meta.pop("managedFields", None)
        obj = self._finish(t, obj, None, opts)
        if managed_fields is not None:
            obj["metadata"]["managedFields"] = managed_fields
        else:
            record_update(None, obj, manager=opts.manager, api_version=rtype.api_version)
        if opts.dry_run:
            return obj
        obj["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.put(t.gr, obj, event="ADDED", old=None)
        self._on_write(rtype, None, obj)
        return obj

    # ---- update funnel ----
    def _update(
        self, t: Target, old: Obj, desired: Obj, opts: WriteOptions, *, manager_op: str = "Update"
    ) -> Obj:
        rtype = t.rtype
        sub = t.subresource or ""
        raw_meta = desired.get("metadata")
        meta_in: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        want_rv = meta_in.get("resourceVersion")
        if meta_in.get("name") not in (None, "", old["metadata"]["name"]):
            raise errors.bad_request(
                f"the name of the object ({meta_in.get('name')}) does not match the name on the URL ({old['metadata']['name']})"
            )
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype.plural, rtype.group, old["metadata"]["name"], errors.STALE)
        if sub == "status":
            new = copy.deepcopy({k: v for k, v in old.items() if k != "status"})
            if "status" in desired:
                new["status"] = copy.deepcopy(desired["status"])
            new["metadata"] = dict(old["metadata"])
            if manager_op == "Apply" and "managedFields" in meta_in:
                new["metadata"]["managedFields"] = meta_in["managedFields"]
        else:
            new = copy.deepcopy(desired)
            new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
            meta = new.setdefault("metadata", {})
            if rtype.status_subresource:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
            for key in ("name", "namespace", *_SERVER_META):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            meta.pop("resourceVersion", None)
            if "managedFields" not in meta and "managedFields" in old["metadata"]:
                meta["managedFields"] = old["metadata"]["managedFields"]
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(
                    old["metadata"].get("finalizers") or []
                )
                if added:
                    raise errors.invalid(
                        rtype.kind,
                        rtype.group,
                        old["metadata"]["name"],
                        [
                            (
                                "FieldValueForbidden",
                                "metadata.finalizers",
                                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                            )
                        ],
                    )
        new["metadata"].pop("resourceVersion", None)
        new = self._finish(t, new, old, opts)
        if rtype.tracks_generation:
            excl = rtype.status_subresource
            if _spec_part(new, exclude_status=excl) != _spec_part(old, exclude_status=excl):
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
        if manager_op == "Update":
            record_update(
                old, new, manager=opts.manager, api_version=rtype.api_version, subresource=sub
            )
        comparable_old = {
            **old,
            "metadata": {k: v for k, v in old["metadata"].items() if k != "resourceVersion"},
        }
        if new == comparable_old:
            return as_version(old, rtype)  # a no-op write does not bump resourceVersion
        if opts.dry_run:
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return new
        deleting = bool(new["metadata"].get("deletionTimestamp"))
        new["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.put(t.gr, new, event="MODIFIED", old=old)
        self._on_write(rtype, old, new)
        if deleting and not new["metadata"].get("finalizers") and t.gr != NAMESPACES:
            self.remove(rtype, new)
        return new

    def _live(self, t: Target) -> Obj:
        obj = self.store.get(t.gr, t.namespace or "", t.name or "")
        if obj is None:
            raise errors.not_found(t.rtype.plural, t.rtype.group, t.name or "")
        return obj

    def update(self, t: Target, body: Any, opts: WriteOptions) -> Obj:
        body = self._check_kind(t, body)
        old = self._live(t)
        if not t.rtype.builtin and not (body.get("metadata") or {}).get("resourceVersion"):
            # Custom resources do not allow unconditional updates (kube-apiserver's strategy).
            raise errors.invalid(
                t.rtype.kind,
                t.rtype.group,
                old["metadata"]["name"],
                [
                    (
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        return self._update(t, old, body, opts)

    def patch(
        self, t: Target, raw: bytes, content_type: str, opts: WriteOptions, *, force: bool
    ) -> tuple[int, Obj]:
        rtype = t.rtype
        media = content_type.split(";")[0].strip().lower()
        if media not in (MERGE, JSON_PATCH, STRATEGIC, APPLY):
            raise errors.unsupported_media_type(media)
        if media == STRATEGIC and not rtype.builtin:
            raise errors.unsupported_media_type(media)
        body = parse_body(raw, media)
        old = self.store.get(t.gr, t.namespace or "", t.name or "")
        if media == APPLY:
            return self._apply(t, old, body, opts, force=force)
        if old is None:
            raise errors.not_found(rtype.plural, rtype.group, t.name or "")
        current = as_version(old, rtype)
        if media == MERGE:
            if not isinstance(body, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            desired = merge_patch(current, body)
        elif media == STRATEGIC:
            if not isinstance(body, dict):
                raise errors.bad_request("a strategic merge patch must be a JSON object")
            desired = strategic_merge(current, body)
        else:
            desired = json_patch(current, body)
        if not isinstance(desired, dict):
            raise errors.unprocessable("the patched object is not a JSON object")
        return 200, self._update(t, old, desired, opts)

    def _apply(
        self, t: Target, old: Obj | None, body: Any, opts: WriteOptions, *, force: bool
    ) -> tuple[int, Obj]:
        rtype = t.rtype
        if not opts.manager:
            raise errors.bad_request(
                "PATCH, application/apply-patch+yaml requests must have a fieldManager"
            )
        body = self._check_kind(t, body)
        if not body.get("apiVersion") or not body.get("kind"):
            raise errors.bad_request("apply configurations must name apiVersion and kind")
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, t.name):
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({t.name})"
            )
        if old is None:
            if t.subresource:
                raise errors.not_found(rtype.plural, rtype.group, t.name or "")
            seed = server_side_apply(
                None, body, manager=opts.manager, force=force, api_version=rtype.api_version
            )
            seed["metadata"] = {
                **seed["metadata"],
                "name": t.name,
                **({"namespace": t.namespace} if rtype.namespaced else {}),
            }
            seed["apiVersion"], seed["kind"] = rtype.api_version, rtype.kind
            managed = seed["metadata"].pop("managedFields", None)
            options = WriteOptions(
                opts.manager, opts.dry_run, opts.strict, opts.warn, opts.warnings
            )
            return 201, self.create(t, seed, options, managed_fields=managed)
        live = as_version(old, rtype)
        merged = server_side_apply(
            live,
            body,
            manager=opts.manager,
            force=force,
            api_version=rtype.api_version,
            subresource=t.subresource or "",
            describe=t.name or "",
        )
        merged["metadata"]["resourceVersion"] = meta.get("resourceVersion")
        return 200, self._update(t, old, merged, opts, manager_op="Apply")

    # ---- delete ----
    def delete(self, t: Target, options: dict[str, Any], *, dry_run: bool) -> tuple[int, Obj]:
        rtype = t.rtype
        old = self._live(t)
        pre = options.get("preconditions") or {}
        name = old["metadata"]["name"]
        if pre.get("uid") and pre["uid"] != old["metadata"].get("uid"):
            raise errors.conflict(
                rtype.plural,
                rtype.group,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {old['metadata'].get('uid')}",
            )
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise errors.conflict(
                rtype.plural,
                rtype.group,
                name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in object meta: {old['metadata']['resourceVersion']}",
            )
        if dry_run:
            return 200, as_version(old, rtype)
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        if policy == "Orphan":
            self._orphan_dependents(old["metadata"].get("uid", ""))
        finalizers = list(old["metadata"].get("finalizers") or [])
        if (
            policy == "Foreground"
            and t.gr != NAMESPACES
            and FOREGROUND not in finalizers
            and self.has_dependents(old["metadata"].get("uid", ""))
        ):
            finalizers.append(FOREGROUND)  # the collector removes it once dependents are gone
        if t.gr == NAMESPACES or finalizers:
            if old["metadata"].get("deletionTimestamp") and finalizers == old["metadata"].get(
                "finalizers"
            ):
                return 202, as_version(old, rtype)
            new = {
                **old,
                "metadata": {
                    **old["metadata"],
                    "deletionTimestamp": old["metadata"].get("deletionTimestamp") or now(),
                    "deletionGracePeriodSeconds": 0,
                    **({"finalizers": finalizers} if finalizers else {}),
                },
            }
            if t.gr == NAMESPACES:
                new["status"] = {**(old.get("status") or {}), "phase": "Terminating"}
            new["metadata"]["resourceVersion"] = str(self.store.next_rv())
            self.store.put(t.gr, new, event="MODIFIED", old=old)
            self._on_write(rtype, old, new)
            return (200 if t.gr == NAMESPACES else 202), as_version(new, rtype)
        gone = self.remove(rtype, old)
        if rtype.builtin and t.gr not in (NAMESPACES, ("", "pods")):
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": rtype.group,
                    "kind": rtype.plural,
                    "uid": old["metadata"].get("uid"),
                },
            }
        return 200, as_version(gone, rtype)

    def remove(self, rtype: ResourceType, obj: Obj) -> Obj:
        gone = self.store.remove(rtype.group_resource, obj)
        self._on_write(rtype, obj, None)
        return gone

    def begin_delete(self, rtype: ResourceType, obj: Obj) -> None:
        """Delete from the garbage collector: honours finalizers like a client's delete."""
        t = Target(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if self.store.get(rtype.group_resource, t.namespace or "", t.name or "") is None:
            return
        with contextlib.suppress(errors.ApiError):  # gone or changed meanwhile: nothing to do
            self.delete(t, {"propagationPolicy": "Background"}, dry_run=False)

    def has_dependents(self, uid: str) -> bool:
        return bool(uid) and any(
            any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])
            for _, obj in self.store.all_objects()
        )

    def drop_finalizer(self, rtype: ResourceType, obj: Obj, finalizer: str) -> None:
        """The collector's update that lets a foreground deletion finish."""
        kept = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        desired = {**obj, "metadata": {**obj["metadata"], "finalizers": kept}}
        t = Target(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        self._update(t, obj, desired, WriteOptions("garbage-collector"))

    def _orphan_dependents(self, uid: str) -> None:
        if not uid:
            return
        for gr, obj in self.store.all_objects():
            refs = obj["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                kept = [r for r in refs if r.get("uid") != uid]
                meta = (
                    {**obj["metadata"], "ownerReferences": kept}
                    if kept
                    else {k: v for k, v in obj["metadata"].items() if k != "ownerReferences"}
                )
                meta["resourceVersion"] = str(self.store.next_rv())
                self.store.put(gr, {**obj, "metadata": meta}, event="MODIFIED", old=obj)
