"""Reading CustomResourceDefinitions (files or POSTed objects) into served resource types."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .builtin_types import ResourceType
from .errors import ApiError, invalid

CRD_GROUP = "apiextensions.k8s.io"


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=256)
def _parse(path: Path, mtime_ns: int, size: int) -> tuple[dict[str, Any], ...]:
    """Parsed once per file version: many servers in one process read the same CRDs."""
    del mtime_ns, size
    docs = yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader)
    return tuple(
        d for d in docs if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
    )


def load_crd_files(dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in *.yaml/*.yml/*.json files of the folders (shared,
    read-only documents: copy before changing)."""
    found: list[dict[str, Any]] = []
    for folder in dirs:
        if not folder.is_dir():
            raise FileNotFoundError(f"CRD folder {folder} does not exist")
        for path in sorted(folder.iterdir()):
            if path.suffix not in (".yaml", ".yml", ".json"):
                continue
            st = path.stat()
            found.extend(_parse(path.resolve(), st.st_mtime_ns, st.st_size))
    return found


def check_crd(crd: dict[str, Any]) -> None:
    """The checks kube-apiserver makes that matter here; 422 naming the field otherwise."""
    name = str(crd.get("metadata", {}).get("name", ""))
    spec = crd.get("spec")
    causes: list[tuple[str, str, str]] = []
    if not isinstance(spec, dict):
        causes.append(("FieldValueRequired", "spec", "spec: Required value"))
    else:
        group = spec.get("group")
        names = spec.get("names") or {}
        plural = names.get("plural")
        if not group:
            causes.append(("FieldValueRequired", "spec.group", "spec.group: Required value"))
        if not plural:
            causes.append(
                ("FieldValueRequired", "spec.names.plural", "spec.names.plural: Required value")
            )
        if not names.get("kind"):
            causes.append(
                ("FieldValueRequired", "spec.names.kind", "spec.names.kind: Required value")
            )
        if group and plural and name != f"{plural}.{group}":
            causes.append(
                (
                    "FieldValueInvalid",
                    "metadata.name",
                    f'metadata.name: Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                )
            )
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(
                (
                    "FieldValueNotSupported",
                    "spec.scope",
                    f'spec.scope: Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"',
                )
            )
        versions = spec.get("versions") or []
        if not versions:
            causes.append(("FieldValueRequired", "spec.versions", "spec.versions: Required value"))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                (
                    "FieldValueInvalid",
                    "spec.versions",
                    "spec.versions: Invalid value: must have exactly one version marked as storage version",
                )
            )
    if causes:
        raise invalid("CustomResourceDefinition", CRD_GROUP, name, causes)


def crd_types(crd: dict[str, Any], *, validate: bool) -> list[ResourceType]:
    """One ResourceType per served version of the CRD, in the CRD's version order."""
    spec = crd["spec"]
    names = spec["names"]
    types: list[ResourceType] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        types.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec["scope"] == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in (version.get("subresources") or {}),
                schema=schema if isinstance(schema, dict) else None,
                validate=validate and isinstance(schema, dict),
                printer_columns=list(version.get("additionalPrinterColumns") or ()),
                crd_name=crd["metadata"]["name"],
            )
        )
    return types


def crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    """Established/NamesAccepted as kube-apiserver reports them once a CRD is served."""
    spec = crd["spec"]
    names = dict(spec["names"])
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", names["kind"] + "List")
    storage = [v["name"] for v in spec["versions"] if v.get("storage")]
    transition = crd["metadata"].get("creationTimestamp", "")
    return {
        "acceptedNames": names,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": transition,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": transition,
            },
        ],
        "storedVersions": storage,
    }


def ensure_crd_shape(crd: Any) -> dict[str, Any]:
    if not isinstance(crd, dict):
        raise ApiError(400, "BadRequest", "the CustomResourceDefinition body must be an object")
    return crd


def served_names(types: Sequence[ResourceType]) -> set[str]:
    names: set[str] = set()
    for t in types:
        names.update({t.plural, t.singular, t.kind.lower(), *t.short_names})
    return names
