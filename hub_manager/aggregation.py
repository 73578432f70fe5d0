"""Folding one round's updates into the strategy, each verified before it counts.

A `RoundSession` belongs to one (job uid, round, attempt). It only lives in memory: a
restarted manager builds a fresh one and folds the reports again from the add-on statuses,
so an update is counted once per session and a session's result is published once (the
round driver records the result before it writes it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from fl_contract.models import RoundReport
from fl_contract.weights import (
    Weights,
    WeightsFormatError,
    decode_weights,
    encode_weights,
    sha256_hex,
)
from fl_core.store import IntegrityError, ModelStore, ObjectNotFound
from fl_core.strategies import Rejected, RoundAggregator, Strategy
from hub_manager.metrics import HubMetrics

log = logging.getLogger(__name__)

OutcomeKind = Literal["accepted", "rejected", "failed"]


@dataclass(frozen=True)
class Outcome:
    """What became of one cluster's report in this session."""

    cluster: str
    kind: OutcomeKind
    reason: str = ""
    message: str = ""
    num_examples: int = 0
    sha256: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundResult:
    """The next global model, encoded, and what it is made of."""

    data: bytes
    sha256: str
    accepted: tuple[str, ...]
    num_examples: int
    metrics: dict[str, float]


class RoundSession:
    """The aggregator of one round attempt and the outcome of every report it saw."""

    def __init__(
        self,
        *,
        job_uid: str,
        round_number: int,
        attempt: int,
        aggregator: RoundAggregator,
        expected_uris: Mapping[str, str],
        metrics: HubMetrics,
    ) -> None:
        self.job_uid = job_uid
        self.round = round_number
        self.attempt = attempt
        self._aggregator = aggregator
        self._expected_uris = dict(expected_uris)
        self._metrics = metrics
        self.outcomes: dict[str, Outcome] = {}
        self._by_sha: dict[str, str] = {}
        self._duplicates: set[tuple[str, str]] = set()
        self.closed = False

    def key(self) -> tuple[str, int, int]:
        return (self.job_uid, self.round, self.attempt)

    async def consider(
        self, cluster: str, report: RoundReport, *, store: ModelStore
    ) -> Outcome | None:
        """Take one report of this round attempt; returns the outcome the first time."""
        if cluster in self.outcomes or self.closed or report.state == "Training":
            return None
        outcome = await self._judge(cluster, report, store=store)
        self.outcomes[cluster] = outcome
        if outcome.kind == "accepted":
            self._by_sha[outcome.sha256] = cluster
            self._metrics.update_accepted()
        elif outcome.kind == "rejected":
            self._metrics.update_rejected(outcome.reason)
            log.warning(
                "round %d: update of %s rejected (%s): %s",
                self.round,
                cluster,
                outcome.reason,
                outcome.message,
            )
        return outcome

    async def _judge(self, cluster: str, report: RoundReport, *, store: ModelStore) -> Outcome:
        if report.state == "TrainingFailed":
            return Outcome(
                cluster, "failed", report.reason or "TrainingFailed", report.message[:1024]
            )
        update = report.update
        if update is None:
            return _rejected(cluster, "InvalidReport", "the report names no update")
        if report.cluster != cluster:
            return _rejected(
                cluster, "ClusterMismatch", f"the report claims to be from {report.cluster!r}"
            )
        expected = self._expected_uris.get(cluster)
        if update.uri != expected:
            return _rejected(
                cluster, "UnexpectedUri", f"update at {update.uri!r}, expected {expected!r}"
            )
        if update.sha256 in self._by_sha:
            return _rejected(
                cluster, "Duplicate", f"the same update as {self._by_sha[update.sha256]!r}"
            )
        started = time.perf_counter()
        try:
            buffer = await store.get_buffer(update.uri, sha256=update.sha256)
        except IntegrityError as exc:
            return _rejected(cluster, "ChecksumMismatch", str(exc))
        except ObjectNotFound as exc:
            return _rejected(cluster, "UpdateMissing", str(exc))
        self._metrics.aggregation_bytes.inc(len(buffer))
        try:
            weights = decode_weights(buffer)
        except WeightsFormatError as exc:
            return _rejected(cluster, "Undecodable", str(exc))
        try:
            await asyncio.to_thread(
                self._aggregator.add, weights, num_examples=update.num_examples, client=cluster
            )
        except Rejected as exc:
            return _rejected(cluster, exc.reason, exc.message)
        finally:
            self._metrics.aggregation_duration.labels(step="fold").observe(
                time.perf_counter() - started
            )
        return Outcome(
            cluster,
            "accepted",
            num_examples=update.num_examples,
            sha256=update.sha256,
            metrics=dict(report.metrics),
        )

    def duplicate(self, cluster: str, report: RoundReport) -> Outcome | None:
        """A second, different update from a cluster already counted: rejected, once."""
        first = self.outcomes.get(cluster)
        update = report.update
        if first is None or first.kind != "accepted" or update is None:
            return None
        if update.sha256 == first.sha256 or (cluster, update.sha256) in self._duplicates:
            return None
        self._duplicates.add((cluster, update.sha256))
        self._metrics.update_rejected("Duplicate")
        return _rejected(
            cluster, "Duplicate", "a different update for a round already counted; kept the first"
        )

    def accepted(self) -> frozenset[str]:
        return frozenset(c for c, o in self.outcomes.items() if o.kind == "accepted")

    def finished_without_update(self) -> frozenset[str]:
        return frozenset(c for c, o in self.outcomes.items() if o.kind != "accepted")

    async def result(
        self, *, evaluate: Callable[[Weights], dict[str, float]] | None
    ) -> tuple[RoundResult, Weights]:
        """Close the session: the next global model and its metrics."""
        self.closed = True
        started = time.perf_counter()
        weights = await asyncio.to_thread(self._aggregator.result)
        data = await asyncio.to_thread(encode_weights, weights)
        self._metrics.aggregation_duration.labels(step="result").observe(
            time.perf_counter() - started
        )
        accepted = [o for o in self.outcomes.values() if o.kind == "accepted"]
        examples = sum(o.num_examples for o in accepted)
        if evaluate is not None:
            metrics = await asyncio.to_thread(evaluate, weights)
        else:
            metrics = weighted_metrics(accepted)
        return (
            RoundResult(
                data=bytes(data),
                sha256=sha256_hex(data),
                accepted=tuple(sorted(o.cluster for o in accepted)),
                num_examples=examples,
                metrics={k: float(v) for k, v in metrics.items()},
            ),
            weights,
        )


def weighted_metrics(outcomes: list[Outcome]) -> dict[str, float]:
    """The clients' metrics averaged with their example counts as weights."""
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for outcome in outcomes:
        for name, value in outcome.metrics.items():
            totals[name] = totals.get(name, 0.0) + value * outcome.num_examples
            weights[name] = weights.get(name, 0.0) + outcome.num_examples
    return {name: totals[name] / weights[name] for name in totals if weights[name] > 0}


def _rejected(cluster: str, reason: str, message: str) -> Outcome:
    return Outcome(cluster, "rejected", reason, message[:1024])


def new_session(
    *,
    strategy: Strategy,
    global_weights: Weights | None,
    job_uid: str,
    round_number: int,
    attempt: int,
    expected_uris: Mapping[str, str],
    metrics: HubMetrics,
) -> RoundSession:
    return RoundSession(
        job_uid=job_uid,
        round_number=round_number,
        attempt=attempt,
        aggregator=strategy.begin_round(global_weights, round_number=round_number),
        expected_uris=expected_uris,
        metrics=metrics,
    )
