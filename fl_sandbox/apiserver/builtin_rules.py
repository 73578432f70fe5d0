"""Defaults and validation kube-apiserver applies to the built-in kinds our code writes."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .builtin_types import ResourceType
from .errors import ApiError
from .metadata import Cause

_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MAX_CONFIG_BYTES = 1024 * 1024


def _required(field: str) -> Cause:
    return ("FieldValueRequired", field, f"{field}: Required value")


def _immutable(field: str) -> Cause:
    return ("FieldValueInvalid", field, f"{field}: Invalid value: field is immutable")


def _config_data(obj: dict[str, Any], *, binary: bool) -> list[Cause]:
    causes: list[Cause] = []
    size = 0
    for section in ("data", "binaryData") if binary else ("data",):
        data = obj.get(section) or {}
        if not isinstance(data, dict):
            causes.append(
                ("FieldValueInvalid", section, f"{section}: Invalid value: must be a map")
            )
            continue
        for key, value in data.items():
            if not _CONFIG_KEY.match(key) or len(key) > 253:
                causes.append(
                    (
                        "FieldValueInvalid",
                        f"{section}[{key}]",
                        f'{section}[{key}]: Invalid value: "{key}": a valid config key must consist of '
                        "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  "
                        "or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    )
                )
            size += len(value) if isinstance(value, str) else 0
    if size > _MAX_CONFIG_BYTES:
        causes.append(
            (
                "FieldValueTooLong",
                "data",
                f"data: Too long: must have at most {_MAX_CONFIG_BYTES} bytes",
            )
        )
    return causes


def _secret(obj: dict[str, Any]) -> list[Cause]:
    string_data = obj.pop("stringData", None) or {}
    data = dict(obj.get("data") or {})
    causes: list[Cause] = []
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            causes.append(
                (
                    "FieldValueInvalid",
                    f"data[{key}]",
                    f'data[{key}]: Invalid value: "<secret data>": {exc}',
                )
            )
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        obj["data"] = data
    if not obj.get("type"):
        obj["type"] = "Opaque"
    return causes + _config_data(obj, binary=False)


def _containers(spec: Any, field: str) -> list[Cause]:
    if not isinstance(spec, dict):
        return [_required(field)]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [_required(f"{field}.containers")]
    causes: list[Cause] = []
    for n, c in enumerate(containers):
        where = f"{field}.containers[{n}]"
        if not isinstance(c, dict) or not c.get("name"):
            causes.append(_required(f"{where}.name"))
        if not isinstance(c, dict) or not c.get("image"):
            causes.append(_required(f"{where}.image"))
    return causes


def _job(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    spec = obj.setdefault("spec", {})
    template = spec.get("template")
    if not isinstance(template, dict):
        return [_required("spec.template")]
    pod_spec = template.get("spec")
    causes = _containers(pod_spec, "spec.template.spec")
    if isinstance(pod_spec, dict) and pod_spec.get("restartPolicy") not in ("OnFailure", "Never"):
        causes.append(
            (
                "FieldValueRequired"
                if "restartPolicy" not in pod_spec
                else "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"',
            )
        )
    for key, default in (("backoffLimit", 6), ("completions", 1), ("parallelism", 1)):
        spec.setdefault(key, default)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    uid = obj["metadata"].get("uid", "")
    labels = {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": obj["metadata"]["name"],
        "controller-uid": uid,
        "job-name": obj["metadata"]["name"],
    }
    if old is None:
        template.setdefault("metadata", {})
        template["metadata"]["labels"] = {**(template["metadata"].get("labels") or {}), **labels}
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    else:
        old_spec = old.get("spec") or {}
        for key in ("template", "selector", "completions", "completionMode"):
            if key in old_spec and spec.get(key) != old_spec.get(key):
                causes.append(_immutable(f"spec.{key}"))
    return causes


_OBJECT_FIELDS = ("spec", "status", "data", "binaryData", "stringData", "roleRef", "involvedObject")
_LIST_FIELDS = ("rules", "subjects", "secrets", "imagePullSecrets")


def check_shapes(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """Decoding errors a typed kind gives for a field of the wrong JSON type (400)."""
    for key in _OBJECT_FIELDS + _LIST_FIELDS:
        if key not in obj or obj[key] is None:
            continue
        want = dict if key in _OBJECT_FIELDS else list
        if not isinstance(obj[key], want):
            raise ApiError(
                400,
                "BadRequest",
                f"json: cannot unmarshal {type(obj[key]).__name__} into Go struct field "
                f"{rtype.kind}.{key} of type {'object' if want is dict else 'array'}",
            )


def apply_builtin_rules(
    rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
) -> list[Cause]:
    """Fill defaults into obj (a private copy) and return what kube-apiserver would reject."""
    check_shapes(rtype, obj)
    gr = rtype.group_resource
    if gr == ("", "namespaces"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("finalizers", ["kubernetes"])
        if old is None:
            obj["status"] = {"phase": "Active"}
        labels = dict(obj["metadata"].get("labels") or {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        obj["metadata"]["labels"] = labels
        return []
    if gr == ("", "configmaps"):
        if (
            old is not None
            and old.get("immutable")
            and (
                obj.get("data") != old.get("data") or obj.get("binaryData") != old.get("binaryData")
            )
        ):
            return [
                (
                    "FieldValueForbidden",
                    "data",
                    "data: Forbidden: field is immutable when `immutable` is set",
                )
            ]
        return _config_data(obj, binary=True)
    if gr == ("", "secrets"):
        return _secret(obj)
    if gr == ("batch", "jobs"):
        return _job(obj, old)
    if gr == ("", "pods"):
        causes = _containers(obj.get("spec"), "spec")
        if isinstance(obj.get("spec"), dict):
            obj["spec"].setdefault("restartPolicy", "Always")
        if old is None:
            obj["status"] = {"phase": "Pending"}
        return causes
    if gr == ("apps", "deployments"):
        spec = obj.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("selector"), dict):
            return [_required("spec.selector")]
        spec.setdefault("replicas", 1)
        return _containers((spec.get("template") or {}).get("spec"), "spec.template.spec")
    return []
