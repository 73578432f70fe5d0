"""Structural-schema behaviour of custom resources, as kube-apiserver applies it:
prune unknown fields, drop nulls of non-nullable fields, fill defaults, validate.

Messages follow kube-openapi's wording so clients see what a real cluster says.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from typing import Any

from . import embedded
from .metadata import Cause, parse_time

Schema = dict[str, Any]
_META_KEYS = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def _embedded(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-embedded-resource"))


# ---- pruning ----
def prune(
    value: Any,
    schema: Schema | None,
    *,
    path: str = "",
    root: bool = False,
    pruned: list[str] | None = None,
) -> Any:
    """Return value without the fields the schema does not declare (list pruned paths);
    embedded resources' metadata is pruned to ObjectMeta (EmbeddedTypeError if it does not
    decode)."""
    if schema is None:
        return value
    if isinstance(value, dict):
        if _embedded(schema) and not root:
            value = embedded.coerce(value, path=path, unknown=pruned if pruned is not None else [])
        props: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        keep_meta = root or _embedded(schema)
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub_path = _join(path, key)
            if keep_meta and key in _META_KEYS:
                out[key] = item
            elif key in props:
                sub = props[key]
                if item is None and not sub.get("nullable"):
                    continue  # nulls of non-nullable fields are pruned before defaulting
                out[key] = prune(item, sub, path=sub_path, pruned=pruned)
            elif isinstance(additional, dict):
                out[key] = prune(item, additional, path=sub_path, pruned=pruned)
            elif additional is True or _preserves(schema):
                out[key] = item
            elif pruned is not None:
                pruned.append(sub_path)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [
                prune(v, items, path=f"{path}[{n}]", pruned=pruned) for n, v in enumerate(value)
            ]
    return value


# ---- defaulting ----
def apply_defaults(value: Any, schema: Schema | None, *, root: bool = False) -> Any:
    """Fill `default`s of absent fields, recursively (objects, maps and array items)."""
    if schema is None:
        return value
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        for key, sub in props.items():
            if root and key in _META_KEYS:
                continue
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in list(value):
                if key not in props:
                    value[key] = apply_defaults(value[key], additional)
        return value
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [apply_defaults(v, items) for v in value]
    return value


# ---- validation ----
def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, wanted: str) -> bool:
    actual = _type_name(value)
    if wanted == "number":
        return actual in ("integer", "number")
    return actual == wanted


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _num(n: float) -> str:
    return str(int(n)) if isinstance(n, float) and n.is_integer() else str(n)


def validate(
    value: Any, schema: Schema | None, *, path: str = "", root: bool = False
) -> list[Cause]:
    if schema is None:
        return []
    causes: list[Cause] = []
    _validate(value, schema, path, root, causes)
    return causes


def _validate(value: Any, schema: Schema, path: str, root: bool, causes: list[Cause]) -> None:
    field = path or "<root>"
    if value is None:
        if not schema.get("nullable") and schema.get("type"):
            causes.append(
                (
                    "FieldValueTypeInvalid",
                    field,
                    f'{field}: Invalid value: "null": {field} in body must be of type {schema["type"]}: "null"',
                )
            )
        return
    if schema.get("x-kubernetes-int-or-string"):
        if _type_name(value) not in ("integer", "string"):
            causes.append(
                (
                    "FieldValueTypeInvalid",
                    field,
                    f'{field}: Invalid value: "{_type_name(value)}": {field} in body must be of type integer,string: "{_type_name(value)}"',
                )
            )
            return
    elif schema.get("type") and not _type_ok(value, schema["type"]):
        actual = _type_name(value)
        causes.append(
            (
                "FieldValueTypeInvalid",
                field,
                f'{field}: Invalid value: "{actual}": {field} in body must be of type {schema["type"]}: "{actual}"',
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_show(v) for v in schema["enum"])
        causes.append(
            (
                "FieldValueNotSupported",
                field,
                f"{field}: Unsupported value: {_show(value)}: supported values: {supported}",
            )
        )
    if isinstance(value, str):
        _validate_string(value, schema, field, causes)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, field, causes)
    elif isinstance(value, list):
        _validate_array(value, schema, path, causes)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, root, causes)
    for sub in schema.get("allOf") or ():
        _validate(value, sub, path, root, causes)
    any_of = schema.get("anyOf")
    if (
        any_of
        and not schema.get("x-kubernetes-int-or-string")
        and all(validate(value, sub, path=path) for sub in any_of)
    ):
        causes.append(
            (
                "FieldValueInvalid",
                field,
                f"{field}: Invalid value: {_show(value)}: {field} in body must match at least one schema (anyOf)",
            )
        )
    one_of = schema.get("oneOf")
    if one_of and sum(1 for sub in one_of if not validate(value, sub, path=path)) != 1:
        causes.append(
            (
                "FieldValueInvalid",
                field,
                f"{field}: Invalid value: {_show(value)}: {field} in body must match exactly one schema (oneOf)",
            )
        )


def _validate_string(value: str, schema: Schema, field: str, causes: list[Cause]) -> None:
    shown = _show(value)
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        causes.append(
            (
                "FieldValueTooLong",
                field,
                f"{field}: Too long: may not be more than {schema['maxLength']} bytes",
            )
        )
    if "minLength" in schema and len(value) < schema["minLength"]:
        causes.append(
            (
                "FieldValueInvalid",
                field,
                f"{field}: Invalid value: {shown}: {field} in body should be at least {schema['minLength']} chars long",
            )
        )
    pattern = schema.get("pattern")
    if pattern and not _regex(pattern).search(value):
        causes.append(
            (
                "FieldValueInvalid",
                field,
                f"{field}: Invalid value: {shown}: {field} in body should match '{pattern}'",
            )
        )
    if schema.get("format") == "date-time" and parse_time(value) is None:
        causes.append(
            (
                "FieldValueInvalid",
                field,
                f"{field}: Invalid value: {shown}: {field} in body must be of type date-time: {shown}",
            )
        )


def _validate_number(value: float, schema: Schema, field: str, causes: list[Cause]) -> None:
    shown = _show(value)
    if "minimum" in schema:
        low = schema["minimum"]
        if schema.get("exclusiveMinimum") and value <= low:
            causes.append(
                (
                    "FieldValueInvalid",
                    field,
                    f"{field}: Invalid value: {shown}: {field} in body should be greater than {_num(low)}",
                )
            )
        elif value < low:
            causes.append(
                (
                    "FieldValueInvalid",
                    field,
                    f"{field}: Invalid value: {shown}: {field} in body should be greater than or equal to {_num(low)}",
                )
            )
    if "maximum" in schema:
        high = schema["maximum"]
        if schema.get("exclusiveMaximum") and value >= high:
            causes.append(
                (
                    "FieldValueInvalid",
                    field,
                    f"{field}: Invalid value: {shown}: {field} in body should be less than {_num(high)}",
                )
            )
        elif value > high:
            causes.append(
                (
                    "FieldValueInvalid",
                    field,
                    f"{field}: Invalid value: {shown}: {field} in body should be less than or equal to {_num(high)}",
                )
            )
    multiple = schema.get("multipleOf")
    if multiple and (value / multiple) != int(value / multiple):
        causes.append(
            (
                "FieldValueInvalid",
                field,
                f"{field}: Invalid value: {shown}: {field} in body should be a multiple of {_num(multiple)}",
            )
        )


def _validate_array(value: list[Any], schema: Schema, path: str, causes: list[Cause]) -> None:
    field = path or "<root>"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        causes.append(
            (
                "FieldValueTooMany",
                field,
                f"{field}: Too many: {len(value)}: must have at most {schema['maxItems']} items",
            )
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        causes.append(
            (
                "FieldValueInvalid",
                field,
                f"{field}: Invalid value: {len(value)}: {field} in body should have at least {schema['minItems']} items",
            )
        )
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" or schema.get("uniqueItems"):
        seen: list[Any] = []
        for n, item in enumerate(value):
            if item in seen:
                causes.append(
                    (
                        "FieldValueDuplicate",
                        f"{path}[{n}]",
                        f"{path}[{n}]: Duplicate value: {_show(item)}",
                    )
                )
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[tuple[Any, ...]] = []
        for n, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            k = tuple(item.get(key) for key in keys)
            if k in seen_keys:
                shown = "{" + ",".join(f'"{key}":{_show(item.get(key))}' for key in keys) + "}"
                causes.append(
                    (
                        "FieldValueDuplicate",
                        f"{path}[{n}]",
                        f"{path}[{n}]: Duplicate value: map[string]interface {{}}{shown}",
                    )
                )
            seen_keys.append(k)
    items = schema.get("items")
    if isinstance(items, dict):
        for n, item in enumerate(value):
            _validate(item, items, f"{path}[{n}]", False, causes)


def _validate_object(
    value: dict[str, Any], schema: Schema, path: str, root: bool, causes: list[Cause]
) -> None:
    props: dict[str, Schema] = schema.get("properties") or {}
    for key in schema.get("required") or ():
        if key not in value:
            sub_path = _join(path, key)
            causes.append(("FieldValueRequired", sub_path, f"{sub_path}: Required value"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        field = path or "<root>"
        causes.append(
            (
                "FieldValueTooMany",
                field,
                f"{field}: Too many: {len(value)}: must have at most {schema['maxProperties']} items",
            )
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        field = path or "<root>"
        causes.append(
            (
                "FieldValueInvalid",
                field,
                f"{field}: Invalid value: {len(value)}: {field} in body should have at least {schema['minProperties']} properties",
            )
        )
    if _embedded(schema) and not root:
        causes += embedded.check(value, path=path)
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        sub_path = _join(path, key)
        if root and key == "metadata":
            name_schema = ((props.get("metadata") or {}).get("properties") or {}).get("name")
            if isinstance(item, dict) and name_schema and "name" in item:
                _validate(item["name"], name_schema, "metadata.name", False, causes)
            continue
        if root and key in ("apiVersion", "kind"):
            continue
        if key in props:
            _validate(item, props[key], sub_path, False, causes)
        elif isinstance(additional, dict):
            _validate(item, additional, sub_path, False, causes)


# Causes after which kube-apiserver does not evaluate a CRD's CEL rules (and says so).
_BLOCKING = frozenset(
    {
        "FieldValueNotSupported",
        "FieldValueRequired",
        "FieldValueTooLong",
        "FieldValueTooMany",
        "FieldValueTypeInvalid",
    }
)
_NOT_CHECKED: Cause = (
    "FieldValueInvalid",
    "<nil>",
    "<nil>: Invalid value: null: some validation rules were not checked because the object "
    "was invalid; correct the existing errors to complete validation",
)


@lru_cache(maxsize=256)
def _has_cel_rules(schema_json: str) -> bool:
    return '"x-kubernetes-validations"' in schema_json


def process(obj: dict[str, Any], schema: Schema) -> tuple[dict[str, Any], list[str], list[Cause]]:
    """Prune, default and validate a whole custom resource; returns (obj, pruned, causes).
    CEL rules are not evaluated, but a schema that has them gets kube's cause saying they
    were not checked when a blocking error was found."""
    pruned: list[str] = []
    out = prune(obj, schema, root=True, pruned=pruned)
    out = apply_defaults(out, schema, root=True)
    causes = validate(out, schema, root=True)
    if any(reason in _BLOCKING for reason, _, _ in causes) and _has_cel_rules(
        json.dumps(schema, sort_keys=True)
    ):
        causes.append(_NOT_CHECKED)
    return out, pruned, causes
