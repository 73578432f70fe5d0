"""ManifestWork status feedback: values read from an applied object by JSONPath.

Follows the upstream work agent (pkg/work/spoke/statusfeedback): paths are evaluated
against the whole object with missing keys allowed (a missing value is simply absent);
only integer, string and boolean results are reported (raw JSON is behind a feature gate
upstream and off by default). ``WellKnownStatus`` knows Deployments, Jobs and Pods.

The JSONPath subset: ``.field``, ``['field']``, ``[index]`` and equality filters
``[?(@.key=="value")]``, which is what feedback rules use in practice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_WELL_KNOWN: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("apps/v1", "Deployment"): [
        ("ReadyReplicas", ".status.readyReplicas"),
        ("Replicas", ".status.replicas"),
        ("AvailableReplicas", ".status.availableReplicas"),
    ],
    ("batch/v1", "Job"): [
        ("JobComplete", '.status.conditions[?(@.type=="Complete")].status'),
        ("JobSucceeded", ".status.succeeded"),
    ],
    ("v1", "Pod"): [
        ("PodReady", '.status.conditions[?(@.type=="Ready")].status'),
        ("PodPhase", ".status.phase"),
    ],
}

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-]+)
      | \[\s*'(?P<quoted>[^']*)'\s*\]
      | \[\s*"(?P<dquoted>[^"]*)"\s*\]
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*\?\(\s*@\.(?P<fkey>[A-Za-z0-9_\-.]+)\s*==\s*(?:"(?P<fval>[^"]*)"|'(?P<fval2>[^']*)'|(?P<fnum>-?\d+))\s*\)\s*\]
    """,
    re.VERBOSE,
)


class FeedbackError(ValueError):
    """A rule could not be evaluated (bad path, unsupported value type)."""


@dataclass(frozen=True)
class _Step:
    kind: str  # "field" | "index" | "filter"
    key: str = ""
    index: int = 0
    value: str = ""


def _parse(path: str) -> list[_Step]:
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[_Step] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise FeedbackError(
                f"cannot parse JSONPath {path!r} at {text[position:]!r}: use .field, [n] "
                'or [?(@.key=="value")]'
            )
        if match.group("field") is not None:
            steps.append(_Step("field", key=match.group("field")))
        elif match.group("quoted") is not None or match.group("dquoted") is not None:
            steps.append(_Step("field", key=match.group("quoted") or match.group("dquoted") or ""))
        elif match.group("index") is not None:
            steps.append(_Step("index", index=int(match.group("index"))))
        else:
            value = match.group("fval")
            if value is None:
                value = (
                    match.group("fval2")
                    if match.group("fval2") is not None
                    else match.group("fnum")
                )
            steps.append(_Step("filter", key=match.group("fkey"), value=value or ""))
        position = match.end()
    return steps


def _nested(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return None
        obj = obj[part]
    return obj


def evaluate(path: str, obj: Mapping[str, Any]) -> list[Any]:
    """All values the path selects (empty when something along it is missing)."""
    current: list[Any] = [obj]
    for step in _parse(path):
        following: list[Any] = []
        for item in current:
            if step.kind == "field":
                if isinstance(item, Mapping) and step.key in item:
                    following.append(item[step.key])
            elif step.kind == "index":
                if isinstance(item, list) and -len(item) <= step.index < len(item):
                    following.append(item[step.index])
            elif isinstance(item, list):
                following.extend(
                    e
                    for e in item
                    if isinstance(e, Mapping) and str(_nested(e, step.key)) == step.value
                )
        current = following
    return current


def _field_value(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "Boolean", "boolean": value}
    if isinstance(value, int):
        return {"type": "Integer", "integer": value}
    if isinstance(value, str):
        return {"type": "String", "string": value}
    raise FeedbackError(f"the type {type(value).__name__} of the value for {name} is not supported")


def values_for_rules(
    obj: Mapping[str, Any], rules: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Feedback values for an object and the errors met; values keep rule order."""
    values: list[dict[str, Any]] = []
    errors: list[str] = []
    version = str(obj.get("apiVersion", "")).rsplit("/", 1)[-1]
    for rule in rules:
        paths: list[tuple[str, str, str]]
        if rule.get("type") == "WellKnownStatus":
            known = _WELL_KNOWN.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
            if not known:
                errors.append(
                    "cannot find the wellknown statuses for resource with gvk "
                    f"{obj.get('apiVersion')}, Kind={obj.get('kind')}"
                )
                continue
            paths = [(name, path, "") for name, path in known]
        else:
            paths = [
                (str(p.get("name", "")), str(p.get("path", "")), str(p.get("version") or ""))
                for p in rule.get("jsonPaths") or []
            ]
        for name, path, wanted_version in paths:
            if wanted_version and wanted_version != version:
                errors.append(
                    f"version set in the path {name} is not matched for the related resource"
                )
                continue
            try:
                found = evaluate(path, obj)
                if not found or found[0] is None:
                    continue
                if len(found) > 1:
                    raise FeedbackError(f"the path of {name} selects {len(found)} values, not one")
                values.append({"name": name, "fieldValue": _field_value(name, found[0])})
            except FeedbackError as exc:
                errors.append(str(exc))
    return values, errors
