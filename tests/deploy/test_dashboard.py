"""The Grafana dashboard: well formed, and every query over series our components export."""

from __future__ import annotations

import pytest

from .dashboard import TARGET_LABELS, exported_series, grouping_labels, load, metric_names, queries

DASHBOARD = load()
QUERIES = queries(DASHBOARD)
REQUIRED_TOPICS = (
    "federated_learning_jobs",
    "federated_learning_rounds_completed_total",
    "federated_learning_round_duration_seconds_bucket",
    "federated_learning_aggregated_accuracy",
    "federated_learning_aggregated_loss",
    "federated_learning_updates_total",
    "federated_learning_agent_job_duration_seconds_bucket",
    "controller_runtime_reconcile_total",
    "controller_runtime_reconcile_errors_total",
    "workqueue_depth",
)


def test_dashboard_is_well_formed() -> None:
    assert DASHBOARD["uid"]
    assert DASHBOARD["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24


def test_dashboard_covers_the_promised_panels() -> None:
    used = set().union(*(metric_names(expr) for _, expr in QUERIES))
    assert set(REQUIRED_TOPICS) <= used


@pytest.mark.parametrize(("title", "expr"), QUERIES, ids=[t for t, _ in QUERIES])
def test_query_uses_exported_series_and_labels(title: str, expr: str) -> None:
    series = exported_series()
    names = metric_names(expr)
    assert names, "a query over none of our metrics"
    for name in names:
        assert name in series, f"{title}: {name} is not exported by the hub manager or agent"
        unknown = grouping_labels(expr) - series[name] - TARGET_LABELS
        assert not unknown, f"{title}: {name} has no label {sorted(unknown)}"
