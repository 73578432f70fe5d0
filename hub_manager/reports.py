"""Reading what the agents publish: round reports in their ManagedClusterAddOn conditions,
dataset sizes in their ClusterClaims (copied into the ManagedCluster's status)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fl_contract import naming
from fl_contract.models import RoundReport, claimed_samples


@dataclass(frozen=True)
class AddonView:
    """What the hub needs of one cluster's ManagedClusterAddOn."""

    cluster: str
    available: bool
    agent_namespace: str | None
    conditions: tuple[dict[str, Any], ...]

    @classmethod
    def of(cls, addon: dict[str, Any]) -> AddonView:
        metadata = addon.get("metadata") or {}
        status = addon.get("status") or {}
        conditions = tuple(c for c in status.get("conditions") or [] if isinstance(c, dict))
        available = any(
            c.get("type") == "Available" and c.get("status") == "True" for c in conditions
        )
        namespace = status.get("namespace") or None
        deleting = bool(metadata.get("deletionTimestamp"))
        return cls(
            cluster=str(metadata.get("namespace") or ""),
            available=available and bool(namespace) and not deleting,
            agent_namespace=str(namespace) if namespace else None,
            conditions=conditions,
        )


@dataclass(frozen=True)
class ReportView:
    """A parsed report, or why the condition could not be read."""

    cluster: str
    report: RoundReport | None
    error: str | None = None


def read_report(addon: AddonView, *, fl_namespace: str, fl_name: str) -> ReportView | None:
    """The job's report in one cluster's add-on status, None when it has none."""
    wanted = naming.round_condition_type(fl_namespace, fl_name)
    for condition in addon.conditions:
        if condition.get("type") != wanted:
            continue
        try:
            report = RoundReport.from_message(str(condition.get("message") or ""))
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[0][:200]
            return ReportView(cluster=addon.cluster, report=None, error=first)
        return ReportView(cluster=addon.cluster, report=report)
    return None


@dataclass(frozen=True)
class DatasetSize:
    """How many samples a cluster publishes for a dataset, and the claim that says so."""

    dataset: str
    samples: int
    claim: str


def published_size(managed_cluster: dict[str, Any] | None, dataset: str) -> DatasetSize | None:
    """The `samples=N` of the cluster's dataset ClusterClaim; None when it publishes none."""
    claim = naming.dataset_claim_name(dataset)
    for entry in ((managed_cluster or {}).get("status") or {}).get("clusterClaims") or []:
        if isinstance(entry, dict) and entry.get("name") == claim:
            samples = claimed_samples(str(entry.get("value") or ""))
            return DatasetSize(dataset, samples, claim) if samples is not None else None
    return None
