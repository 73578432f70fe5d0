"""The FederatedLearning status: reading progress from it and writing it without churn.

Conditions keep their lastTransitionTime unless their status changes, and lists are
bounded, so writing the same facts twice produces the same status (and no request).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fl_kube.timestamps import format_time, parse_time
from hub_manager.rounds import Phase, Progress

MAX_HISTORY = 100
MAX_REJECTED = 50
MAX_PARTICIPANTS = 1000
MAX_PARTICIPANT_MESSAGE = 256
MAX_ROUND_FAILURES = 20

# Condition types on a FederatedLearning.
SPEC_VALID = "SpecValid"
CLUSTERS_AVAILABLE = "ClustersAvailable"
PROGRESSING = "Progressing"
SUCCEEDED = "Succeeded"
FIELDS_IGNORED = "FieldsIgnored"
ROUND_SPECS_DELIVERED = "RoundSpecsDelivered"

# Why a participant gave no update, when it never said so itself.
_SILENT = {
    "Pending": ("NoReport", "no report by the deadline"),
    "Training": ("StillTraining", "still training at the deadline"),
}


def progress_of(status: Mapping[str, Any]) -> Progress:
    """The state machine's view of a status."""
    phase = status.get("phase")
    model = status.get("model") or {}
    pending = status.get("pendingModel") or {}
    participants = tuple(
        str(p.get("cluster")) for p in status.get("participants") or [] if p.get("cluster")
    )
    return Progress(
        phase=phase if phase in ("Waiting", "Running", "Completed", "Failed") else None,
        round=int(status.get("round") or 0),
        attempt=int(status.get("attempt") or 0),
        participants=participants,
        deadline=parse_time(status.get("roundDeadline")),
        published_round=int(model.get("round") or 0),
        pending_round=int(pending["round"]) if pending.get("round") else None,
    )


def set_condition(
    status: dict[str, Any],
    *,
    type_: str,
    value: bool | None,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> None:
    """Set one condition in place (metav1.Condition shape); keeps the transition time
    when the status value does not change."""
    text = "Unknown" if value is None else ("True" if value else "False")
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    old = next((c for c in conditions if c.get("type") == type_), None)
    transition = (
        old.get("lastTransitionTime")
        if old is not None and old.get("status") == text and old.get("lastTransitionTime")
        else format_time(now)
    )
    new = {
        "type": type_,
        "status": text,
        "reason": reason,
        "message": message[:32768],
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    }
    conditions = [c for c in conditions if c.get("type") != type_] + [new]
    status["conditions"] = sorted(conditions, key=lambda c: str(c.get("type")))


def remove_condition(status: dict[str, Any], type_: str) -> None:
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != type_]
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def set_phase(status: dict[str, Any], phase: Phase, message: str = "") -> None:
    status["phase"] = phase
    if message:
        status["message"] = message[:1024]
    else:
        status.pop("message", None)


def append_bounded(
    status: dict[str, Any], field: str, entries: Iterable[dict[str, Any]], *, limit: int
) -> None:
    items = list(status.get(field) or []) + list(entries)
    status[field] = items[-limit:]


@dataclass(frozen=True)
class ParticipantState:
    """Where one cluster stands in the current round, and why (when it failed)."""

    state: str = "Pending"
    reason: str = ""
    num_examples: int = 0
    message: str = ""
    epsilon: float | None = None  # record-level DP: the cluster's epsilon so far

    def entry(self, cluster: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"cluster": cluster, "state": self.state}
        if self.reason:
            entry["reason"] = self.reason[:128]
        message = self.message.removeprefix(f"{self.reason}: ") if self.reason else self.message
        if message:
            entry["message"] = message[:MAX_PARTICIPANT_MESSAGE]
        if self.num_examples:
            entry["numExamples"] = self.num_examples
        if self.epsilon is not None:
            entry["epsilon"] = self.epsilon
        return entry


def participants_entries(
    participants: Iterable[str], states: Mapping[str, ParticipantState]
) -> list[dict[str, Any]]:
    """Per-cluster state of the current round, by cluster name."""
    return [
        states.get(cluster, ParticipantState()).entry(cluster)
        for cluster in sorted(participants)[:MAX_PARTICIPANTS]
    ]


def set_participant(status: dict[str, Any], cluster: str, state: ParticipantState) -> None:
    """Replace one participant's entry (a cluster not taking part is left out)."""
    status["participants"] = [
        state.entry(cluster) if p.get("cluster") == cluster else p
        for p in status.get("participants") or []
    ]


def round_failures(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Participants of the current round without an accepted update, with the reason and
    message: what a round's history entry keeps of them (at most MAX_ROUND_FAILURES)."""
    failures = []
    for p in status.get("participants") or []:
        state = str(p.get("state") or "Pending")
        if state == "Accepted":
            continue
        reason, message = _SILENT.get(state, ("", ""))
        failures.append(
            {
                "cluster": p.get("cluster"),
                "state": state,
                "reason": str(p.get("reason") or reason or state)[:128],
                "message": str(p.get("message") or message)[:MAX_PARTICIPANT_MESSAGE],
            }
        )
    return failures[:MAX_ROUND_FAILURES]


def failure_summary(status: Mapping[str, Any], *, limit: int = 700) -> str:
    """Why the current round's participants gave no update, grouped by cause:
    `cluster2: DatasetNotFound (dataset ...); cluster1, cluster3: TrainingFailed (...)`."""
    groups: dict[tuple[str, str], list[str]] = {}
    for failure in round_failures(status):
        cause = (failure["reason"], " ".join(failure["message"].split())[:160])
        groups.setdefault(cause, []).append(str(failure["cluster"]))
    parts = []
    for (reason, message), clusters in groups.items():
        names = ", ".join(clusters[:5]) + (
            f" and {len(clusters) - 5} more" if len(clusters) > 5 else ""
        )
        parts.append(f"{names}: {reason}" + (f" ({message})" if message else ""))
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def display_metric(metrics: Mapping[str, float]) -> str | None:
    """The printer column: accuracy when known, else loss."""
    if "accuracy" in metrics:
        return f"accuracy={metrics['accuracy']:.4f}"
    if "loss" in metrics:
        return f"loss={metrics['loss']:.4f}"
    return None


def clone(status: Mapping[str, Any] | None) -> dict[str, Any]:
    return copy.deepcopy(dict(status or {}))
