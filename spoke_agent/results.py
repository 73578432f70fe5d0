"""What a finished training Job produced: its outcome, its result record, and the update.

The container's termination message is the result record (`TrainingResult` JSON). Nothing it
says is trusted: the update must exist in the model store, at the URI the round spec named,
with the sha256 the record claims, before the hub hears about it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from fl_contract.models import RoundSpec, TrainingResult, UpdateRef
from fl_core.store import IntegrityError, ObjectNotFound, StoreError, open_store
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.controller import TemporaryError
from fl_kube.timestamps import parse_time

# Secret keys (as an AWS SDK reads them from the environment) -> obstore S3 options.
_S3_SECRET_KEYS = {
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
}

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
    result: TrainingResult,
    spec: RoundSpec,
    *,
    spoke: KubeApi | None,
    namespace: str,
    file_root: Path | None = None,
) -> UpdateRef:
    """Read the update back from the store and check its sha256; the reference to report."""
    options = await _s3_options(spec, spoke=spoke, namespace=namespace)
    try:
        store = open_store(spec.store, file_root=file_root, s3_options=options)
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
    except StoreError as exc:
        # The store answered with something other than "absent" or "corrupt" (a network or
        # permission hiccup): look again later rather than fail the round on it.
        raise TemporaryError(f"cannot read the update {result.update_uri} yet: {exc}") from None
    finally:
        await store.close()
    return UpdateRef(uri=result.update_uri, sha256=result.sha256, num_examples=result.num_examples)


async def _s3_options(
    spec: RoundSpec, *, spoke: KubeApi | None, namespace: str
) -> dict[str, str] | None:
    """Credentials from the round's store Secret, the same ones the Job gets as environment."""
    if not spec.store.uri.startswith("s3://") or not spec.store.credentials_secret:
        return None
    if spoke is None:
        raise ValueError("reading store credentials needs the managed cluster's API")
    secret = await spoke.get_or_none(r.SECRET, spec.store.credentials_secret, namespace=namespace)
    if secret is None:
        raise ResultError(
            "UpdateMissing",
            f"store credentials Secret {namespace}/{spec.store.credentials_secret} not found",
            invalid=False,
        )
    options: dict[str, str] = {}
    for key, option in _S3_SECRET_KEYS.items():
        raw = (secret.get("data") or {}).get(key)
        if raw:
            try:
                options[option] = base64.b64decode(raw, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ResultError(
                    "UpdateMissing",
                    f"store credentials Secret key {key} is not base64 text",
                    invalid=False,
                ) from None
    return options
