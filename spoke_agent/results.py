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

from fl_contract.models import (
    Dataset,
    RoundSpec,
    TrainingFailure,
    TrainingResult,
    UpdateRef,
    redact_presigned,
)
from fl_core.store import AccessDenied, IntegrityError, ObjectNotFound, StoreError, open_round_store
from fl_kube.controller import TemporaryError
from fl_kube.timestamps import parse_time

Phase = Literal["Running", "Succeeded", "Failed"]
MAX_MESSAGE_CHARS = 1024  # a round report's message
_TAIL_HEADING = "\nstderr:\n"
# Errors a training container reports that say more than "TrainingFailed": the global
# model in the store is corrupt, missing or unreachable.
CONTAINER_FAILURES = {
    "IntegrityError": "IntegrityError",
    "ObjectNotFound": "ObjectNotFound",
    "StoreError": "StoreError",
}


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


def training_failure(
    message: str | None, outcome: JobOutcome, *, limit: int = MAX_MESSAGE_CHARS
) -> tuple[str, str]:
    """The reason and message to report for a failed Job, from what its container said.

    `fl-train` leaves a `TrainingFailure` record (the error, then its stderr's last lines);
    any other container leaves its own words, or the last lines of its log
    (`terminationMessagePolicy: FallbackToLogsOnError`), whose last line is the error (a
    traceback's last line is the exception). Only when the container said nothing does the
    Job's own reason stand in. A Job stopped by its deadline is DeadlineExceeded whatever
    the container said."""
    overdue = outcome.reason == "DeadlineExceeded"
    job_said = f"Job {outcome.reason}" + (f": {outcome.message}" if outcome.message else "")
    text = redact_presigned(message or "").strip()  # any image's log may print a URL
    reason = "DeadlineExceeded" if overdue else "TrainingFailed"
    if not text:
        return reason, _bounded(job_said, [], limit)
    try:
        record = TrainingFailure.from_json(text)
    except (ValidationError, ValueError):
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        cause, tail = lines[-1], lines[:-1]
    else:
        cause, tail = record.summary(), record.stderr.splitlines()
        if not overdue:
            reason = CONTAINER_FAILURES.get(record.failure, reason)
    if overdue:
        cause, tail = job_said, [*tail, cause]
    return reason, _bounded(cause, tail, limit)


def _bounded(cause: str, tail: list[str], limit: int) -> str:
    """`cause`, then as many of the tail's newest lines as fit in `limit` characters."""
    cause = " ".join(cause.split())
    if len(cause) > limit:
        return cause[: limit - 3] + "..."
    kept: list[str] = []
    size = len(cause) + len(_TAIL_HEADING)
    for line in reversed(tail):
        if size + len(line) + 1 > limit:
            break
        kept.insert(0, line)
        size += len(line) + 1
    return cause + (_TAIL_HEADING + "\n".join(kept) if kept else "")


def parse_result(
    message: str | None, spec: RoundSpec, *, dataset: Dataset | None = None
) -> TrainingResult:
    """The result record, checked against what the round asked for and, when the catalogue
    says how many samples the dataset holds, against that (`num_examples` is a claim that
    weighs the update on the hub)."""
    if not message or not message.strip():
        raise ResultError(
            "ResultMissing", "the training container wrote no result record", invalid=False
        )
    try:
        result = TrainingResult.from_json(message.strip())
    except (ValidationError, ValueError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        detail = (
            ": ".join(filter(None, (".".join(map(str, first["loc"])), first["msg"])))
            if first
            else str(exc)
        )
        raise ResultError(
            "ResultInvalid", f"the result record is not a TrainingResult ({detail})", invalid=True
        ) from None
    if result.update_uri != spec.update_uri:
        raise ResultError(
            "ResultInvalid",
            f"the update was written to {result.update_uri}, not to {spec.update_uri} as asked",
            invalid=True,
        )
    if (
        dataset is not None
        and dataset.samples is not None
        and result.num_examples > dataset.samples
    ):
        raise ResultError(
            "ExamplesExceedDataset",
            f"the result record claims {result.num_examples} examples, but the catalogue holds "
            f"{dataset.samples} samples for dataset {dataset.name!r}",
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
    except IntegrityError as exc:
        raise ResultError(
            "UpdateHashMismatch", f"the result record's update: {exc}", invalid=True
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
