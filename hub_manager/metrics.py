"""The hub manager's `federated_learning_*` metrics, on its own registry.

Job labels (namespace, name) appear only on per-job gauges and counters whose series are
removed when the job is deleted; everything else is labelled by bounded sets (result,
reason, phase).
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fl_kube.metrics import ControllerMetrics

PHASES = ("Waiting", "Running", "Completed", "Failed")
# Rejection reasons the hub gives (its own and the strategies'); others count as "Other".
REJECT_REASONS = (
    "ChecksumMismatch",
    "UpdateMissing",
    "Undecodable",
    "UnexpectedUri",
    "Duplicate",
    "DuplicateClient",
    "Late",
    "NamesMismatch",
    "DtypeMismatch",
    "ShapeMismatch",
    "NonFinite",
    "NoExamples",
    "ExamplesExceedDataset",
    "EmptyUpdate",
    "RoundClosed",
    "ClusterMismatch",
    "InvalidReport",
    "Other",
)
_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_AGGREGATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

DERIVED_KINDS = ("addon_view", "round_spec")


class HubMetrics:
    """Controller-runtime metrics (from fl_kube) plus the federated-learning ones."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.controllers: ControllerMetrics = ControllerMetrics(self.registry)
        self.rounds_completed = Counter(
            "federated_learning_rounds_completed_total",
            "Rounds whose global model was published.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.round_duration = Histogram(
            "federated_learning_round_duration_seconds",
            "From a round's start to the publication of its global model.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.updates = Counter(
            "federated_learning_updates_total",
            "Cluster updates accepted into an aggregate, or rejected with a reason.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.round_participants = Histogram(
            "federated_learning_round_participants",
            "Clusters asked to train in a round.",
            buckets=(1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=self.registry,
        )
        self.aggregated_loss = Gauge(
            "federated_learning_aggregated_loss",
            "Loss of the latest global model of a job.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.aggregated_accuracy = Gauge(
            "federated_learning_aggregated_accuracy",
            "Accuracy of the latest global model of a job.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self.aggregation_duration = Histogram(
            "federated_learning_aggregation_duration_seconds",
            "Time to fetch, verify and fold one update, or to produce a round's result.",
            ["step"],
            buckets=_AGGREGATION_BUCKETS,
            registry=self.registry,
        )
        self.aggregation_bytes = Counter(
            "federated_learning_aggregation_bytes_total",
            "Bytes of updates fetched from the model store and folded in.",
            registry=self.registry,
        )
        self.derived = Counter(
            "federated_learning_hub_derived_total",
            "Per-cluster objects the manager derived: a cluster's add-on view (on each "
            "change of the add-on), a participant's round spec (on each change of its "
            "inputs). Grows with the fleet and its changes, not with the passes over a job.",
            ["kind"],
            registry=self.registry,
        )
        self.jobs = Gauge(
            "federated_learning_jobs",
            "FederatedLearning jobs by phase.",
            ["phase"],
            registry=self.registry,
        )
        self.updates.labels(result="accepted", reason="")
        for reason in REJECT_REASONS:
            self.updates.labels(result="rejected", reason=reason)
        for step in ("fold", "result"):
            self.aggregation_duration.labels(step=step)
        for phase in PHASES:
            self.jobs.labels(phase=phase).set(0)
        for kind in DERIVED_KINDS:
            self.derived.labels(kind=kind)

    def update_rejected(self, reason: str) -> None:
        self.updates.labels(
            result="rejected", reason=reason if reason in REJECT_REASONS else "Other"
        ).inc()

    def update_accepted(self) -> None:
        self.updates.labels(result="accepted", reason="").inc()

    def set_jobs(self, counts: dict[str, int]) -> None:
        for phase in PHASES:
            self.jobs.labels(phase=phase).set(counts.get(phase, 0))

    def job_registered(self, namespace: str, name: str) -> None:
        """Pre-register a job's series so dashboards see zeros, not gaps."""
        self.rounds_completed.labels(namespace=namespace, name=name)

    def forget_job(self, namespace: str, name: str) -> None:
        """Drop a deleted job's series (keeps label cardinality bounded by live jobs)."""
        for metric in (self.rounds_completed, self.aggregated_loss, self.aggregated_accuracy):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, name)
