"""Just enough OpenAPI v3 for kubectl: every PATCH operation declares `fieldValidation`, so
kubectl leaves validation to the server instead of downloading full schemas."""

from __future__ import annotations

from typing import Any

from .registry import TypeRegistry


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
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
    }
