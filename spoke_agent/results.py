"""What a finished training Job produced: its outcome, its result record, and the update.

The container's termination message is the result record (`TrainingResult` JSON). Nothing it
says is trusted: the update must exist in the model store, at the URI the round spec named,
with the sha256 the record claims, before the hub hears about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from fl_contract.models import RoundSpec, TrainingResult, UpdateRef
from fl_core.store import AccessDenied, IntegrityError, ObjectNotFound, StoreError, open_round_store
from fl_kube.controller import TemporaryError
from fl_kube.timestamps import parse_time

Phase = Literal["Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class JobOutcome:
    phase: Phase
    reason: str = ""
    message: str = ""
    started: datetime | None = None
    finished: datetime | None = None

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max((self.finished - self.started).total_seconds(), 0.0)


class ResultError(Exception):
    """The Job succeeded but its output cannot be accepted; `reason` says why (CamelCase)."""

    def __init__(self, reason: str, message: str, *, invalid: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.invalid = invalid  # the update itself is wrong (UpdateInvalid), not just missing


def job_outcome(job: dict[str, Any]) -> JobOutcome:
    """Running until the Job controller writes a final Complete or Failed condition."""
    status = job.get("status") or {}
    started = parse_time(status.get("startTime")) or parse_time(
        (job.get("metadata") or {}).get("creationTimestamp")
    )
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        when = parse_time(cond.get("lastTransitionTime"))
        if cond.get("type") == "Complete":
            return JobOutcome(
                "Succeeded",
                started=started,
                finished=parse_time(status.get("completionTime")) or when,
            )
        if cond.get("type") == "Failed":
            return JobOutcome(
                "Failed",
                reason=str(cond.get("reason") or "JobFailed"),
                message=str(cond.get("message") or ""),
                started=started,
                finished=when,
            )
    return JobOutcome("Running", started=started)


def termination_message(pods: list[dict[str, Any]], *, succeeded: bool) -> str | None:
    """The first container's termination message from the Job's most relevant pod.

    For a success, the pod that succeeded; for a failure, the newest pod that terminated.
    """
    candidates = []
    for pod in pods:
        status = pod.get("status") or {}
        if succeeded and status.get("phase") != "Succeeded":
            continue
        statuses = status.get("containerStatuses") or []
        if not statuses:
            continue
        terminated = (statuses[0].get("state") or {}).get("terminated")
        if not terminated:
            continue
        created = str((pod.get("metadata") or {}).get("creationTimestamp") or "")
        candidates.append((created, str(terminated.get("message") or "")))
    if not candidates:
        return None
    return max(candidates)[1]


def parse_result(message: str | None, spec: RoundSpec) -> TrainingResult:
    """The result record, checked against what the round asked for."""
    if not message or not message.strip():
        raise ResultError(
            "ResultMissing", "the training container wrote no result record", invalid=False
        )
    try:
        result = TrainingResult.from_json(message.strip())
    except (ValidationError, ValueError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else str(exc)
        raise ResultError(
            "ResultInvalid", f"the result record is not a TrainingResult ({detail})", invalid=True
        ) from None
    if result.update_uri != spec.update_uri:
        raise ResultError(
            "ResultInvalid",
            f"the update was written to {result.update_uri}, not to {spec.update_uri} as asked",
            invalid=True,
        )
    return result


async def verify_update(
    result: TrainingResult, spec: RoundSpec, *, file_root: Path | None = None
) -> UpdateRef:
    """Read the update back from the store and check its sha256; the reference to report.

    An s3:// update is read through the presigned GET of its own update that the round
    spec grants: the agent holds no store credentials."""
    if spec.access is None and not spec.store.uri.startswith("file://"):
        raise ResultError(
            "UpdateMissing",
            f"the round spec grants no access to read {result.update_uri} back",
            invalid=False,
        )
    try:
        store = open_round_store(spec, file_root=file_root)
    except StoreError as exc:
        raise ResultError(
            "UpdateMissing", f"cannot open the model store: {exc}", invalid=False
        ) from None
    try:
        await store.get_buffer(result.update_uri, sha256=result.sha256)
    except ObjectNotFound:
        raise ResultError(
            "UpdateMissing", f"no update at {result.update_uri} in the model store", invalid=False
        ) from None
    except IntegrityError:
        raise ResultError(
            "UpdateHashMismatch",
            f"the update at {result.update_uri} does not hash to the sha256 in the result record",
            invalid=True,
        ) from None
    except AccessDenied as exc:
        # Asking again with the same URL cannot help (expired, or not this update's).
        raise ResultError("UpdateMissing", str(exc), invalid=False) from None
    except StoreError as exc:
        # The store answered with something other than "absent" or "corrupt" (a network or
        # permission hiccup): look again later rather than fail the round on it.
        raise TemporaryError(f"cannot read the update {result.update_uri} yet: {exc}") from None
    finally:
        await store.close()
    return UpdateRef(uri=result.update_uri, sha256=result.sha256, num_examples=result.num_examples)
