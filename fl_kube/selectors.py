"""Label selectors: build the query string from a LabelSelector object, and match locally.

Controllers keep selectors as Kubernetes ``LabelSelector`` objects (``matchLabels`` and
``matchExpressions``); the API takes the string form. Matching locally is for the cache
(informer contents) and for emulated controllers that select objects by labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist (Equals/NotEquals map to In/NotIn)
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        raise ValueError(f"unknown selector operator {self.operator!r}")

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        if len(self.values) == 1:
            op = "=" if self.operator == "In" else "!="
            return f"{self.key}{op}{self.values[0]}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


def requirements_from_object(
    selector: Mapping[str, Any] | None, *, field_path: str = "selector"
) -> list[Requirement]:
    """Requirements of a ``LabelSelector`` object; ``ValueError`` names the bad field."""
    if not selector:
        return []
    requirements: list[Requirement] = []
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise ValueError(f"{field_path}.matchLabels must be a map of strings")
    for key, value in sorted(match_labels.items()):
        requirements.append(Requirement(str(key), "In", (str(value),)))
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, Sequence):
        raise ValueError(f"{field_path}.matchExpressions must be a list")
    for index, expression in enumerate(expressions):
        where = f"{field_path}.matchExpressions[{index}]"
        if not isinstance(expression, Mapping) or not expression.get("key"):
            raise ValueError(f"{where}.key is required")
        operator = expression.get("operator")
        if operator not in _OPERATORS:
            raise ValueError(f"{where}.operator must be one of {', '.join(_OPERATORS)}")
        values = tuple(str(v) for v in expression.get("values") or [])
        if operator in ("In", "NotIn") and not values:
            raise ValueError(f"{where}.values must be non-empty for operator {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"{where}.values must be empty for operator {operator}")
        requirements.append(Requirement(str(expression["key"]), str(operator), values))
    return requirements


def selector_to_string(selector: Mapping[str, Any] | None) -> str:
    """The ``labelSelector`` query string for a ``LabelSelector`` object ("" selects all)."""
    return ",".join(str(r) for r in requirements_from_object(selector))


def labels_to_selector(labels: Mapping[str, str]) -> str:
    """``a=1,b=2`` from a plain map (the common case of owned objects)."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


_TOKEN = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<nkey>[^\s,=!()]+)"
    r"|(?P<key>[^\s,=!()]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,=!()]*)"
    r"|\s(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?)\s*(?:,|$)"
)


def parse_selector(text: str) -> list[Requirement]:
    """Parse the string grammar (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``)."""
    requirements: list[Requirement] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"invalid label selector {text!r} at position {position}")
        position = match.end()
        if match.group("not"):
            requirements.append(Requirement(match.group("nkey"), "DoesNotExist"))
        elif match.group("op"):
            operator = "NotIn" if match.group("op") == "!=" else "In"
            requirements.append(Requirement(match.group("key"), operator, (match.group("value"),)))
        elif match.group("setop"):
            values = tuple(v.strip() for v in match.group("set").split(",") if v.strip())
            operator = "In" if match.group("setop") == "in" else "NotIn"
            requirements.append(Requirement(match.group("key"), operator, values))
        else:
            requirements.append(Requirement(match.group("key"), "Exists"))
    return requirements


def matches(selector: str | Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether ``labels`` satisfy a selector string or ``LabelSelector`` object.

    An empty or absent selector selects everything, as in Kubernetes.
    """
    if isinstance(selector, str):
        requirements = parse_selector(selector)
    else:
        requirements = requirements_from_object(selector)
    actual = labels or {}
    return all(r.matches(actual) for r in requirements)
