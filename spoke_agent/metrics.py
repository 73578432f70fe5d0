"""The agent's Prometheus metrics, on its own registry, every series registered up front."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fl_kube.metrics import ControllerMetrics

ROUND_RESULTS = ("UpdateReady", "TrainingFailed", "UpdateInvalid")
REPORT_RESULTS = ("Training", "UpdateReady", "TrainingFailed", "UpdateInvalid", "Cleared", "Health")
FAILURE_REASONS = (
    "TrainingFailed",
    "IntegrityError",
    "ObjectNotFound",
    "StoreError",
    "ExamplesExceedDataset",
    "BackoffLimitExceeded",
    "DeadlineExceeded",
    "ResultMissing",
    "ResultInvalid",
    "UpdateMissing",
    "UpdateHashMismatch",
    "DatasetNotFound",
    "RoundSpecInvalid",
    "JobFailed",
    "Other",
)
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)


class AgentMetrics:
    """`federated_learning_agent_*` series plus the controller-runtime ones, on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.controller = ControllerMetrics(self.registry)
        self.rounds_trained_total = Counter(
            "federated_learning_agent_rounds_trained_total",
            "Rounds whose training Job finished, by outcome.",
            ["result"],
            registry=self.registry,
        )
        self.job_duration_seconds = Histogram(
            "federated_learning_agent_job_duration_seconds",
            "Wall time of finished training Jobs, from start to completion or failure.",
            buckets=JOB_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.failures_total = Counter(
            "federated_learning_agent_failures_total",
            "Rounds reported failed, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.reports_total = Counter(
            "federated_learning_agent_reports_total",
            "Status writes to the ManagedClusterAddOn on the hub, by what they reported.",
            ["result"],
            registry=self.registry,
        )
        self.claims_published = Gauge(
            "federated_learning_agent_claims_published",
            "Dataset ClusterClaims this agent currently owns on its cluster.",
            registry=self.registry,
        )
        for result in ROUND_RESULTS:
            self.rounds_trained_total.labels(result=result)
        for result in REPORT_RESULTS:
            self.reports_total.labels(result=result)
        for reason in FAILURE_REASONS:
            self.failures_total.labels(reason=reason)

    def failure(self, reason: str) -> None:
        """Count a failure; reasons outside the known set count as `Other` (bounded labels)."""
        self.failures_total.labels(reason=reason if reason in FAILURE_REASONS else "Other").inc()
