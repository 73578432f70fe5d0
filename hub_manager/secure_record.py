"""What the stages of a secure round fix, and what each cluster's round spec says of them.

`status.secureAggregation` (a `SecureRecord`) holds the round's SecAgg+ parameters, the
stage, and what each closed stage fixed: the public keys advertised (U1), who shared their
secrets and the sha256 of the inbox the hub wrote each (U2), whose masked inputs are summed
(U3). Round specs are computed from it alone, so a restarted hub sends the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from fl_contract import naming
from fl_contract.models import ModelRef, PublicKeyPair, SecAggConfig, SecAggRound, SecAggStage
from fl_core.privacy import secagg
from fl_core.privacy.secagg_round import context
from fl_core.store import ModelStore
from hub_manager.crd_spec import SECAGG_MODULUS, FederatedLearningSpec

STAGES: tuple[SecAggStage, ...] = get_args(SecAggStage)
STATUS_KEY = "secureAggregation"


def secagg_params(
    spec: FederatedLearningSpec, participants: int, *, max_weight: float
) -> SecAggConfig:
    """The protocol's parameters for a round of `participants` clusters. Unset, numShares is
    SecAgg+'s min(n-1, 2*ceil(log2 n)) (at least threshold - 1) and threshold a majority of
    the numShares + 1 holders of each secret (`SecAggParams.for_participants`); numShares
    never exceeds the other participants."""
    secure = spec.privacy.secure
    assert secure is not None
    n = max(participants, 2)
    default = secagg.SecAggParams.for_participants(n)
    wanted = secure.num_shares or max(default.num_shares, (secure.threshold or 0) - 1)
    num_shares = min(wanted, n - 1)
    threshold = secure.threshold or min(num_shares + 1, (num_shares + 1) // 2 + 1)
    params = secagg.SecAggParams(
        threshold=min(threshold, num_shares + 1),
        num_shares=num_shares,
        clipping_range=secure.clipping_range,
        quantization_range=secure.quantization_range,
        modulus=SECAGG_MODULUS,
        max_weight=max_weight,
    )
    return SecAggConfig(
        threshold=params.threshold,
        num_shares=params.num_shares,
        clipping_range=params.clipping_range,
        quantization_range=params.quantization_range,
        modulus=params.modulus,
        max_weight=params.max_weight,
    )


def graph_seed(job_uid: str, round_number: int, attempt: int) -> bytes:
    """The SecAgg+ graph's seed: fixed by the attempt, unknown to clusters before they
    advertise their keys (they learn it only from the neighbours they are given)."""
    return hashlib.sha256(b"graph\x00" + context(job_uid, round_number, attempt)).digest()


@dataclass
class SecureRecord:
    """`status.secureAggregation`: what the stages of the current attempt fixed."""

    round: int
    attempt: int
    stage: SecAggStage
    params: SecAggConfig
    keys: dict[str, PublicKeyPair] = field(default_factory=dict)
    sharers: list[str] = field(default_factory=list)
    inboxes: dict[str, str] = field(default_factory=dict)  # recipient -> sha256
    survivors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, status: Mapping[str, Any]) -> SecureRecord | None:
        raw = status.get(STATUS_KEY)
        if not isinstance(raw, Mapping):
            return None
        try:
            return cls(
                round=int(raw["round"]),
                attempt=int(raw["attempt"]),
                stage=raw["stage"],
                params=SecAggConfig(
                    threshold=raw["threshold"],
                    num_shares=raw["numShares"],
                    clipping_range=raw["clippingRange"],
                    quantization_range=raw["quantizationRange"],
                    modulus=raw["modulus"],
                    max_weight=raw["maxWeight"],
                ),
                keys={
                    c: PublicKeyPair(c_pk=k["cPk"], s_pk=k["sPk"])
                    for c, k in (raw.get("keys") or {}).items()
                },
                sharers=list(raw.get("sharers") or []),
                inboxes=dict(raw.get("inboxes") or {}),
                survivors=list(raw.get("survivors") or []),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": self.round,
            "attempt": self.attempt,
            "stage": self.stage,
            "threshold": self.params.threshold,
            "numShares": self.params.num_shares,
            "clippingRange": self.params.clipping_range,
            "quantizationRange": self.params.quantization_range,
            "modulus": self.params.modulus,
            "maxWeight": self.params.max_weight,
        }
        if self.keys:
            out["keys"] = {c: {"cPk": k.c_pk, "sPk": k.s_pk} for c, k in sorted(self.keys.items())}
        if self.sharers:
            out["sharers"] = list(self.sharers)
            out["inboxes"] = dict(sorted(self.inboxes.items()))
        if self.survivors:
            out["survivors"] = list(self.survivors)
        return out

    def members(self, stage: SecAggStage, participants: tuple[str, ...]) -> list[str]:
        """The clusters taking part in `stage`."""
        if stage == "keys":
            return sorted(participants)
        if stage == "shares":
            return sorted(self.keys)
        if stage == "mask":
            return list(self.sharers)
        return list(self.survivors)

    def neighbours(self, job_uid: str) -> dict[str, list[str]]:
        """The SecAgg+ graph over the key holders (U1)."""
        graph = secagg.neighbours(
            sorted(self.keys),
            self.params.num_shares,
            graph_seed(job_uid, self.round, self.attempt),
        )
        return {c: sorted(n) for c, n in graph.items()}


def start_record(
    status: dict[str, Any],
    spec: FederatedLearningSpec,
    *,
    round_number: int,
    attempt: int,
    participants: int,
    max_weight: float,
) -> None:
    """A new secure attempt starts at the keys stage."""
    record = SecureRecord(
        round=round_number,
        attempt=attempt,
        stage="keys",
        params=secagg_params(spec, participants, max_weight=max_weight),
    )
    status[STATUS_KEY] = record.to_status()


@dataclass(frozen=True)
class SecureUris:
    """Where the objects of one cluster's secure round live (the hub's choice)."""

    shares: str
    inbox: str
    revealed: str
    update: str


def uris_for(
    store: ModelStore, *, namespace: str, job: str, round_number: int, attempt: int, cluster: str
) -> SecureUris:
    def key(kind: naming.SecAggObject) -> str:
        return store.uri_for(
            naming.secagg_key(
                namespace=namespace,
                job=job,
                round_number=round_number,
                cluster=cluster,
                attempt=attempt,
                kind=kind,
            )
        )

    update = naming.update_key(
        namespace=namespace, job=job, round_number=round_number, cluster=cluster, attempt=attempt
    )
    return SecureUris(
        shares=key("shares"),
        inbox=key("inbox"),
        revealed=key("revealed"),
        update=store.uri_for(update),
    )


def round_part(
    record: SecureRecord,
    *,
    job_uid: str,
    cluster: str,
    uris: SecureUris,
    participants: tuple[str, ...],
) -> SecAggRound:
    """A cluster's part of the round spec: the last stage it is a member of, and the relays
    that stage needs. A cluster that dropped keeps the stage it dropped in."""
    stage: SecAggStage = "keys"
    for candidate in STAGES[: STAGES.index(record.stage) + 1]:
        if cluster in record.members(candidate, participants):
            stage = candidate
    part = SecAggRound(
        stage=stage, params=record.params, shares_uri=uris.shares, revealed_uri=uris.revealed
    )
    if stage == "keys":
        return part
    graph = record.neighbours(job_uid).get(cluster, [])
    among = set(record.keys) if stage == "shares" else set(record.sharers)
    neighbours = {n: record.keys[n] for n in graph if n in among and n != cluster}
    update: dict[str, Any] = {"neighbours": neighbours}
    if stage in ("mask", "reveal") and cluster in record.inboxes:
        update["inbox"] = ModelRef(uri=uris.inbox, sha256=record.inboxes[cluster])
    if stage == "reveal":
        update["survivors"] = list(record.survivors)
        update["dropped"] = sorted(set(record.sharers) - set(record.survivors))
    return part.model_copy(update=update)
