"""Placement scheduling as pure functions: which clusters a Placement selects, and the
PlacementDecision objects and Placement status that describe the choice.

Follows the upstream scheduler (open-cluster-management-io/ocm, pkg/placement): clusters
come only from ManagedClusterSets bound to the Placement's namespace (a binding counts when
its set exists), narrowed to ``spec.clusterSets`` when given; predicates are ORed, each one's
labelSelector AND claimSelector; clusters tainted ``NoSelect`` are skipped unless tolerated;
``numberOfClusters`` keeps clusters already decided first (upstream's Steady prioritizer),
then takes the rest by name. Decisions are split into objects of at most 100 clusters,
named ``<placement>-decision-<k>`` with k from 1; an empty result still has one (empty)
PlacementDecision, as on a real hub.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from fl_sandbox.ocm import conditions as cond
from fl_sandbox.ocm.selectors import (
    SelectorError,
    labels_of,
    matches_cluster_selector,
    matches_label_selector,
    validate_label_selector,
)

MAX_DECISIONS_PER_OBJECT: Final = 100
PLACEMENT_LABEL: Final = "cluster.open-cluster-management.io/placement"
DECISION_GROUP_INDEX_LABEL: Final = "cluster.open-cluster-management.io/decision-group-index"
DECISION_GROUP_NAME_LABEL: Final = "cluster.open-cluster-management.io/decision-group-name"
CLUSTER_SET_LABEL: Final = "cluster.open-cluster-management.io/clusterset"
PLACEMENT_API_VERSION: Final = "cluster.open-cluster-management.io/v1beta1"
SATISFIED: Final = "PlacementSatisfied"
MISCONFIGURED: Final = "PlacementMisconfigured"


@dataclass
class ScheduleResult:
    """What one scheduling pass decided, plus the counts the conditions are built from."""

    selected: list[str]
    eligible_sets: list[str]
    bindings: int
    available: int
    feasible: int
    unscheduled: int
    misconfigured: str | None = None
    groups: list[tuple[str, list[str]]] = field(default_factory=list)


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def set_members(
    cluster_set: Mapping[str, Any], clusters: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The clusters a ManagedClusterSet holds (exclusive label or label selector)."""
    selector = (cluster_set.get("spec") or {}).get("clusterSelector") or {}
    kind = selector.get("selectorType") or "ExclusiveClusterSetLabel"
    name = _name(cluster_set)
    if kind == "LabelSelector":
        label_selector = selector.get("labelSelector") or {}
        try:
            return [c for c in clusters if matches_label_selector(label_selector, labels_of(c))]
        except SelectorError:
            return []
    return [c for c in clusters if labels_of(c).get(CLUSTER_SET_LABEL) == name]


def _tolerated(
    taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]], now: dt.datetime
) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        operator = toleration.get("operator") or "Equal"
        key = toleration.get("key")
        if operator == "Exists":
            if key and key != taint.get("key"):
                continue
        elif key != taint.get("key") or (toleration.get("value") or "") != (
            taint.get("value") or ""
        ):
            continue
        seconds = toleration.get("tolerationSeconds")
        added = taint.get("timeAdded")
        if seconds is not None and added:
            start = dt.datetime.fromisoformat(str(added).replace("Z", "+00:00"))
            if now >= start + dt.timedelta(seconds=int(seconds)):
                continue
        return True
    return False


def _schedulable(
    cluster: Mapping[str, Any],
    tolerations: Sequence[Mapping[str, Any]],
    *,
    decided: set[str],
    now: dt.datetime,
) -> bool:
    for taint in (cluster.get("spec") or {}).get("taints") or []:
        effect = taint.get("effect")
        if effect == "PreferNoSelect":
            continue
        if effect == "NoSelectIfNew" and _name(cluster) in decided:
            continue
        if not _tolerated(taint, tolerations, now):
            return False
    return True


def _check_placement(spec: Mapping[str, Any]) -> None:
    for index, predicate in enumerate(spec.get("predicates") or []):
        selector = predicate.get("requiredClusterSelector") or {}
        where = f"spec.predicates[{index}].requiredClusterSelector"
        validate_label_selector(selector.get("labelSelector"), field=f"{where}.labelSelector")
        claim = selector.get("claimSelector") or {}
        validate_label_selector(
            {"matchExpressions": claim.get("matchExpressions") or []},
            field=f"{where}.claimSelector",
        )
        if (selector.get("celSelector") or {}).get("celExpressions"):
            raise SelectorError(f"{where}.celSelector: CEL expressions are not evaluated here")
    number = spec.get("numberOfClusters")
    if number is not None and int(number) < 0:
        raise SelectorError("spec.numberOfClusters: must not be negative")


def _group_length(spec: Mapping[str, Any], total: int) -> int:
    strategy = ((spec.get("decisionStrategy") or {}).get("groupStrategy") or {}).get(
        "clustersPerDecisionGroup", "100%"
    )
    length = total
    if isinstance(strategy, int):
        length = strategy
    elif isinstance(strategy, str) and strategy.endswith("%"):
        try:
            length = math.ceil(float(strategy[:-1]) / 100 * total)
        except ValueError as exc:
            raise SelectorError(
                "spec.decisionStrategy.groupStrategy.clustersPerDecisionGroup: "
                f"{strategy!r} is not a percentage"
            ) from exc
    elif isinstance(strategy, str):
        length = int(strategy) if strategy.isdigit() else total
    return total if length <= 0 or length > total else length


def _groups(
    spec: Mapping[str, Any], selected: list[str], by_name: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, list[str]]]:
    length = _group_length(spec, len(selected))
    remaining = sorted(selected)
    groups: list[tuple[str, list[str]]] = []

    def divide(name: str, members: list[str]) -> None:
        members = sorted(members)
        while members:
            groups.append((name, members[:length]))
            members = members[length:]

    strategy = (spec.get("decisionStrategy") or {}).get("groupStrategy") or {}
    for index, group in enumerate(strategy.get("decisionGroups") or []):
        where = f"spec.decisionStrategy.groupStrategy.decisionGroups[{index}]"
        selector = group.get("groupClusterSelector") or {}
        matched = [
            name
            for name in remaining
            if matches_cluster_selector(selector, by_name[name], field=where)
        ]
        remaining = [name for name in remaining if name not in matched]
        divide(str(group.get("groupName", "")), matched)
    divide("", remaining)
    return groups or [("", [])]


def schedule(
    placement: Mapping[str, Any],
    *,
    clusters: Iterable[Mapping[str, Any]],
    cluster_sets: Iterable[Mapping[str, Any]],
    bindings: Iterable[Mapping[str, Any]],
    decided: Iterable[str] = (),
    now: dt.datetime | None = None,
) -> ScheduleResult:
    """Select clusters for one Placement from the given (already listed) objects.

    ``bindings`` are the ManagedClusterSetBindings in the Placement's namespace; ``decided``
    the clusters its current decisions hold (kept first when ``numberOfClusters`` limits).
    """
    moment = now or dt.datetime.now(dt.UTC)
    spec = placement.get("spec") or {}
    all_clusters = [c for c in clusters if not (c.get("metadata") or {}).get("deletionTimestamp")]
    sets_by_name = {_name(s): s for s in cluster_sets}
    valid_bindings = sorted({_name(b) for b in bindings if _name(b) in sets_by_name})
    eligible = valid_bindings
    wanted = list(spec.get("clusterSets") or [])
    if wanted:
        eligible = [name for name in valid_bindings if name in wanted]
    available: dict[str, Mapping[str, Any]] = {}
    for set_name in eligible:
        for cluster in set_members(sets_by_name[set_name], all_clusters):
            available[_name(cluster)] = cluster
    result = ScheduleResult(
        selected=[],
        eligible_sets=eligible,
        bindings=len(valid_bindings),
        available=len(available),
        feasible=0,
        unscheduled=0,
    )
    try:
        _check_placement(spec)
        predicates = spec.get("predicates") or []
        tolerations = spec.get("tolerations") or []
        previous = set(decided)
        feasible: list[str] = []
        for name in sorted(available):
            cluster = available[name]
            if predicates and not any(
                matches_cluster_selector(
                    p.get("requiredClusterSelector"),
                    cluster,
                    field=f"spec.predicates[{i}].requiredClusterSelector",
                )
                for i, p in enumerate(predicates)
            ):
                continue
            if not _schedulable(cluster, tolerations, decided=previous, now=moment):
                continue
            feasible.append(name)
        result.feasible = len(feasible)
        chosen = feasible
        number = spec.get("numberOfClusters")
        if number is not None:
            ordered = [n for n in feasible if n in previous] + [
                n for n in feasible if n not in previous
            ]
            chosen = ordered[: int(number)]
            result.unscheduled = max(int(number) - len(chosen), 0)
        result.selected = sorted(chosen)
        result.groups = _groups(spec, result.selected, available)
    except SelectorError as exc:
        result.misconfigured = str(exc)
        result.selected = []
        result.groups = [("", [])]
    return result


def satisfied_condition(placement: Mapping[str, Any], result: ScheduleResult) -> dict[str, Any]:
    """``PlacementSatisfied`` with the upstream reasons and messages."""
    wanted = list((placement.get("spec") or {}).get("clusterSets") or [])
    if result.bindings == 0:
        return cond.condition(
            SATISFIED,
            False,
            reason="NoManagedClusterSetBindings",
            message="No valid ManagedClusterSetBindings found in placement namespace",
        )
    if not result.eligible_sets:
        return cond.condition(
            SATISFIED,
            False,
            reason="NoIntersection",
            message=f"None of ManagedClusterSets [{','.join(wanted)}] is bound to placement namespace",
        )
    if result.available == 0:
        return cond.condition(
            SATISFIED,
            False,
            reason="AllManagedClusterSetsEmpty",
            message=f"All ManagedClusterSets [{','.join(result.eligible_sets)}] have no member ManagedCluster",
        )
    if result.misconfigured:
        return cond.condition(
            SATISFIED, False, reason="NotAllDecisionsScheduled", message=result.misconfigured
        )
    if result.feasible == 0:
        return cond.condition(
            SATISFIED,
            False,
            reason="NoManagedClusterMatched",
            message="No ManagedCluster matches any of the cluster predicate",
        )
    if result.unscheduled == 0:
        return cond.condition(
            SATISFIED,
            True,
            reason="AllDecisionsScheduled",
            message="All cluster decisions scheduled",
        )
    return cond.condition(
        SATISFIED,
        False,
        reason="NotAllDecisionsScheduled",
        message=f"{result.unscheduled} cluster decisions unscheduled",
    )


def misconfigured_condition(result: ScheduleResult) -> dict[str, Any]:
    """``PlacementMisconfigured``: True with the field at fault, False when the spec is usable."""
    if result.misconfigured:
        return cond.condition(
            MISCONFIGURED, True, reason="Misconfigured", message=result.misconfigured
        )
    return cond.condition(
        MISCONFIGURED,
        False,
        reason="Succeedconfigured",
        message="Placement configurations check pass",
    )


@dataclass(frozen=True)
class DecisionObject:
    """One PlacementDecision to exist: its name, labels and cluster names."""

    name: str
    group_index: int
    group_name: str
    clusters: tuple[str, ...]

    def labels(self, placement_name: str) -> dict[str, str]:
        return {
            PLACEMENT_LABEL: placement_name,
            DECISION_GROUP_INDEX_LABEL: str(self.group_index),
            DECISION_GROUP_NAME_LABEL: self.group_name,
        }

    def status(self) -> dict[str, Any]:
        return {"decisions": [{"clusterName": c, "reason": ""} for c in self.clusters]}


def decision_objects(placement_name: str, result: ScheduleResult) -> list[DecisionObject]:
    """The PlacementDecisions for a result: groups in order, each split into chunks of 100."""
    objects: list[DecisionObject] = []
    index = 1
    for group_index, (group_name, members) in enumerate(result.groups or [("", [])]):
        chunks = [
            members[i : i + MAX_DECISIONS_PER_OBJECT]
            for i in range(0, len(members), MAX_DECISIONS_PER_OBJECT)
        ] or [[]]
        for chunk in chunks:
            objects.append(
                DecisionObject(
                    name=f"{placement_name}-decision-{index}",
                    group_index=group_index,
                    group_name=group_name,
                    clusters=tuple(chunk),
                )
            )
            index += 1
    return objects


def decision_body(placement: Mapping[str, Any], decision: DecisionObject) -> dict[str, Any]:
    """The PlacementDecision object to create (owned by the Placement, as upstream)."""
    meta = placement.get("metadata") or {}
    return {
        "apiVersion": PLACEMENT_API_VERSION,
        "kind": "PlacementDecision",
        "metadata": {
            "name": decision.name,
            "namespace": meta.get("namespace"),
            "labels": decision.labels(str(meta.get("name"))),
            "ownerReferences": [
                {
                    "apiVersion": PLACEMENT_API_VERSION,
                    "kind": "Placement",
                    "name": meta.get("name"),
                    "uid": meta.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
    }


def placement_status(
    placement: Mapping[str, Any],
    result: ScheduleResult,
    decisions: Sequence[DecisionObject],
    *,
    now: str | None = None,
) -> dict[str, Any]:
    """The Placement status to hold: count (omitted when 0), groups and conditions."""
    current = placement.get("status") or {}
    groups: list[dict[str, Any]] = []
    for group_index, (group_name, members) in enumerate(result.groups or [("", [])]):
        groups.append(
            {
                "decisionGroupIndex": group_index,
                "decisionGroupName": group_name,
                "decisions": [d.name for d in decisions if d.group_index == group_index],
                "clusterCount": len(members),
            }
        )
    status: dict[str, Any] = {
        key: value
        for key, value in current.items()
        if key not in ("numberOfSelectedClusters", "decisionGroups", "conditions")
    }
    if result.selected:
        status["numberOfSelectedClusters"] = len(result.selected)
    status["decisionGroups"] = groups
    status["conditions"] = cond.set_conditions(
        current.get("conditions"),
        [satisfied_condition(placement, result), misconfigured_condition(result)],
        now=now,
    )
    return status
