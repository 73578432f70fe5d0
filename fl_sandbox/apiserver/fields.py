"""Field ownership (metadata.managedFields) and server-side apply.

Ownership is tracked per leaf field (`spec.server.rounds`, `data.key`,
`metadata.labels.app`), with maps recursed, keyed lists (`status.conditions` by type,
containers by name) recursed per entry and other lists owned as a whole, which is how
structured-merge-diff sees the built-in kinds; custom resources' list-map keys come from the
same well-known names rather than from their schemas.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

from .builtin_types import MERGE_KEYS
from .errors import ApiError
from .metadata import now

Path = tuple[str, ...]
_SKIP_TOP = ("apiVersion", "kind", "metadata")
_META_MAPS = ("labels", "annotations")
_META_LISTS = ("finalizers", "ownerReferences")


def _list_key(field: str, value: Any) -> str | None:
    """The merge key of a keyed list (containers by name, conditions by type), if it is one."""
    if not isinstance(value, list) or not value or field not in MERGE_KEYS:
        return None
    key = MERGE_KEYS[field]
    if field == "ports":
        key = (
            "containerPort"
            if any(isinstance(i, dict) and "containerPort" in i for i in value)
            else "port"
        )
    return key if all(isinstance(i, dict) and key in i for i in value) else None


def _item_token(key: str, item: dict[str, Any]) -> str:
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"))


def _walk(value: Any, prefix: Path, leaves: dict[Path, Any]) -> None:
    """Leaf paths: maps recurse, keyed lists recurse per entry, other lists are atomic."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _walk(item, (*prefix, key), leaves)
        return
    list_key = _list_key(prefix[-1], value) if prefix else None
    if list_key is None:
        leaves[prefix] = value
        return
    for item in value:
        token = _item_token(list_key, item)
        rest = {k: v for k, v in item.items() if k != list_key}
        if not rest:
            leaves[(*prefix, token)] = item
        for key, sub in rest.items():
            _walk(sub, (*prefix, token, key), leaves)


def field_values(obj: dict[str, Any]) -> dict[Path, Any]:
    """Every owned path of obj with its value."""
    leaves: dict[Path, Any] = {}
    for key, value in obj.items():
        if key not in _SKIP_TOP:
            _walk(value, (key,), leaves)
    meta = obj.get("metadata") or {}
    for section in _META_MAPS:
        for k, v in (meta.get(section) or {}).items():
            leaves[("metadata", section, k)] = v
    for section in _META_LISTS:
        if meta.get(section):
            leaves[("metadata", section)] = meta[section]
    return leaves


def field_paths(obj: dict[str, Any]) -> set[Path]:
    return set(field_values(obj))


_MISSING = object()


@lru_cache(maxsize=4096)
def _token_fields(token: str) -> tuple[tuple[str, Any], ...]:
    return tuple(json.loads(token[2:]).items())


def _find_item(items: list[Any], token: str) -> int | None:
    wanted = _token_fields(token)
    for n, item in enumerate(items):
        if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted):
            return n
    return None


def read_path(obj: Any, path: Path) -> Any:
    cur = obj
    for part in path:
        if part.startswith("k:") and isinstance(cur, list):
            pos = _find_item(cur, part)
            if pos is None:
                return _MISSING
            cur = cur[pos]
            continue
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _delete_path(obj: dict[str, Any], path: Path) -> None:
    """Remove a leaf; parents left empty (and keyed entries left with only their key) go too."""
    parent = read_path(obj, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        parent.pop(last, None)
    elif isinstance(parent, list) and last.startswith("k:"):
        pos = _find_item(parent, last)
        if pos is not None:
            parent.pop(pos)
    if len(path) < 2 or path[0] == "metadata":
        return
    holder = read_path(obj, path[:-1])
    emptied = holder in ({}, [])
    if path[-2].startswith("k:") and isinstance(holder, dict):
        emptied = set(holder) <= set(json.loads(path[-2][2:]))  # only the key is left
    if emptied:
        _delete_path(obj, path[:-1])


def _to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        cur = tree
        for part in path:
            cur = cur.setdefault(part if part.startswith("k:") else f"f:{part}", {})
    return tree


def _from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, sub in tree.items():
        if key.startswith("f:"):
            path = (*prefix, key[2:])
        elif key.startswith("k:"):
            path = (*prefix, key)
        else:
            continue
        if isinstance(sub, dict) and any(k.startswith(("f:", "k:")) for k in sub):
            paths |= _from_fields_v1(sub, path)
        else:
            paths.add(path)
    return paths


def _ownership(obj: dict[str, Any]) -> list[tuple[str, str, set[Path], str]]:
    out = []
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        paths = _from_fields_v1(entry.get("fieldsV1") or {})
        out.append(
            (
                entry.get("manager", ""),
                entry.get("operation", "Update"),
                paths,
                entry.get("subresource", ""),
            )
        )
    return out


def _write_ownership(
    obj: dict[str, Any],
    owners: list[tuple[str, str, set[Path], str]],
    api_version: str,
    changed: set[tuple[str, str]],
) -> None:
    old_entries = {
        (e.get("manager"), e.get("operation"), e.get("subresource", "")): e
        for e in obj["metadata"].get("managedFields") or []
    }
    entries = []
    for manager, op, paths, sub in owners:
        if not paths:
            continue
        prev = old_entries.get((manager, op, sub))
        entry: dict[str, Any] = {
            "manager": manager,
            "operation": op,
            "apiVersion": api_version,
            "time": now() if (manager, op) in changed or prev is None else prev.get("time", now()),
            "fieldsType": "FieldsV1",
            "fieldsV1": _to_fields_v1(paths),
        }
        if sub:
            entry["subresource"] = sub
        entries.append(entry)
    if entries:
        obj["metadata"]["managedFields"] = entries
    else:
        obj["metadata"].pop("managedFields", None)


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    api_version: str,
    subresource: str = "",
) -> None:
    """Give `manager` (operation Update) the fields this write changed; others lose them."""
    new_values = field_values(new)
    old_values = field_values(old) if old is not None else {}
    new_paths, old_paths = set(new_values), set(old_values)
    changed = {p for p, v in new_values.items() if old_values.get(p, _MISSING) != v}
    owners = _ownership(new if old is None else old)
    gone = old_paths - new_paths
    result = []
    found = False
    for m, op, paths, sub in owners:
        paths = (paths - changed - gone) & new_paths
        if m == manager and op == "Update" and sub == subresource:
            paths |= changed
            found = True
        result.append((m, op, paths, sub))
    if not found:
        result.append((manager, "Update", changed, subresource))
    _write_ownership(new, result, api_version, {(manager, "Update")} if changed else set())


def _merge_apply(current: Any, applied: Any, field: str = "") -> Any:
    """Merge an apply configuration into the live value: maps recursively, keyed lists by key."""
    if isinstance(applied, dict) and isinstance(current, dict):
        out = dict(current)
        for key, value in applied.items():
            out[key] = _merge_apply(current.get(key), value, key)
        return out
    if isinstance(applied, list) and isinstance(current, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        if field == "ports":
            key = (
                "containerPort"
                if any(isinstance(i, dict) and "containerPort" in i for i in applied)
                else "port"
            )
        if all(isinstance(i, dict) and key in i for i in applied + current):
            out_list = [copy.deepcopy(i) for i in current]
            for item in applied:
                pos = next((n for n, c in enumerate(out_list) if c.get(key) == item[key]), None)
                if pos is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[pos] = _merge_apply(out_list[pos], item)
            return out_list
    return copy.deepcopy(applied)


def server_side_apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    *,
    manager: str,
    force: bool,
    api_version: str,
    subresource: str = "",
    describe: str = "",
) -> dict[str, Any]:
    """The object after `manager` applies `applied`; 409 listing conflicting owners unless force."""
    base = copy.deepcopy(live) if live is not None else {"metadata": {}}
    applied_values = field_values(applied)
    applied_paths = set(applied_values)
    live_values = field_values(live) if live is not None else {}
    owners = _ownership(base)
    conflicts: list[tuple[str, Path]] = []
    if live is not None:
        for m, _op, paths, _sub in owners:
            if m == manager:
                continue
            for p in sorted(paths & applied_paths):
                if live_values.get(p, _MISSING) != applied_values[p]:
                    conflicts.append((m, p))
    if conflicts and not force:
        causes = [
            {
                "type": "FieldManagerConflict",
                "message": f'conflict with "{m}": .{".".join(p)}',
                "field": "." + ".".join(p),
            }
            for m, p in conflicts
        ]
        listed = "; ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
        plural = "s" if len(conflicts) > 1 else ""
        raise ApiError(
            409,
            "Conflict",
            f"Apply failed with {len(conflicts)} conflict{plural}: {listed}",
            details={"name": describe, "causes": causes},
        )
    previously: set[Path] = set()
    for m, op, paths, sub in owners:
        if m == manager and op == "Apply" and sub == subresource:
            previously = paths
    others: set[Path] = set()
    for m, op, paths, sub in owners:
        if not (m == manager and op == "Apply" and sub == subresource):
            others |= paths
    merged = _merge_apply(
        base, {k: v for k, v in applied.items() if k not in ("apiVersion", "kind", "metadata")}
    )
    meta_in = applied.get("metadata") or {}
    meta = dict(merged.get("metadata") or {})
    for section in _META_MAPS:
        if meta_in.get(section):
            meta[section] = {**(meta.get(section) or {}), **meta_in[section]}
    for section in _META_LISTS:
        if meta_in.get(section):
            meta[section] = _merge_apply(meta.get(section) or [], meta_in[section], section)
    merged["metadata"] = meta
    for path in previously - applied_paths - others:
        _delete_path(merged, path)
    result = []
    found = False
    for m, op, paths, sub in owners:
        if m == manager and op == "Apply" and sub == subresource:
            result.append((m, op, applied_paths, sub))
            found = True
        else:
            result.append((m, op, paths - applied_paths if force else paths, sub))
    if not found:
        result.append((manager, "Apply", applied_paths, subresource))

    def content(obj: dict[str, Any] | None) -> Any:
        if obj is None:
            return None
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
        return {**obj, "metadata": meta}

    # A re-apply that changes nothing keeps the entry's time, so it stays a no-op write.
    changed = {(manager, "Apply")} if content(merged) != content(live) else set()
    _write_ownership(merged, result, api_version, changed)
    out: dict[str, Any] = merged
    return out
