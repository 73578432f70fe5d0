"""The Kubernetes Events of a FederatedLearning job, derived from what its status write
changed: a round started or ended, an update was rejected, a cluster failed, a condition
turned bad (or good again), the job finished.

Deriving them from the status diff (rather than emitting them along the way) means an
event is sent once per change that was actually written, and a restarted manager that
finds the change already recorded does not send it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fl_kube.events import EventType
from hub_manager import status as st

# Conditions whose turning False is worth a Warning (and True again a Normal event).
_WATCHED = (st.SPEC_VALID, st.CLUSTERS_AVAILABLE, st.PROGRESSING, st.ROUND_SPECS_DELIVERED)
_BEFORE_THE_FIRST_ROUND = ("WaitingForClusters", "ClustersAvailable", "RoundStarted")


@dataclass(frozen=True)
class JobEvent:
    type: EventType
    reason: str
    message: str


def events_between(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[JobEvent]:
    """The events a status write from `old` to `new` stands for, oldest first."""
    events: list[JobEvent] = []
    events += _rounds(old, new)
    events += _rejections(old, new)
    events += _failed_participants(old, new)
    events += _conditions(old, new)
    events += _finished(old, new)
    unique: list[JobEvent] = []
    for event in events:
        if all((e.reason, e.message) != (event.reason, event.message) for e in unique):
            unique.append(event)
    return unique


def _rounds(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[JobEvent]:
    events = []
    done_before = {int(e.get("round") or 0) for e in old.get("history") or []}
    for entry in new.get("history") or []:
        round_number = int(entry.get("round") or 0)
        if round_number in done_before:
            continue
        metrics = ", ".join(
            f"{name}={float(entry[name]):.4f}" for name in ("accuracy", "loss") if name in entry
        )
        events.append(
            JobEvent(
                "Normal",
                "RoundCompleted",
                f"round {round_number} aggregated from {entry.get('accepted', 0)} of "
                f"{entry.get('participants', 0)} updates" + (f"; {metrics}" if metrics else ""),
            )
        )
    started = (new.get("round"), new.get("attempt"), new.get("roundStartTime"))
    if new.get("roundStartTime") and started != (
        old.get("round"),
        old.get("attempt"),
        old.get("roundStartTime"),
    ):
        clusters = [str(p.get("cluster")) for p in new.get("participants") or []]
        attempt = int(new.get("attempt") or 1)
        retry = f" (attempt {attempt})" if attempt > 1 else ""
        names = ", ".join(clusters[:10]) + (" ..." if len(clusters) > 10 else "")
        events.append(
            JobEvent(
                "Normal",
                "RoundStarted",
                f"round {new.get('round')}{retry}: {len(clusters)} clusters ({names}) until "
                f"{new.get('roundDeadline')}",
            )
        )
    return events


def _rejections(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[JobEvent]:
    def slot(entry: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(entry.get(k) for k in ("cluster", "round", "attempt", "reason"))

    seen = {slot(e) for e in old.get("rejectedUpdates") or []}
    return [
        JobEvent(
            "Warning",
            "UpdateRejected",
            f"{e.get('cluster')} (round {e.get('round')}): {e.get('reason')}: {e.get('message')}",
        )
        for e in new.get("rejectedUpdates") or []
        if slot(e) not in seen
    ]


def _failed_participants(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[JobEvent]:
    if (old.get("round"), old.get("attempt")) == (new.get("round"), new.get("attempt")):
        before = {
            p.get("cluster") for p in old.get("participants") or [] if p.get("state") == "Failed"
        }
    else:
        before = set()
    return [
        JobEvent(
            "Warning",
            "ClusterFailed",
            f"{p.get('cluster')} (round {new.get('round')}): {p.get('reason') or 'Failed'}"
            + (f": {p['message']}" if p.get("message") else ""),
        )
        for p in new.get("participants") or []
        if p.get("state") == "Failed" and p.get("cluster") not in before
    ]


def _conditions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[JobEvent]:
    events = []
    started = bool(old.get("round"))
    for type_ in _WATCHED:
        now = st.condition(new, type_)
        if now is None or (type_ == st.PROGRESSING and new.get("phase") == "Completed"):
            continue
        if not started and now.get("reason") in _BEFORE_THE_FIRST_ROUND:
            continue  # a new job waits for its placement: the conditions say so, quietly
        was = st.condition(old, type_) or {}
        same = (was.get("status"), was.get("reason")) == (now.get("status"), now.get("reason"))
        if same:
            continue
        if now.get("status") == "False":
            events.append(JobEvent("Warning", str(now["reason"]), str(now.get("message"))))
        elif was.get("status") == "False" and type_ != st.PROGRESSING:
            events.append(JobEvent("Normal", str(now["reason"]), str(now.get("message"))))
    return events


def _finished(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[JobEvent]:
    phase = new.get("phase")
    if phase == old.get("phase") or phase not in ("Completed", "Failed"):
        return []
    succeeded = st.condition(new, st.SUCCEEDED)
    if phase == "Completed":  # Completed, or PrivacyBudgetExhausted
        reason = str((succeeded or {}).get("reason") or "Completed")
        return [JobEvent("Normal", reason, str(new.get("message") or ""))]
    if succeeded is None:  # an invalid spec: its SpecValid condition says it all
        return []
    return [JobEvent("Warning", str(succeeded.get("reason")), str(new.get("message") or ""))]
