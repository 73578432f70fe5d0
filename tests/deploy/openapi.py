"""What kube-apiserver does with a custom resource's schema, for manifests checked offline.

Validation (jsonschema's draft 4, the dialect OpenAPI v3 schemas of CRDs are written in),
pruning (a field the schema does not know is silently dropped by the API server: a typo
would vanish without an error), list-map key uniqueness, and the structural-schema rules a
CRD must follow to be accepted.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml

_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def load_crds(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, for every served version of every CRD."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                if version.get("served", True):
                    schema = version["schema"]["openAPIV3Schema"]
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def _draft4(schema: Any) -> Any:
    """OpenAPI v3 extensions in jsonschema's terms: nullable and int-or-string."""
    if isinstance(schema, list):
        return [_draft4(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _draft4(value) for key, value in schema.items()}
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    for key in ("properties", "patternProperties"):
        if isinstance(schema.get(key), dict):
            out[key] = {name: _draft4(sub) for name, sub in schema[key].items()}
    return out


def validation_errors(obj: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every schema violation as `path: message`, plus duplicate keys of list maps."""
    validator = jsonschema.Draft4Validator(_draft4(copy.deepcopy(dict(schema))))
    errors = [
        f"{_path(error.absolute_path)}: {error.message}" for error in validator.iter_errors(obj)
    ]
    errors.extend(_list_key_errors(obj, schema, ""))
    return sorted(errors)


def pruned_fields(obj: Any, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Paths of fields the API server would drop because the schema does not declare them."""
    found: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource")) or path == ""
        for key, value in obj.items():
            where = f"{path}.{key}" if path else key
            if embedded and key in _ROOT_FIELDS and key not in (props or {}):
                continue
            if embedded and key == "metadata":
                continue  # ObjectMeta is validated by the API server itself
            if props is not None and key in props:
                found.extend(pruned_fields(value, props[key], where))
            elif isinstance(additional, dict):
                found.extend(pruned_fields(value, additional, where))
            elif additional is True or keep_unknown:
                continue
            else:
                found.append(where)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            found.extend(pruned_fields(item, schema["items"], f"{path}[{index}]"))
    return found


def structural_problems(schema: Mapping[str, Any]) -> list[str]:
    """Violations of Kubernetes' structural-schema rules (CRDs that break them are refused)."""
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("<root>: type must be object")
    metadata = (schema.get("properties") or {}).get("metadata")
    if metadata is not None:
        allowed = {"name", "generateName"}
        extra = set(metadata.get("properties") or {}) - allowed
        if extra or set(metadata) - {"type", "description", "properties"}:
            problems.append("metadata: only restrictions of name and generateName are allowed")
    for path, node in _nodes(schema, "<root>"):
        problems.extend(_node_problems(path, node))
    return problems


def _node_problems(path: str, node: Mapping[str, Any]) -> Iterator[str]:
    exempt = node.get("x-kubernetes-int-or-string") or node.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if not node.get("type") and not exempt:
        yield f"{path}: needs a type"
    if "properties" in node and "additionalProperties" in node:
        yield f"{path}: properties and additionalProperties exclude each other"
    if node.get("type") == "array" and "items" not in node:
        yield f"{path}: an array needs items"
    for junctor in _JUNCTORS:
        for sub in _as_list(node.get(junctor)):
            forbidden = {"description", "type", "default", "additionalProperties", "nullable"}
            if set(sub) & forbidden and not (
                node.get("x-kubernetes-int-or-string") and set(sub) <= {"type"}
            ):
                yield f"{path}.{junctor}: may not set {sorted(set(sub) & forbidden)}"
    if "default" in node:
        default = node["default"]
        errors = validation_errors(default, node)
        errors += [f"{p} (pruned)" for p in pruned_fields(default, node, "")]
        for error in errors:
            yield f"{path}.default: {error}"
    keys = node.get("x-kubernetes-list-map-keys")
    if keys is not None:
        if node.get("x-kubernetes-list-type") != "map":
            yield f"{path}: list-map-keys needs x-kubernetes-list-type: map"
        item = node.get("items") or {}
        for key in keys:
            if key not in (item.get("required") or []) and "default" not in (
                (item.get("properties") or {}).get(key) or {}
            ):
                yield f"{path}: list map key {key} must be required or defaulted"


def _nodes(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}.*")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")


def _list_key_errors(obj: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    errors: list[str] = []
    if isinstance(obj, list):
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen = [tuple(item.get(k) for k in keys) for item in obj if isinstance(item, dict)]
            if len(seen) != len(set(seen)):
                errors.append(f"{path or '<root>'}: duplicate list-map keys {keys}")
        elif list_type == "set" and len({repr(i) for i in obj}) != len(obj):
            errors.append(f"{path or '<root>'}: duplicate items in a set")
        for index, item in enumerate(obj):
            errors.extend(_list_key_errors(item, schema.get("items") or {}, f"{path}[{index}]"))
    elif isinstance(obj, dict):
        props = schema.get("properties") or {}
        for key, value in obj.items():
            sub = props.get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                where = f"{path}.{key}" if path else key
                errors.extend(_list_key_errors(value, sub, where))
    return errors


def _as_list(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, dict):
        return [value]
    return [v for v in value or [] if isinstance(v, dict)]


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"
