"""The Events a status write stands for (pure: two statuses in, events out)."""

from __future__ import annotations

from typing import Any

from hub_manager.job_events import JobEvent, events_between


def cond(type_: str, status: str, reason: str, message: str = "m") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


WAITING = cond("Progressing", "False", "WaitingForClusters", "2 available")


def test_a_new_job_waiting_for_its_placement_is_quiet() -> None:
    assert events_between({}, {"phase": "Waiting", "conditions": [WAITING]}) == []


def test_clusters_lost_after_the_first_round_warn() -> None:
    old = {"round": 2, "conditions": [cond("Progressing", "True", "RoundCompleted")]}
    new = {"round": 2, "phase": "Waiting", "conditions": [WAITING]}
    assert events_between(old, new) == [JobEvent("Warning", "WaitingForClusters", "2 available")]
    assert events_between(new, new) == []


def test_round_started_and_completed() -> None:
    old = {"round": 1, "attempt": 1, "roundStartTime": "t1", "history": []}
    new = {
        "round": 2,
        "attempt": 1,
        "roundStartTime": "t2",
        "roundDeadline": "t3",
        "participants": [{"cluster": "c1", "state": "Pending"}],
        "history": [{"round": 1, "accepted": 1, "participants": 1, "accuracy": 0.5}],
    }
    assert [(e.type, e.reason) for e in events_between(old, new)] == [
        ("Normal", "RoundCompleted"),
        ("Normal", "RoundStarted"),
    ]
    assert "accuracy=0.5000" in events_between(old, new)[0].message


def test_failures_and_rejections_once_each() -> None:
    failed = {"cluster": "c2", "state": "Failed", "reason": "DatasetNotFound", "message": "x"}
    rejected = {"cluster": "c3", "round": 1, "attempt": 1, "reason": "NonFinite", "message": "y"}
    old = {"round": 1, "attempt": 1, "participants": [{"cluster": "c2", "state": "Training"}]}
    new = {"round": 1, "attempt": 1, "participants": [failed], "rejectedUpdates": [rejected]}
    assert events_between(old, new) == [
        JobEvent("Warning", "UpdateRejected", "c3 (round 1): NonFinite: y"),
        JobEvent("Warning", "ClusterFailed", "c2 (round 1): DatasetNotFound: x"),
    ]
    assert events_between(new, new) == []


def test_the_end_of_a_job() -> None:
    running = {"round": 3, "phase": "Running"}
    completed = {
        "round": 3,
        "phase": "Completed",
        "message": "3 rounds completed",
        "conditions": [cond("Progressing", "False", "Completed")],
    }
    assert events_between(running, completed) == [
        JobEvent("Normal", "Completed", "3 rounds completed")
    ]
    failed = {
        "round": 3,
        "phase": "Failed",
        "message": "why",
        "conditions": [
            cond("Progressing", "False", "QuorumNotReached", "why"),
            cond("Succeeded", "False", "QuorumNotReached", "why"),
        ],
    }
    assert events_between(running, failed) == [JobEvent("Warning", "QuorumNotReached", "why")]
