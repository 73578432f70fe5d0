"""metav1.Condition lists handled the way apimachinery's ``meta.SetStatusCondition`` does.

Conditions are a map list keyed by ``type``: setting one never touches the others, and
``lastTransitionTime`` moves only when the status flips, so a controller that writes the
same state twice produces the same object (and therefore no write the second time).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from fl_kube.timestamps import format_time


def now_rfc3339() -> str:
    """The current time as Kubernetes serialises ``metav1.Time`` (seconds, UTC, ``Z``)."""
    return format_time(dt.datetime.now(dt.UTC))


def condition(
    type_: str,
    status: bool | str,
    *,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
) -> dict[str, Any]:
    """A condition without a transition time (``set_conditions`` fills it)."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    result: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
    }
    if observed_generation is not None:
        result["observedGeneration"] = observed_generation
    return result


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of that type, or None."""
    for cond in conditions or ():
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    """Whether the condition of that type exists with status ``True``."""
    cond = find(conditions, type_)
    return cond is not None and cond.get("status") == "True"


def set_conditions(
    existing: Iterable[Mapping[str, Any]] | None,
    updates: Iterable[Mapping[str, Any]],
    *,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Merge ``updates`` into ``existing`` by type, keeping transition times stable.

    Returns a new list; the order of existing conditions is kept and new types are appended.
    """
    stamp = now or now_rfc3339()
    result = [copy.deepcopy(dict(c)) for c in existing or ()]
    for update in updates:
        new = dict(update)
        for index, old in enumerate(result):
            if old.get("type") != new["type"]:
                continue
            if old.get("status") == new["status"] and old.get("lastTransitionTime"):
                new["lastTransitionTime"] = old["lastTransitionTime"]
            else:
                new.setdefault("lastTransitionTime", stamp)
            result[index] = new
            break
        else:
            new.setdefault("lastTransitionTime", stamp)
            result.append(new)
    return result
