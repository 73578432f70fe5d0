"""The job's Placement and ManagedClusterSetBindings, and what the placement decided.

A Placement selects only from ManagedClusterSets bound to its namespace, so the job binds
the sets its placement names (`global` when it names none). Decisions are read from every
PlacementDecision labelled with the placement's name (at most 100 clusters each).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fl_contract import keys, naming
from fl_kube import resources as r

PLACEMENT_LABEL = "cluster.open-cluster-management.io/placement"
DEFAULT_CLUSTER_SET = "global"


def job_labels(obj: dict[str, Any]) -> dict[str, str]:
    metadata = obj["metadata"]
    return {
        keys.LABEL_JOB_UID: str(metadata["uid"]),
        # A label value is at most 63 characters and ends alphanumeric; object names may be
        # longer (the uid label is the one to select by).
        keys.LABEL_JOB_NAME: str(metadata["name"])[:63].rstrip("-."),
        keys.LABEL_JOB_NAMESPACE: str(metadata["namespace"]),
        keys.LABEL_MANAGED_BY: keys.HUB_FIELD_MANAGER,
    }


def owner_reference(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj["metadata"]
    return {
        "apiVersion": r.FEDERATED_LEARNING.api_version,
        "kind": r.FEDERATED_LEARNING.kind,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "blockOwnerDeletion": False,
        "controller": True,
    }


def cluster_sets(placement_spec: dict[str, Any]) -> list[str]:
    sets = [str(s) for s in placement_spec.get("clusterSets") or [] if s]
    return sorted(set(sets)) or [DEFAULT_CLUSTER_SET]


def desired_placement(obj: dict[str, Any], placement_spec: dict[str, Any]) -> dict[str, Any]:
    """The job's Placement: the spec's PlacementSpec as is, owned by the job."""
    metadata = obj["metadata"]
    return {
        "apiVersion": r.PLACEMENT.api_version,
        "kind": r.PLACEMENT.kind,
        "metadata": {
            "name": naming.placement_name(metadata["name"]),
            "namespace": metadata["namespace"],
            "labels": job_labels(obj),
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": copy.deepcopy(placement_spec),
    }


def desired_binding(namespace: str, cluster_set: str) -> dict[str, Any]:
    """A ManagedClusterSetBinding (its name is the set's name)."""
    return {
        "apiVersion": r.MANAGED_CLUSTER_SET_BINDING.api_version,
        "kind": r.MANAGED_CLUSTER_SET_BINDING.kind,
        "metadata": {
            "name": cluster_set,
            "namespace": namespace,
            "labels": {keys.LABEL_MANAGED_BY: keys.HUB_FIELD_MANAGER},
        },
        "spec": {"clusterSet": cluster_set},
    }


@dataclass(frozen=True)
class Selection:
    """What the placement decided: the clusters, and why none when it decided none."""

    clusters: tuple[str, ...]
    satisfied_reason: str | None = None  # PlacementSatisfied reason when False
    satisfied_message: str = ""
    observed: bool = False  # the placement controller has reported on this placement


def selection(placement: dict[str, Any] | None, decisions: Iterable[dict[str, Any]]) -> Selection:
    """Clusters from every PlacementDecision of the placement (duplicates removed)."""
    clusters: set[str] = set()
    for decision in decisions:
        for entry in (decision.get("status") or {}).get("decisions") or []:
            name = entry.get("clusterName")
            if name:
                clusters.add(str(name))
    reason: str | None = None
    message = ""
    observed = False
    if placement is not None:
        status = placement.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PlacementSatisfied":
                observed = True
                if condition.get("status") == "False":
                    reason = str(condition.get("reason") or "NotSatisfied")
                    message = str(condition.get("message") or "")
    return Selection(
        clusters=tuple(sorted(clusters)),
        satisfied_reason=reason,
        satisfied_message=message,
        observed=observed,
    )


def decisions_of(
    all_decisions: Iterable[dict[str, Any]], *, namespace: str, placement: str
) -> list[dict[str, Any]]:
    return [
        d
        for d in all_decisions
        if (d.get("metadata") or {}).get("namespace") == namespace
        and ((d.get("metadata") or {}).get("labels") or {}).get(PLACEMENT_LABEL) == placement
    ]
