"""meta.k8s.io/v1 Table responses (what `kubectl get` asks for) and printer-column paths."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .builtin_types import ResourceType
from .metadata import parse_time

_NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE_COLUMN = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
    "priority": 0,
}
_TOKEN = re.compile(
    r"\.([^.\[]+)|\[(\d+)\]|\[\?\(@\.([^=!]+?)\s*==\s*['\"]([^'\"]*)['\"]\)\]|\[(\*)\]"
)


def json_path(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPath printer columns use: .a.b, [0], [*], [?(@.k=="v")]."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    cur = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            return None
        pos = m.end()
        nxt: list[Any] = []
        for value in cur:
            if m.group(1) is not None and isinstance(value, dict) and m.group(1) in value:
                nxt.append(value[m.group(1)])
            elif (
                m.group(2) is not None and isinstance(value, list) and int(m.group(2)) < len(value)
            ):
                nxt.append(value[int(m.group(2))])
            elif m.group(3) is not None and isinstance(value, list):
                nxt += [
                    i
                    for i in value
                    if isinstance(i, dict) and str(i.get(m.group(3).strip())) == m.group(4)
                ]
            elif m.group(5) is not None and isinstance(value, list):
                nxt += value
        cur = nxt
    if len(cur) > 1:
        return ",".join(str(v) for v in cur)
    return cur[0] if cur else None


def human_age(timestamp: str | None) -> str:
    when = parse_time(timestamp or "")
    if when is None:
        return "<unknown>"
    seconds = int((datetime.now(UTC) - when).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _col(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "format": "", "description": name, "priority": 0}


def _count(section: str) -> Callable[[dict[str, Any]], Any]:
    return lambda o: len(o.get(section) or {})


_BUILTIN: dict[tuple[str, str], list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]]] = {
    ("", "namespaces"): [(_col("Status"), lambda o: (o.get("status") or {}).get("phase", ""))],
    ("", "configmaps"): [
        (
            _col("Data", "integer"),
            lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
        )
    ],
    ("", "secrets"): [
        (_col("Type"), lambda o: o.get("type", "")),
        (_col("Data", "integer"), _count("data")),
    ],
    ("", "pods"): [(_col("Status"), lambda o: (o.get("status") or {}).get("phase", ""))],
    ("batch", "jobs"): [
        (
            _col("Completions"),
            lambda o: (
                f"{(o.get('status') or {}).get('succeeded', 0)}/{(o.get('spec') or {}).get('completions', 1)}"
            ),
        )
    ],
    ("coordination.k8s.io", "leases"): [
        (_col("Holder"), lambda o: (o.get("spec") or {}).get("holderIdentity", ""))
    ],
}


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "date":
        return human_age(str(value))
    if kind in ("integer", "number", "boolean") and isinstance(value, int | float | bool):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _reader(path: str, kind: str) -> Callable[[dict[str, Any]], Any]:
    return lambda o: _cell(json_path(o, path), kind)


def columns_for(
    rtype: ResourceType,
) -> list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]]:
    cols: list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]] = [
        (_NAME_COLUMN, lambda o: o["metadata"]["name"])
    ]
    if rtype.printer_columns:
        for pc in rtype.printer_columns:
            kind = pc.get("type", "string")
            definition = {
                "name": pc.get("name", ""),
                "type": "string" if kind == "date" else kind,
                "format": pc.get("format", ""),
                "description": pc.get("description", ""),
                "priority": pc.get("priority", 0),
            }
            path = pc.get("jsonPath", "")
            cols.append((definition, _reader(path, kind)))
        return cols
    cols += _BUILTIN.get(rtype.group_resource, [])
    cols.append((_AGE_COLUMN, lambda o: human_age(o["metadata"].get("creationTimestamp"))))
    return cols


def _row_object(obj: dict[str, Any], include: str) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def table(
    rtype: ResourceType,
    objs: list[dict[str, Any]],
    *,
    resource_version: str,
    include: str,
    with_columns: bool = True,
) -> dict[str, Any]:
    cols = columns_for(rtype)
    rows = []
    for obj in objs:
        row: dict[str, Any] = {"cells": [read(obj) for _, read in cols]}
        body = _row_object(obj, include)
        if body is not None:
            row["object"] = body
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [c for c, _ in cols] if with_columns else [],
        "rows": rows,
    }
