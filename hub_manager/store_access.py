"""Each participant's access to the model store for one round: presigned URLs, signed by
the hub (the only holder of store credentials) and sent only in that cluster's round spec.

A cluster gets GET of the round's global model, PUT of its own update key and GET of that
same key (the agent reads the update back to check its sha256); in a secure round also PUT
of its share bundle and of its revealed shares and GET of the inbox the hub wrote for it
(the masked input is at the update key): nothing of another cluster, nothing of another round, nothing that outlives the round's deadline by more than
`ACCESS_SLACK`. A file:// store gets no grants: it serves one machine, whose processes share
the hub's folder.

Signatures embed the signing time, so signing again would change the round spec at every
reconcile and rewrite the ManifestWork each time. A round's grants are therefore signed
once and reused while the rest of the spec is unchanged: from memory, or after a restart
from the round spec the cluster's ManifestWork already carries.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from fl_contract import keys
from fl_contract.models import ObjectGrant, RoundSpec, StoreAccess
from fl_core.store import ModelStore

# How long a round's URLs outlive its deadline: the agent reads the update back after its
# Job ends (at the latest at the deadline), and clocks of hub, store and agents differ a bit.
ACCESS_SLACK = timedelta(minutes=2)
# S3 caps a presigned URL at 7 days: a longer roundTimeout outlives its URLs.
MAX_ACCESS = timedelta(days=7)
# Signing an already-past deadline (a manager restarted late): still enough to report.
MIN_ACCESS = ACCESS_SLACK
MAX_REMEMBERED = 4096  # (job, cluster) grants kept in memory; the oldest are signed again

Slot = tuple[str, str]  # (job uid, cluster)


class AccessGranter:
    """Adds a round's presigned grants to round specs, signing each round's once."""

    def __init__(self) -> None:
        self._signed: dict[Slot, tuple[RoundSpec, StoreAccess]] = {}

    async def grant(
        self,
        spec: RoundSpec,
        *,
        store: ModelStore,
        current_work: dict[str, Any] | None,
    ) -> RoundSpec:
        """`spec` with its grants (unchanged for a store that cannot presign)."""
        if not store.can_presign:
            return spec
        slot = (spec.job.uid, spec.cluster)
        reused = self._reusable(slot, spec) or _sent_access(current_work, spec)
        # The store checks URLs against the real time, so sign against it (not a test clock).
        access = reused or await self._sign(spec, store=store, now=datetime.now(UTC))
        self._signed.pop(slot, None)
        self._signed[slot] = (spec, access)
        while len(self._signed) > MAX_REMEMBERED:
            del self._signed[next(iter(self._signed))]
        return spec.model_copy(update={"access": access})

    def _reusable(self, slot: Slot, spec: RoundSpec) -> StoreAccess | None:
        signed = self._signed.get(slot)
        return signed[1] if signed is not None and signed[0] == spec else None

    async def _sign(self, spec: RoundSpec, *, store: ModelStore, now: datetime) -> StoreAccess:
        wanted: list[tuple[str, Literal["GET", "PUT"]]] = [
            (spec.update_uri, "PUT"),
            (spec.update_uri, "GET"),
        ]
        if spec.global_model is not None:
            wanted.insert(0, (spec.global_model.uri, "GET"))
        secure = spec.secure_aggregation
        if secure is not None:  # this cluster's own secure-aggregation objects, nobody else's
            wanted += [(secure.shares_uri, "PUT"), (secure.revealed_uri, "PUT")]
            if secure.inbox is not None:
                wanted.append((secure.inbox.uri, "GET"))
        expires_in = min(max(spec.deadline + ACCESS_SLACK - now, MIN_ACCESS), MAX_ACCESS)
        expires_in = timedelta(seconds=int(expires_in.total_seconds()))
        grants = [
            ObjectGrant(
                uri=uri,
                method=method,
                url=await store.presign(uri, method=method, expires_in=expires_in),
            )
            for uri, method in wanted
        ]
        return StoreAccess(expires=now + expires_in, grants=grants)


def _sent_access(work: dict[str, Any] | None, spec: RoundSpec) -> StoreAccess | None:
    """The grants of the round spec a ManifestWork carries, if it is this spec."""
    for manifest in ((work or {}).get("spec") or {}).get("workload", {}).get("manifests") or []:
        text = (manifest.get("data") or {}).get(keys.ROUND_SPEC_KEY)
        if manifest.get("kind") != "ConfigMap" or not isinstance(text, str):
            continue
        try:
            sent = RoundSpec.from_json(text)
        except (ValidationError, json.JSONDecodeError):
            return None
        if sent.access is not None and sent.model_copy(update={"access": None}) == spec:
            return sent.access
    return None
