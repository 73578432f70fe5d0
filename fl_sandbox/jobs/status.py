"""Pod and Job status documents, shaped as the kubelet and the Job controller write them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fl_kube.timestamps import format_time, parse_time
from fl_sandbox.jobs.process import Outcome


def pod_condition(kind: str, status: bool, when: dt.datetime, reason: str = "") -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": kind,
        "status": "True" if status else "False",
        "lastProbeTime": None,
        "lastTransitionTime": format_time(when),
    }
    if reason:
        condition["reason"] = reason
    return condition


def pending_status(
    container: dict[str, Any], *, when: dt.datetime, reason: str = "", message: str = ""
) -> dict[str, Any]:
    waiting: dict[str, Any] = {"reason": reason or "ContainerCreating"}
    if message:
        waiting["message"] = message
    return {
        "phase": "Pending",
        "conditions": [
            pod_condition("PodScheduled", True, when),
            pod_condition("Ready", False, when, "ContainersNotReady"),
        ],
        "hostIP": "127.0.0.1",
        "containerStatuses": [_container_status(container, {"waiting": waiting}, ready=False)],
    }


def running_status(
    container: dict[str, Any], *, started: dt.datetime, pid: int | None = None
) -> dict[str, Any]:
    status = {
        "phase": "Running",
        "startTime": format_time(started),
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "conditions": [
            pod_condition("PodScheduled", True, started),
            pod_condition("Initialized", True, started),
            pod_condition("ContainersReady", True, started),
            pod_condition("Ready", True, started),
        ],
        "containerStatuses": [
            _container_status(
                container, {"running": {"startedAt": format_time(started)}}, ready=True
            )
        ],
    }
    return status


def terminated_status(container: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    terminated: dict[str, Any] = {
        "exitCode": outcome.exit_code,
        "reason": outcome.reason,
        "startedAt": format_time(outcome.started_at),
        "finishedAt": format_time(outcome.finished_at),
    }
    if outcome.message:
        terminated["message"] = outcome.message
    phase = "Succeeded" if outcome.succeeded else "Failed"
    status: dict[str, Any] = {
        "phase": phase,
        "startTime": format_time(outcome.started_at),
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "conditions": [
            pod_condition("PodScheduled", True, outcome.started_at),
            pod_condition("Initialized", True, outcome.started_at),
            pod_condition("ContainersReady", False, outcome.finished_at, "PodCompleted"),
            pod_condition("Ready", False, outcome.finished_at, "PodCompleted"),
        ],
        "containerStatuses": [
            _container_status(container, {"terminated": terminated}, ready=False)
        ],
    }
    if outcome.reason == "DeadlineExceeded":
        status["reason"] = "DeadlineExceeded"
        status["message"] = "Pod was active on the node longer than the specified deadline"
    return status


def _container_status(
    container: dict[str, Any], state: dict[str, Any], *, ready: bool
) -> dict[str, Any]:
    return {
        "name": container.get("name", ""),
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
    }


def job_condition(kind: str, *, reason: str, message: str, when: dt.datetime) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": format_time(when),
        "lastTransitionTime": format_time(when),
    }


def job_finished(job: dict[str, Any]) -> tuple[str, dt.datetime | None] | None:
    """("Complete" | "Failed", when) if the Job has finished, else None."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return str(condition["type"]), parse_time(condition.get("lastTransitionTime"))
    return None


def completed_conditions(when: dt.datetime) -> list[dict[str, Any]]:
    """A successful Job: SuccessCriteriaMet then Complete, as Kubernetes 1.31+ writes."""
    return [
        job_condition(
            "SuccessCriteriaMet",
            reason="CompletionsReached",
            message="Reached expected number of succeeded pods",
            when=when,
        ),
        job_condition(
            "Complete",
            reason="CompletionsReached",
            message="Reached expected number of succeeded pods",
            when=when,
        ),
    ]


def failed_conditions(reason: str, when: dt.datetime) -> list[dict[str, Any]]:
    """A failed Job: FailureTarget then Failed, with the reason Kubernetes uses."""
    message = {
        "BackoffLimitExceeded": "Job has reached the specified backoff limit",
        "DeadlineExceeded": "Job was active longer than specified deadline",
    }.get(reason, reason)
    return [
        job_condition("FailureTarget", reason=reason, message=message, when=when),
        job_condition("Failed", reason=reason, message=message, when=when),
    ]
