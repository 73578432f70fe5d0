"""controller-runtime's reconcile and workqueue metrics, on a registry the caller owns.

The names and labels match controller-runtime so existing dashboards and alerts work.
Create ONE ``ControllerMetrics`` per registry (per component) and hand it to every
controller of that component; each controller pre-registers its own label values.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")

# controller-runtime's buckets for reconcile time.
RECONCILE_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8,
    0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30,
    40, 50, 60,
)  # fmt: skip
# client-go's workqueue buckets: 10ns .. 1000s, exponential by 10.
WORKQUEUE_BUCKETS = tuple(1e-8 * 10**i for i in range(12))


class ControllerMetrics:
    """The metric families; label children are created by ``register_controller``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=registry,
        )
        self.reconcile_errors_total = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=registry,
        )
        self.terminal_reconcile_errors_total = Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            ["controller"],
            registry=registry,
        )
        self.reconcile_time_seconds = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.max_concurrent_reconciles = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ["controller"],
            registry=registry,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ["controller"],
            registry=registry,
        )
        self.workqueue_depth = Gauge(
            "workqueue_depth", "Current depth of workqueue", ["name"], registry=registry
        )
        self.workqueue_adds_total = Counter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            ["name"],
            registry=registry,
        )
        self.workqueue_queue_duration_seconds = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name"],
            buckets=WORKQUEUE_BUCKETS,
            registry=registry,
        )
        self.workqueue_work_duration_seconds = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            ["name"],
            buckets=WORKQUEUE_BUCKETS,
            registry=registry,
        )
        self.workqueue_retries_total = Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            ["name"],
            registry=registry,
        )
        self.workqueue_unfinished_work_seconds = Gauge(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been "
            "observed by work_duration. Large values indicate stuck threads.",
            ["name"],
            registry=registry,
        )
        self.workqueue_longest_running_processor_seconds = Gauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.",
            ["name"],
            registry=registry,
        )
        self._registered: set[str] = set()

    def register_controller(self, name: str, *, max_concurrent: int) -> None:
        """Pre-register every series of one controller (and its queue) at zero."""
        if name in self._registered:
            raise ValueError(f"controller name {name!r} is already registered on this registry")
        self._registered.add(name)
        for result in RECONCILE_RESULTS:
            self.reconcile_total.labels(controller=name, result=result)
        self.reconcile_errors_total.labels(controller=name)
        self.terminal_reconcile_errors_total.labels(controller=name)
        self.reconcile_time_seconds.labels(controller=name)
        self.max_concurrent_reconciles.labels(controller=name).set(max_concurrent)
        self.active_workers.labels(controller=name).set(0)
        self.register_queue(name)

    def release_controller(self, name: str) -> None:
        """Free ``name`` once its controller stopped; its series stay, so a successor reuses them."""
        self._registered.discard(name)

    def register_queue(self, name: str) -> None:
        """Pre-register the workqueue series for ``name`` at zero."""
        self.workqueue_depth.labels(name=name).set(0)
        self.workqueue_adds_total.labels(name=name)
        self.workqueue_queue_duration_seconds.labels(name=name)
        self.workqueue_work_duration_seconds.labels(name=name)
        self.workqueue_retries_total.labels(name=name)
        self.workqueue_unfinished_work_seconds.labels(name=name).set(0)
        self.workqueue_longest_running_processor_seconds.labels(name=name).set(0)

    def track_in_progress(
        self, name: str, *, unfinished: Callable[[], float], longest: Callable[[], float]
    ) -> None:
        """Compute the in-progress gauges on scrape from the queue's own bookkeeping."""
        self.workqueue_unfinished_work_seconds.labels(name=name).set_function(unfinished)
        self.workqueue_longest_running_processor_seconds.labels(name=name).set_function(longest)
