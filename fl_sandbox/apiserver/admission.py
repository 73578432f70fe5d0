"""Validating admission that a real OCM hub adds to the API server (its webhooks), for the
kinds our code writes. Denials are 400 with the webhook's name, as kube-apiserver reports them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import ApiError

MANIFEST_LIMIT = 500 * 1024
_WORK_WEBHOOK = "manifestworkvalidators.admission.work.open-cluster-management.io"


def _deny(webhook: str, message: str) -> ApiError:
    return ApiError(
        400, "BadRequest", f'admission webhook "{webhook}" denied the request: {message}'
    )


def _manifest_work(obj: dict[str, Any]) -> None:
    """OCM's work webhook: manifests present, at most 500 KiB in total, each with a name and no
    generateName."""
    workload = (obj.get("spec") or {}).get("workload") or {}
    manifests = workload.get("manifests") or []
    if not manifests:
        raise _deny(_WORK_WEBHOOK, "manifests should not be empty")
    total = sum(len(json.dumps(m, separators=(",", ":"))) for m in manifests)
    if total > MANIFEST_LIMIT:
        raise _deny(
            _WORK_WEBHOOK,
            f"the size of manifests is {total} bytes which exceeds the {MANIFEST_LIMIT} limit",
        )
    for manifest in manifests:
        meta = (manifest or {}).get("metadata") or {} if isinstance(manifest, dict) else {}
        if not meta.get("name"):
            raise _deny(_WORK_WEBHOOK, "name must be set in manifest")
        if meta.get("generateName"):
            raise _deny(_WORK_WEBHOOK, "generateName must not be set in manifest")


VALIDATORS: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("work.open-cluster-management.io", "manifestworks"): _manifest_work,
}


def admit(gr: tuple[str, str], obj: dict[str, Any], *, status_only: bool) -> None:
    """Run the webhook for this kind on a create or update (not on /status writes)."""
    validator = VALIDATORS.get(gr)
    if validator is not None and not status_only:
        validator(obj)
