"""OpenAPI v3, as kube-apiserver publishes it for kubectl: a root listing each group/version
and, per group/version, its PATCH operations (each declaring `fieldValidation`, so kubectl
leaves validation to the server) and `components.schemas` with each kind's schema, found by
its `x-kubernetes-group-version-kind`. That is what `kubectl explain` reads: a served CRD's
kinds carry the CRD's openAPIV3Schema (descriptions, types, enums, required) with the
standard apiVersion, kind and metadata (ObjectMeta) fields; a kind without a schema (the
built-ins) lists only those three.
"""

from __future__ import annotations

import copy
from typing import Any

from .builtin_types import ResourceType
from .registry import TypeRegistry

_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{_META}.ObjectMeta"
LIST_META = f"{_META}.ListMeta"
_CONVENTIONS = "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"
_API_VERSION = {
    "type": "string",
    "description": "APIVersion defines the versioned schema of this representation of an "
    "object. Servers should convert recognized schemas to the latest internal value, and may "
    f"reject unrecognized values. More info: {_CONVENTIONS}#resources",
}
_KIND = {
    "type": "string",
    "description": "Kind is a string value representing the REST resource this object "
    "represents. Servers may infer this from the endpoint the client submits requests to. "
    f"Cannot be updated. In CamelCase. More info: {_CONVENTIONS}#types-kinds",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _string_map(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": {"type": "string", "default": ""},
        "description": description,
    }


_SHARED: dict[str, dict[str, Any]] = {
    OBJECT_META: {
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which "
        "includes all objects users must create.",
        "properties": {
            "name": _string(
                "Name must be unique within a namespace. Cannot be updated. More info: "
                "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
            ),
            "generateName": _string(
                "Prefix from which the server generates a unique name when name is not set."
            ),
            "namespace": _string(
                "The namespace the object is in; empty for cluster-scoped objects. Must be a "
                "DNS_LABEL. Cannot be updated."
            ),
            "labels": _string_map(
                "Map of string keys and values that can be used to organize and categorize "
                "(scope and select) objects."
            ),
            "annotations": _string_map(
                "Unstructured key value map stored with a resource that may be set by external "
                "tools to store and retrieve arbitrary metadata. Not queryable."
            ),
            "finalizers": {
                "type": "array",
                "items": {"type": "string", "default": ""},
                "description": "Must be empty before the object is deleted from the registry.",
            },
            "ownerReferences": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["apiVersion", "kind", "name", "uid"],
                    "properties": {
                        "apiVersion": _string("API version of the referent."),
                        "kind": _string("Kind of the referent."),
                        "name": _string("Name of the referent."),
                        "uid": _string("UID of the referent."),
                        "controller": {
                            "type": "boolean",
                            "description": "If true, this reference points to the managing "
                            "controller.",
                        },
                        "blockOwnerDeletion": {
                            "type": "boolean",
                            "description": "If true, the owner cannot be deleted from the "
                            "key-value store until this reference is removed (foreground "
                            "deletion).",
                        },
                    },
                },
                "description": "Objects depended by this object. The object is garbage "
                "collected when all of them are deleted.",
            },
            "uid": _string("Unique in time and space; set by the server. Read-only."),
            "resourceVersion": _string(
                "Internal version of this object, for optimistic concurrency, change detection "
                "and watch. Read-only."
            ),
            "generation": {
                "type": "integer",
                "format": "int64",
                "description": "A sequence number of the desired state, set by the system. "
                "Read-only.",
            },
            "creationTimestamp": _string("When the object was created (RFC 3339). Read-only."),
            "deletionTimestamp": _string(
                "When the object will be deleted (RFC 3339), set by the server when a graceful "
                "deletion is requested. Read-only."
            ),
            "managedFields": {
                "type": "array",
                "items": {"type": "object"},
                "description": "Which field manager manages which fields (server-side apply).",
            },
        },
    },
    LIST_META: {
        "type": "object",
        "description": "ListMeta describes metadata that synthetic resources must have, "
        "including lists.",
        "properties": {
            "resourceVersion": _string("The version of the list, for watch."),
            "continue": _string("Set when more items are available (pagination)."),
            "remainingItemCount": {"type": "integer", "format": "int64"},
        },
    },
}


def definition_name(group: str, version: str, kind: str) -> str:
    """kube's REST-friendly name of a kind's schema: the group reversed, then version.kind."""
    if not group or "." not in group:
        return f"io.k8s.api.{group or 'core'}.{version}.{kind}"
    return ".".join(reversed(group.split("."))) + f".{version}.{kind}"


def _kind_schema(t: ResourceType) -> dict[str, Any]:
    if t.schema:
        schema = copy.deepcopy(t.schema)
    else:
        schema = {
            "type": "object",
            "description": f"{t.kind} (the sandbox publishes no schema for its other fields).",
        }
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", _API_VERSION)
    props.setdefault("kind", _KIND)
    props["metadata"] = {
        "allOf": [_ref(OBJECT_META)],
        "default": {},
        "description": f"Standard object's metadata. More info: {_CONVENTIONS}#metadata",
    }
    schema["x-kubernetes-group-version-kind"] = [
        {"group": t.group, "kind": t.kind, "version": t.version}
    ]
    return schema


def _list_schema(t: ResourceType) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{t.list_kind} is a list of {t.kind}",
        "required": ["items"],
        "properties": {
            "apiVersion": _API_VERSION,
            "kind": _KIND,
            "items": {
                "type": "array",
                "items": _ref(definition_name(t.group, t.version, t.kind)),
                "description": f"List of {t.plural}.",
            },
            "metadata": {"allOf": [_ref(LIST_META)], "default": {}},
        },
        "x-kubernetes-group-version-kind": [
            {"group": t.group, "kind": t.list_kind, "version": t.version}
        ],
    }


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def root(registry: TypeRegistry) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            path = _gv_path(group, version)
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}"}
    return {"paths": paths}


def group_version(registry: TypeRegistry, group: str, version: str) -> dict[str, Any] | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    prefix = "/" + _gv_path(group, version)
    param = {
        "name": "fieldValidation",
        "in": "query",
        "schema": {"type": "string", "uniqueItems": True},
    }
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = copy.deepcopy(_SHARED)
    for t in types:
        base = (
            f"{prefix}/namespaces/{{namespace}}/{t.plural}"
            if t.namespaced
            else f"{prefix}/{t.plural}"
        )
        gvk = {"group": group, "version": version, "kind": t.kind}
        operation = {
            "operationId": f"patch{t.kind}",
            "parameters": [param],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
        }
        paths[f"{base}/{{name}}"] = {"patch": operation}
        if t.status_subresource:
            paths[f"{base}/{{name}}/status"] = {
                "patch": {**operation, "operationId": f"patch{t.kind}Status"}
            }
        if not t.create_only:
            schemas[definition_name(group, version, t.kind)] = _kind_schema(t)
            schemas[definition_name(group, version, t.list_kind)] = _list_schema(t)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
