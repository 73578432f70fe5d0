"""Label and field selectors with kube-apiserver's grammar and error wording."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, bad_request

_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # "!=" and "notin" match objects without the key, as in Kubernetes.
        return labels.get(self.key) not in self.values if self.key in labels else True


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, raw: str) -> None:
    if not key or not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in {raw!r}")


def _check_value(value: str, raw: str) -> None:
    if len(value) > 63 or not _VALUE.match(value):
        raise bad_request(f"unable to parse requirement: invalid label value {value!r} in {raw!r}")


_SET = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text or not text.strip():
        return []
    reqs: list[Requirement] = []
    for raw in _split_top(text):
        part = raw.strip()
        if not part:
            raise bad_request(
                f"unable to parse requirement: found '', expected: identifier in {text!r}"
            )
        m = _SET.match(part)
        if m:
            key, op, inner = m.group(1), m.group(2), m.group(3)
            values = tuple(v.strip() for v in inner.split(",")) if inner.strip() else ()
            _check_key(key, part)
            for v in values:
                _check_value(v, part)
            if not values:
                raise bad_request(
                    f"unable to parse requirement: for 'in', 'notin' operators, values set can't be empty in {part!r}"
                )
            reqs.append(Requirement(key, op, values))
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, value = (s.strip() for s in part.split(op, 1))
                _check_key(key, part)
                _check_value(value, part)
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
                break
        else:
            if part.startswith("!"):
                key = part[1:].strip()
                _check_key(key, part)
                reqs.append(Requirement(key, "!"))
            else:
                _check_key(part, part)
                reqs.append(Requirement(part, "exists"))
    return reqs


def labels_match(reqs: list[Requirement], obj: Mapping[str, Any]) -> bool:
    if not reqs:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


# Field selectors: metadata.name/namespace everywhere, plus the few kube serves per kind.
def _get(path: str) -> Callable[[Mapping[str, Any]], str]:
    parts = path.split(".")

    def read(obj: Mapping[str, Any]) -> str:
        cur: Any = obj
        for p in parts:
            cur = cur.get(p) if isinstance(cur, Mapping) else None
        if cur is None:
            return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return read


EXTRA_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): (
        "status.phase",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.serviceAccountName",
    ),
    ("", "secrets"): ("type",),
    ("", "namespaces"): ("status.phase",),
    ("", "events"): (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "reason",
        "type",
    ),
    ("batch", "jobs"): ("status.successful",),
}


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    negate: bool
    value: str


def parse_field_selector(text: str | None, gr: tuple[str, str]) -> list[FieldRequirement]:
    if not text or not text.strip():
        return []
    allowed = ("metadata.name", "metadata.namespace", *EXTRA_FIELDS.get(gr, ()))
    reqs: list[FieldRequirement] = []
    for raw in text.split(","):
        part = raw.strip()
        for op in ("!=", "==", "="):
            if op in part:
                path, value = (s.strip() for s in part.split(op, 1))
                break
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if path not in allowed:
            known = ", ".join(f'"{a}"' for a in allowed)
            raise ApiError(
                400,
                "BadRequest",
                f'Unable to find "{gr[0] or "core"}/{gr[1]}" that match label selector "", '
                f'field selector "{text}": field label not supported: {path} (supported: {known})',
            )
        reqs.append(FieldRequirement(path, op == "!=", value))
    return reqs


def selected_name(text: str | None, gr: tuple[str, str]) -> str | None:
    """The name a list or watch asks for with `metadata.name=<name>`, as kube-apiserver's
    request info finds it: RBAC then authorizes the request by that resource name."""
    try:
        reqs = parse_field_selector(text, gr)
    except ApiError:
        return None  # kube-apiserver authorizes an unparsable selector as a plain list
    for r in reqs:
        if r.path == "metadata.name" and not r.negate:
            valid = r.value not in ("", ".", "..") and not any(c in r.value for c in "/%")
            return r.value if valid else None
    return None


def fields_match(reqs: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    for r in reqs:
        actual = _get(r.path)(obj)
        if (actual == r.value) == r.negate:
            return False
    return True
