"""Known fields of the built-in kinds, from the typed models of kubernetes_asyncio, so unknown
fields are dropped (kube-apiserver's default `fieldValidation=Warn`, with a Warning header) or
refused (`fieldValidation=Strict`, as kubectl apply sends) instead of being stored."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")

# Model of each built-in kind that is pruned (CRDs are left alone: their schemas are free-form).
MODELS: dict[tuple[str, str], str] = {
    ("", "namespaces"): "V1Namespace",
    ("", "configmaps"): "V1ConfigMap",
    ("", "secrets"): "V1Secret",
    ("", "serviceaccounts"): "V1ServiceAccount",
    ("", "pods"): "V1Pod",
    ("", "events"): "CoreV1Event",
    ("", "services"): "V1Service",
    ("batch", "jobs"): "V1Job",
    ("apps", "deployments"): "V1Deployment",
    ("coordination.k8s.io", "leases"): "V1Lease",
    ("events.k8s.io", "events"): "EventsV1Event",
    ("rbac.authorization.k8s.io", "roles"): "V1Role",
    ("rbac.authorization.k8s.io", "rolebindings"): "V1RoleBinding",
    ("rbac.authorization.k8s.io", "clusterroles"): "V1ClusterRole",
    ("rbac.authorization.k8s.io", "clusterrolebindings"): "V1ClusterRoleBinding",
}


@lru_cache(maxsize=1024)
def _fields(model: str) -> dict[str, str] | None:
    from kubernetes_asyncio.client import models  # heavy: imported on the first write

    cls = getattr(models, model, None)
    if cls is None:
        return None
    types: dict[str, str] = cls.openapi_types
    names: dict[str, str] = cls.attribute_map
    return {names[attr]: kind for attr, kind in types.items()}


def _prune(value: Any, kind: str, path: str, unknown: list[str]) -> Any:
    if value is None:
        return None
    m = _LIST.match(kind)
    if m:
        if not isinstance(value, list):
            return value
        return [_prune(v, m.group(1), f"{path}[{n}]", unknown) for n, v in enumerate(value)]
    m = _DICT.match(kind)
    if m:
        if not isinstance(value, dict):
            return value
        return {k: _prune(v, m.group(1), f"{path}.{k}", unknown) for k, v in value.items()}
    fields = _fields(kind)
    if fields is None or not isinstance(value, dict):
        return value  # primitives, IntOrString/RawExtension ("object"), dates
    out: dict[str, Any] = {}
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key in fields:
            out[key] = _prune(item, fields[key], where, unknown)
        else:
            unknown.append(where)
    return out


def prune_builtin(gr: tuple[str, str], obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(obj without fields its kind does not declare, their paths)."""
    model = MODELS.get(gr)
    if model is None:
        return obj, []
    unknown: list[str] = []
    pruned = _prune(obj, model, "", unknown)
    return pruned, unknown
