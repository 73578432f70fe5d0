"""Status conditions on the ManagedClusterAddOn: the round reports and the agent's own health.

Pure functions over the conditions list. The list is a map keyed by `type` and shared with the
add-on manager and other writers, so every change here replaces or removes exactly one entry
and leaves every other entry as it was, byte for byte.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from fl_contract import naming
from fl_contract.models import RoundReport
from fl_kube.timestamps import format_time

REASON_TRAINING = "Training"
REASON_UPDATE_READY = "UpdateReady"
REASON_TRAINING_FAILED = "TrainingFailed"
REASON_UPDATE_INVALID = "UpdateInvalid"

DEGRADED = "Degraded"
REASON_CATALOGUE_INVALID = "DatasetCatalogueInvalid"
REASON_CATALOGUE_VALID = "DatasetCatalogueValid"

MAX_MESSAGE = 32768
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")

Condition = dict[str, Any]


def now_utc() -> datetime:
    return datetime.now(UTC)


def make_condition(
    *, type_: str, status: str, reason: str, message: str, now: datetime
) -> Condition:
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    if not _REASON.match(reason) or len(reason) > 1024:
        raise ValueError(f"condition reason {reason!r} does not match the API's pattern")
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "lastTransitionTime": format_time(now),
    }


def round_condition(
    report: RoundReport, *, fl_namespace: str, fl_name: str, now: datetime, invalid: bool = False
) -> Condition:
    """The condition carrying one job's round report: Unknown while training, then True/False."""
    if report.state == "Training":
        status, reason = "Unknown", REASON_TRAINING
    elif report.state == "UpdateReady":
        status, reason = "True", REASON_UPDATE_READY
    else:
        status, reason = "False", REASON_UPDATE_INVALID if invalid else REASON_TRAINING_FAILED
    return make_condition(
        type_=naming.round_condition_type(fl_namespace, fl_name),
        status=status,
        reason=reason,
        message=report.to_message(),
        now=now,
    )


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def same(a: Condition | None, b: Condition | None) -> bool:
    """Equal apart from lastTransitionTime: writing b over a would change nothing of meaning."""
    if a is None or b is None:
        return a is b
    fields = ("type", "status", "reason", "message")
    return all(a.get(f) == b.get(f) for f in fields)


def set_condition(conditions: list[Condition], new: Condition) -> list[Condition] | None:
    """The list with `new` in place of its type (appended if absent); None when unchanged.

    lastTransitionTime moves only when the status changes, as Kubernetes conventions ask.
    """
    old = find(conditions, new["type"])
    if same(old, new):
        return None
    if old is not None and old.get("status") == new["status"] and old.get("lastTransitionTime"):
        new = {**new, "lastTransitionTime": old["lastTransitionTime"]}
    out = [new if c.get("type") == new["type"] else c for c in conditions]
    if old is None:
        out.append(new)
    return out


def remove_condition(conditions: list[Condition], type_: str) -> list[Condition] | None:
    """The list without that type; None when it was not there."""
    if find(conditions, type_) is None:
        return None
    return [c for c in conditions if c.get("type") != type_]


def report_of(condition: Condition | None) -> RoundReport | None:
    """The round report a condition carries, or None when it carries none we can read."""
    if condition is None:
        return None
    try:
        return RoundReport.from_message(str(condition.get("message", "")))
    except (ValidationError, ValueError):
        return None


def owned_round_conditions(conditions: list[Condition], *, cluster: str) -> list[Condition]:
    """Round conditions this cluster's agent wrote: a round type whose report names the cluster."""
    out = []
    for c in conditions:
        if naming.parse_round_condition_type(str(c.get("type", ""))) is None:
            continue
        report = report_of(c)
        if report is not None and report.cluster == cluster:
            out.append(c)
    return out
