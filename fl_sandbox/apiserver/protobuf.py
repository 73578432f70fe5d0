"""Decoding the Kubernetes protobuf envelope for the few kinds `kubectl create` sends that way
(Namespace, ConfigMap, Secret, ServiceAccount, RBAC objects). Other kinds answer 415."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# field number -> (json name, type); types: str, bytes, int, bool, Time, map, bmap, [T], or a schema dict
Schema = dict[int, tuple[str, Any]]

_TIME = "Time"
_OWNER: Schema = {
    1: ("kind", "str"),
    3: ("name", "str"),
    4: ("uid", "str"),
    5: ("apiVersion", "str"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
_META: Schema = {
    1: ("name", "str"),
    2: ("generateName", "str"),
    3: ("namespace", "str"),
    5: ("uid", "str"),
    6: ("resourceVersion", "str"),
    7: ("generation", "int"),
    8: ("creationTimestamp", _TIME),
    11: ("labels", "map"),
    12: ("annotations", "map"),
    13: ("ownerReferences", [_OWNER]),
    14: ("finalizers", ["str"]),
}
_RULE: Schema = {
    1: ("verbs", ["str"]),
    2: ("apiGroups", ["str"]),
    3: ("resources", ["str"]),
    4: ("resourceNames", ["str"]),
    5: ("nonResourceURLs", ["str"]),
}
_SUBJECT: Schema = {
    1: ("kind", "str"),
    2: ("apiGroup", "str"),
    3: ("name", "str"),
    4: ("namespace", "str"),
}
_ROLE_REF: Schema = {1: ("apiGroup", "str"), 2: ("kind", "str"), 3: ("name", "str")}
_BINDING: Schema = {1: ("metadata", _META), 2: ("subjects", [_SUBJECT]), 3: ("roleRef", _ROLE_REF)}
_NAMED: Schema = {1: ("name", "str")}
_OBJECT_REF: Schema = {
    1: ("kind", "str"),
    2: ("namespace", "str"),
    3: ("name", "str"),
    4: ("uid", "str"),
    5: ("apiVersion", "str"),
}

_RESOURCE_ATTRS: Schema = {
    1: ("namespace", "str"),
    2: ("verb", "str"),
    3: ("group", "str"),
    4: ("version", "str"),
    5: ("resource", "str"),
    6: ("subresource", "str"),
    7: ("name", "str"),
}
_NON_RESOURCE_ATTRS: Schema = {1: ("path", "str"), 2: ("verb", "str")}

KINDS: dict[str, Schema] = {
    "SelfSubjectAccessReview": {
        1: ("metadata", _META),
        2: (
            "spec",
            {
                1: ("resourceAttributes", _RESOURCE_ATTRS),
                2: ("nonResourceAttributes", _NON_RESOURCE_ATTRS),
            },
        ),
    },
    "SubjectAccessReview": {
        1: ("metadata", _META),
        2: (
            "spec",
            {
                1: ("resourceAttributes", _RESOURCE_ATTRS),
                2: ("nonResourceAttributes", _NON_RESOURCE_ATTRS),
                3: ("user", "str"),
                4: ("groups", ["str"]),
            },
        ),
    },
    "Namespace": {
        1: ("metadata", _META),
        2: ("spec", {1: ("finalizers", ["str"])}),
        3: ("status", {1: ("phase", "str")}),
    },
    "ConfigMap": {
        1: ("metadata", _META),
        2: ("data", "map"),
        3: ("binaryData", "bmap"),
        4: ("immutable", "bool"),
    },
    "Secret": {
        1: ("metadata", _META),
        2: ("data", "bmap"),
        3: ("type", "str"),
        4: ("stringData", "map"),
        5: ("immutable", "bool"),
    },
    "ServiceAccount": {
        1: ("metadata", _META),
        2: ("secrets", [_OBJECT_REF]),
        3: ("imagePullSecrets", [_NAMED]),
        4: ("automountServiceAccountToken", "bool"),
    },
    "Role": {1: ("metadata", _META), 2: ("rules", [_RULE])},
    "ClusterRole": {1: ("metadata", _META), 2: ("rules", [_RULE])},
    "RoleBinding": _BINDING,
    "ClusterRoleBinding": _BINDING,
}


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            out.append((number, data[pos : pos + size]))
            pos += size
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _scalar(kind: str, value: int | bytes) -> Any:
    if kind == "str":
        return value.decode() if isinstance(value, bytes) else str(value)
    if kind == "bytes":
        return base64.b64encode(value).decode() if isinstance(value, bytes) else ""
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value) if isinstance(value, int) else 0
    raise ProtobufError(f"unknown scalar {kind}")


def _message(data: bytes, schema: Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if isinstance(kind, list):
            inner = kind[0]
            item = (
                _message(value, inner)
                if isinstance(inner, dict) and isinstance(value, bytes)
                else _scalar(inner, value)
            )
            out.setdefault(name, []).append(item)
        elif isinstance(kind, dict):
            out[name] = _message(value, kind) if isinstance(value, bytes) else {}
        elif kind in ("map", "bmap"):
            entry = dict(_fields(value)) if isinstance(value, bytes) else {}
            key = _scalar("str", entry.get(1, b""))
            out.setdefault(name, {})[key] = _scalar(
                "bytes" if kind == "bmap" else "str", entry.get(2, b"")
            )
        elif kind == _TIME:
            parts = dict(_fields(value)) if isinstance(value, bytes) else {}
            seconds = parts.get(1, 0)
            stamp = datetime.fromtimestamp(seconds if isinstance(seconds, int) else 0, UTC)
            out[name] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            scalar = _scalar(kind, value)
            if scalar not in ("", False):  # Go's omitempty: empty optional fields are absent
                out[name] = scalar
    return out


def decode(raw: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object; ProtobufError for kinds not listed here."""
    if not raw.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    envelope = dict(_fields(raw[len(MAGIC) :]))
    type_meta = envelope.get(1, b"")
    meta = (
        _message(type_meta, {1: ("apiVersion", "str"), 2: ("kind", "str")})
        if isinstance(type_meta, bytes)
        else {}
    )
    kind = meta.get("kind", "")
    if kind not in KINDS:
        raise ProtobufError(f"protobuf bodies of kind {kind or '?'} are not supported; send JSON")
    body = envelope.get(2, b"")
    obj = _message(body, KINDS[kind]) if isinstance(body, bytes) else {}
    return {"apiVersion": meta.get("apiVersion", ""), "kind": kind, **obj}
