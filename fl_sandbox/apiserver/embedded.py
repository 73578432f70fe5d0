"""Embedded resources (`x-kubernetes-embedded-resource`, such as the manifests of a
ManifestWork or an AddOnTemplate), treated as kube-apiserver treats them
(apiextensions-apiserver's schema/objectmeta):

- on decoding, apiVersion and kind must be strings and metadata must decode into ObjectMeta
  (400 otherwise); metadata is pruned to ObjectMeta's fields and empty values dropped, as a
  round trip through ObjectMeta does, and the dropped fields are reported as unknown;
- on validation (422 with the field path), apiVersion and kind are required, kind must be a
  DNS-1035 label in any case, and metadata follows the rules of a top-level object's: a
  name is a path segment, a namespace is a DNS-1123 label, labels, annotations, owners and
  finalizers as everywhere. So a manifest whose namespace is still a template placeholder
  such as "{{INSTALL_NAMESPACE}}" is refused, as a real hub refuses it.
"""

from __future__ import annotations

from typing import Any

from .metadata import (
    Cause,
    check_meta,
    dns1035_label_errors,
    dns1123_label_errors,
    invalid,
    parse_time,
    path_segment_errors,
    show,
)

# ObjectMeta's JSON fields and their Go types (k8s.io/apimachinery/pkg/apis/meta/v1).
_STRING, _INT, _TIME, _MAP, _LIST, _OWNERS, _ENTRIES = (
    "string",
    "int64",
    "v1.Time",
    "map[string]string",
    "[]string",
    "[]v1.OwnerReference",
    "[]v1.ManagedFieldsEntry",
)
OBJECT_META: dict[str, str] = {
    "name": _STRING,
    "generateName": _STRING,
    "namespace": _STRING,
    "selfLink": _STRING,
    "uid": _STRING,
    "resourceVersion": _STRING,
    "generation": _INT,
    "creationTimestamp": _TIME,
    "deletionTimestamp": _TIME,
    "deletionGracePeriodSeconds": _INT,
    "labels": _MAP,
    "annotations": _MAP,
    "ownerReferences": _OWNERS,
    "finalizers": _LIST,
    "managedFields": _ENTRIES,
}
_OWNER_REFERENCE: dict[str, str] = {
    "apiVersion": _STRING,
    "kind": _STRING,
    "name": _STRING,
    "uid": _STRING,
    "controller": "bool",
    "blockOwnerDeletion": "bool",
}
# deletionGracePeriodSeconds is a pointer in Go: 0 is kept; other zero values are omitted.
_KEEP_ZERO = frozenset({"deletionGracePeriodSeconds"})


class EmbeddedTypeError(ValueError):
    """An embedded resource that does not decode (kube-apiserver answers 400)."""


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, go_type: str) -> bool:
    if go_type == _STRING:
        return isinstance(value, str)
    if go_type == "bool":
        return isinstance(value, bool)
    if go_type == _INT:
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and float(value).is_integer()
        )
    if go_type == _TIME:
        return isinstance(value, str) and parse_time(value) is not None
    if go_type == _MAP:
        return isinstance(value, dict) and all(
            isinstance(v, str) or v is None for v in value.values()
        )
    if go_type == _LIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _decode(
    fields: dict[str, str], value: dict[str, Any], *, path: str, struct: str, unknown: list[str]
) -> dict[str, Any]:
    """The fields of a Go struct that survive a JSON round trip through it."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        go_type = fields.get(key)
        if go_type is None:
            unknown.append(f"{path}.{key}")
            continue
        if item is None:
            continue
        if not _type_ok(item, go_type):
            # A map or list of the wrong elements fails on its first wrong element.
            wrong, expected = item, go_type
            if (go_type, type(item)) in ((_MAP, dict), (_LIST, list)):
                elements = item.values() if isinstance(item, dict) else item
                wrong = next(v for v in elements if not isinstance(v, str) and v is not None)
                expected = _STRING
            elif go_type in (_OWNERS, _ENTRIES) and isinstance(item, list):
                wrong = next(v for v in item if not isinstance(v, dict))
                expected = go_type.removeprefix("[]")
            raise EmbeddedTypeError(
                f"json: cannot unmarshal {_json_type(wrong)} into Go struct field "
                f"{struct}.{key} of type {expected}"
            )
        if go_type == _INT:
            item = int(item)
        elif go_type == _MAP:
            item = {k: v or "" for k, v in item.items()}
        if not item and item is not False and key not in _KEEP_ZERO:
            continue  # omitempty
        out[key] = item
    return out


def coerce(value: dict[str, Any], *, path: str, unknown: list[str]) -> dict[str, Any]:
    """The embedded resource as kube-apiserver decodes it: metadata pruned to ObjectMeta
    (dropped fields appended to ``unknown``); EmbeddedTypeError when it does not decode."""
    for key in ("apiVersion", "kind"):
        if key in value and not isinstance(value[key], str):
            raise EmbeddedTypeError(
                f"{path}.{key}: Invalid value: {show(value[key])}: must be a string"
            )
    meta = value.get("metadata")
    if "metadata" not in value:
        return value
    meta_path = f"{path}.metadata"
    if not isinstance(meta, dict):
        if meta is None:
            return {k: v for k, v in value.items() if k != "metadata"}
        raise EmbeddedTypeError(
            f"{meta_path}: Invalid value: {show(meta)}: json: cannot unmarshal "
            f"{_json_type(meta)} into Go value of type v1.ObjectMeta"
        )
    try:
        decoded = _decode(OBJECT_META, meta, path=meta_path, struct="ObjectMeta", unknown=unknown)
        owners = decoded.get("ownerReferences")
        if owners:
            decoded["ownerReferences"] = [
                _decode(
                    _OWNER_REFERENCE,
                    ref,
                    path=f"{meta_path}.ownerReferences[{n}]",
                    struct="OwnerReference",
                    unknown=unknown,
                )
                for n, ref in enumerate(owners)
            ]
    except EmbeddedTypeError as exc:
        raise EmbeddedTypeError(f"{meta_path}: Invalid value: {show(meta)}: {exc}") from None
    return {**value, "metadata": decoded}


def check(value: dict[str, Any], *, path: str) -> list[Cause]:
    """apiVersion, kind and metadata of an embedded resource (its 422 causes)."""
    causes: list[Cause] = []
    for key in ("apiVersion", "kind"):
        field = f"{path}.{key}"
        if key not in value:
            causes.append(("FieldValueRequired", field, f"{field}: Required value"))
        elif value[key] == "":
            causes.append(invalid(field, "", "must not be empty"))
    api_version = value.get("apiVersion")
    if isinstance(api_version, str) and api_version.count("/") > 1:
        causes.append(
            invalid(
                f"{path}.apiVersion",
                api_version,
                f"unexpected GroupVersion string: {api_version}",
            )
        )
    kind = value.get("kind")
    if isinstance(kind, str) and kind:
        errs = dns1035_label_errors(kind.lower())
        if errs:
            causes.append(
                invalid(
                    f"{path}.kind",
                    kind,
                    "may have mixed case, but should otherwise match: " + ",".join(errs),
                )
            )
    meta = value.get("metadata")
    if isinstance(meta, dict):
        causes += _check_metadata(meta, path=f"{path}.metadata")
    return causes


def _check_metadata(meta: dict[str, Any], *, path: str) -> list[Cause]:
    causes: list[Cause] = []
    generate_name = meta.get("generateName")
    if isinstance(generate_name, str) and generate_name:
        causes += [
            invalid(f"{path}.generateName", generate_name, why)
            for why in path_segment_errors(generate_name, prefix=True)
        ]
    # kube names a nameless embedded object "fakename" before validating it: no name is fine.
    name = meta.get("name")
    if isinstance(name, str) and name:
        causes += [invalid(f"{path}.name", name, why) for why in path_segment_errors(name)]
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace:
        causes += [
            invalid(f"{path}.namespace", namespace, why) for why in dns1123_label_errors(namespace)
        ]
    generation = meta.get("generation")
    if isinstance(generation, int) and generation < 0:
        causes.append(
            invalid(f"{path}.generation", generation, "must be greater than or equal to 0")
        )
    return causes + check_meta(meta, path=path)
