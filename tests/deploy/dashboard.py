"""The Grafana dashboard's queries, and the metric families our components export."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import CollectorRegistry

from .manifests import DASHBOARD

METRIC_PREFIXES = ("federated_learning_", "controller_runtime_", "workqueue_")
# Labels Prometheus adds to every scraped series (the agents' scrape also sets `cluster`).
TARGET_LABELS = {"job", "instance", "cluster"}
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
# Grafana's interval variables, as Grafana would expand them for a short time range.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana variables expanded."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def metric_names(expr: str) -> set[str]:
    return {t for t in _IDENTIFIER.findall(expr) if t.startswith(METRIC_PREFIXES)}


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in _BY.findall(expr) for label in group.split(",")} - {""}


def exported_series() -> dict[str, set[str]]:
    """Series name -> label names, over the hub manager's and an agent's registries."""
    from hub_manager.metrics import HubMetrics
    from spoke_agent.metrics import AgentMetrics

    series: dict[str, set[str]] = {}
    for registry in (HubMetrics(CollectorRegistry()).registry, AgentMetrics().registry):
        for family in registry.collect():
            labels = _family_labels(registry, family.name)
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
            }.get(family.type, ("",))
            for suffix in suffixes:
                extra = {"le"} if suffix == "_bucket" else set()
                series.setdefault(family.name + suffix, set()).update(labels | extra)
    return series


def _family_labels(registry: CollectorRegistry, name: str) -> set[str]:
    collectors = getattr(registry, "_names_to_collectors", {})
    for key in (name, name + "_total"):
        collector = collectors.get(key)
        if collector is not None:
            return set(getattr(collector, "_labelnames", ()))
    return set()
