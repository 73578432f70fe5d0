"""Label and claim selectors as OCM's placement evaluates them.

A ``labelSelector`` is a ``metav1.LabelSelector`` (``matchLabels`` and ``matchExpressions``);
a ``claimSelector`` has ``matchExpressions`` only and is matched against a ManagedCluster's
``status.clusterClaims`` (name -> value) as if they were labels. An invalid selector is a
configuration error of the Placement, reported as ``PlacementMisconfigured``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """The selector cannot be evaluated (unknown operator, missing values, ...)."""


def _check_expression(expr: Mapping[str, Any], *, field: str) -> tuple[str, str, list[str]]:
    key = expr.get("key")
    operator = expr.get("operator")
    values = list(expr.get("values") or [])
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{field}.key: a key is required")
    if operator not in _OPERATORS:
        raise SelectorError(
            f"{field}.operator: {operator!r} is not a valid selector operator "
            f"(use one of {', '.join(_OPERATORS)})"
        )
    if operator in ("In", "NotIn") and not values:
        raise SelectorError(f"{field}.values: operator {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and values:
        raise SelectorError(f"{field}.values: operator {operator} takes no values")
    return key, str(operator), [str(v) for v in values]


def _match_expression(
    labels: Mapping[str, str], key: str, operator: str, values: Sequence[str]
) -> bool:
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    return not present  # DoesNotExist


def validate_label_selector(selector: Mapping[str, Any] | None, *, field: str) -> None:
    """Raise ``SelectorError`` naming the field if the selector cannot be evaluated."""
    if not selector:
        return
    for key, value in (selector.get("matchLabels") or {}).items():
        if not isinstance(value, str):
            raise SelectorError(f"{field}.matchLabels.{key}: the value must be a string")
    for index, expr in enumerate(selector.get("matchExpressions") or []):
        _check_expression(expr, field=f"{field}.matchExpressions[{index}]")


def matches_label_selector(
    selector: Mapping[str, Any] | None, labels: Mapping[str, str], *, field: str = "labelSelector"
) -> bool:
    """Whether ``labels`` satisfy the selector; an empty or missing selector matches all."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for index, expr in enumerate(selector.get("matchExpressions") or []):
        key, operator, values = _check_expression(expr, field=f"{field}.matchExpressions[{index}]")
        if not _match_expression(labels, key, operator, values):
            return False
    return True


def claims_of(cluster: Mapping[str, Any]) -> dict[str, str]:
    """A ManagedCluster's exposed claims (``status.clusterClaims``) as a name -> value map."""
    result: dict[str, str] = {}
    for claim in (cluster.get("status") or {}).get("clusterClaims") or []:
        name = claim.get("name")
        if isinstance(name, str):
            result[name] = str(claim.get("value", ""))
    return result


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """An object's ``metadata.labels``."""
    return dict((obj.get("metadata") or {}).get("labels") or {})


def matches_cluster_selector(
    selector: Mapping[str, Any] | None, cluster: Mapping[str, Any], *, field: str
) -> bool:
    """A ``requiredClusterSelector`` (labelSelector AND claimSelector) against one cluster.

    ``celSelector`` is not evaluated: the caller reports it as misconfiguration.
    """
    if not selector:
        return True
    label_selector = selector.get("labelSelector")
    if not matches_label_selector(
        label_selector, labels_of(cluster), field=f"{field}.labelSelector"
    ):
        return False
    claim_selector = selector.get("claimSelector") or {}
    return matches_label_selector(
        {"matchExpressions": claim_selector.get("matchExpressions") or []},
        claims_of(cluster),
        field=f"{field}.claimSelector",
    )
