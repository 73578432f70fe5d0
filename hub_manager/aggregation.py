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

from fl_contract.models import PrivacySpent, RoundReport, UpdateRef
from fl_contract.weights import (
    Weights,
    WeightsFormatError,
    decode_weights,
    encode_weights,
    sha256_hex,
)
from fl_core.store import IntegrityError, ModelStore, ObjectNotFound
from fl_core.strategies import Rejected, RoundAggregator, Strategy
from hub_manager.crd_spec import SpecError
from hub_manager.metrics import HubMetrics
from hub_manager.reports import DatasetSize

log = logging.getLogger(__name__)

OutcomeKind = Literal["accepted", "rejected", "failed"]
# (reason, message) when a report's privacy record does not agree with the hub's accounting.
PrivacyCheck = Callable[[str, RoundReport], tuple[str, str] | None]


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
    privacy: PrivacySpent | None = None


@dataclass(frozen=True)
class RoundResult:
    """The next global model, encoded, and what it is made of."""

    data: bytes
    sha256: str
    accepted: tuple[str, ...]
    num_examples: int
    metrics: dict[str, float]


class RoundSession:
    """The aggregator of one round attempt and the outcome of every report it saw.

    Updates are folded in cluster-name order, whatever order their reports arrive in:
    floating-point addition is not associative, and the same job run twice must publish
    the same models. Each update is verified as its report arrives and folded as soon as
    every participant before it in that order is settled (folded, or finished without an
    update); a verified update whose turn has not come is dropped from memory and read
    again from the store when it comes. Memory stays one update at a time. When the round
    closes, the waiting updates are folded in order, skipping the clusters that never
    reported.
    """

    def __init__(
        self,
        *,
        job_uid: str,
        round_number: int,
        attempt: int,
        aggregator: RoundAggregator,
        expected_uris: Mapping[str, str],
        store: ModelStore,
        metrics: HubMetrics,
        published_samples: Callable[[str], DatasetSize | None] | None = None,
        check_privacy: PrivacyCheck | None = None,
    ) -> None:
        self._check_privacy = check_privacy or (lambda _cluster, _report: None)
        self.job_uid = job_uid
        self.round = round_number
        self.attempt = attempt
        self._aggregator = aggregator
        self._expected_uris = dict(expected_uris)
        self._store = store
        self._metrics = metrics
        self._published_samples = published_samples or (lambda _cluster: None)
        self.outcomes: dict[str, Outcome] = {}
        self._order = sorted(self._expected_uris)
        self._settled = 0  # self._order[:self._settled] are folded or have no update
        self._waiting: dict[str, UpdateRef] = {}  # verified, not yet folded
        self._fold_rejections: list[Outcome] = []
        self._duplicates: set[tuple[str, str]] = set()
        self.closed = False

    def key(self) -> tuple[str, int, int]:
        return (self.job_uid, self.round, self.attempt)

    async def consider(self, cluster: str, report: RoundReport) -> Outcome | None:
        """Take one report of this round attempt; returns the outcome the first time."""
        new: Outcome | None = None
        if cluster not in self.outcomes and not self.closed and report.state != "Training":
            new, folded = await self._judge(cluster, report)
            self.outcomes[cluster] = new
            if new.kind == "accepted" and report.update is not None:
                self._metrics.update_accepted()
                if not folded:
                    self._waiting[cluster] = report.update
            elif new.kind == "rejected":
                self._note_rejected(new)
        if not self.closed:
            await self._fold_ready()
        return new

    def take_fold_rejections(self) -> list[Outcome]:
        """Updates accepted on arrival but refused when their turn to fold came."""
        taken, self._fold_rejections = self._fold_rejections, []
        return taken

    async def _judge(self, cluster: str, report: RoundReport) -> tuple[Outcome, bool]:
        """Verify a report's update, and fold it if its turn has come (True)."""
        if report.state == "TrainingFailed":
            reason = report.reason or "TrainingFailed"
            return Outcome(cluster, "failed", reason, report.message[:1024]), False
        update = report.update
        if update is None:
            return _rejected(cluster, "InvalidReport", "the report names no update"), False
        if report.secure_aggregation is not None:  # the job's secure aggregation was turned off
            return _rejected(
                cluster, "MaskedInput", "a masked input, but the round is not a secure one"
            ), False
        if report.cluster != cluster:
            return _rejected(
                cluster, "ClusterMismatch", f"the report claims to be from {report.cluster!r}"
            ), False
        expected = self._expected_uris.get(cluster)
        if update.uri != expected:
            return _rejected(
                cluster, "UnexpectedUri", f"update at {update.uri!r}, expected {expected!r}"
            ), False
        published = self._published_samples(cluster)
        if published is not None and update.num_examples > published.samples:
            return _rejected(
                cluster,
                "ExamplesExceedDataset",
                f"the update claims {update.num_examples} examples, but {cluster} publishes "
                f"{published.samples} samples for dataset {published.dataset!r} "
                f"(ClusterClaim {published.claim})",
            ), False
        privacy_problem = self._check_privacy(cluster, report)
        if privacy_problem is not None:
            return _rejected(cluster, *privacy_problem), False
        turn = self._order[self._settled : self._settled + 1] == [cluster]
        started = time.perf_counter()
        try:
            weights = await self._read(update)
            # Its turn: fold it now. Otherwise check it now and fold it (read again) later.
            step = self._aggregator.add if turn else self._aggregator.check
            await asyncio.to_thread(step, weights, num_examples=update.num_examples, client=cluster)
        except (_Refused, Rejected) as exc:
            return _rejected(cluster, exc.reason, exc.message), False
        finally:
            self._metrics.aggregation_duration.labels(step="fold").observe(
                time.perf_counter() - started
            )
        outcome = Outcome(
            cluster,
            "accepted",
            num_examples=update.num_examples,
            sha256=update.sha256,
            metrics=dict(report.metrics),
            privacy=report.privacy,
        )
        return outcome, turn

    async def _read(self, update: UpdateRef) -> Weights:
        """The update's weights, read and checked against its sha256; _Refused otherwise."""
        try:
            buffer = await self._store.get_buffer(update.uri, sha256=update.sha256)
        except IntegrityError as exc:
            raise _Refused("ChecksumMismatch", str(exc)) from None
        except ObjectNotFound as exc:
            raise _Refused("UpdateMissing", str(exc)) from None
        self._metrics.aggregation_bytes.inc(len(buffer))
        try:
            return decode_weights(buffer)
        except WeightsFormatError as exc:
            raise _Refused("Undecodable", str(exc)) from None

    async def _fold_ready(self, *, closing: bool = False) -> None:
        """Fold the waiting updates whose turn has come (all of them when closing)."""
        while self._settled < len(self._order):
            cluster = self._order[self._settled]
            if cluster not in self.outcomes and not closing:
                return
            update = self._waiting.get(cluster)
            if update is not None:
                await self._fold(cluster, update)
                del self._waiting[cluster]
            self._settled += 1

    async def _fold(self, cluster: str, update: UpdateRef) -> None:
        """Read a waiting update again and fold it; refused now, it is rejected after all
        (the store lost or changed it, or it does not match the first update folded)."""
        started = time.perf_counter()
        try:
            weights = await self._read(update)
            await asyncio.to_thread(
                self._aggregator.add, weights, num_examples=update.num_examples, client=cluster
            )
        except (_Refused, Rejected) as exc:
            outcome = _rejected(cluster, exc.reason, exc.message)
            self.outcomes[cluster] = outcome
            self._fold_rejections.append(outcome)
            self._note_rejected(outcome)
        finally:
            self._metrics.aggregation_duration.labels(step="fold").observe(
                time.perf_counter() - started
            )

    def _note_rejected(self, outcome: Outcome) -> None:
        self._metrics.update_rejected(outcome.reason)
        log.warning(
            "round %d: update of %s rejected (%s): %s",
            self.round,
            outcome.cluster,
            outcome.reason,
            outcome.message,
        )

    def duplicate(self, cluster: str, report: RoundReport) -> Outcome | None:
        """A second, different update from a cluster already counted: rejected, once.
        (Equal updates from different clusters are fine: identical data, or a trainer that
        changed nothing, give identical bytes.)"""
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
        """Close the session: fold what still waits, then the next global model and its
        metrics."""
        await self._fold_ready(closing=True)
        self.closed = True
        started = time.perf_counter()
        weights = await asyncio.to_thread(self._aggregator.result)
        data = await asyncio.to_thread(encode_weights, weights)
        self._metrics.aggregation_duration.labels(step="result").observe(
            time.perf_counter() - started
        )
        accepted = sorted(
            (o for o in self.outcomes.values() if o.kind == "accepted"), key=lambda o: o.cluster
        )
        examples = sum(o.num_examples for o in accepted)
        if evaluate is not None:
            try:
                metrics = await asyncio.to_thread(evaluate, weights)
            except Exception as exc:  # the evaluator does not fit this model: the user's call
                raise SpecError(
                    [
                        "spec.server.evaluation.evaluator: cannot evaluate this job's model "
                        f"({type(exc).__name__}: {exc}); name an evaluator for this model, "
                        "or remove it (the clusters' own metrics are reported then)"
                    ]
                ) from exc
        else:
            metrics = weighted_metrics(accepted)
        return (
            RoundResult(
                data=bytes(data),
                sha256=sha256_hex(data),
                accepted=tuple(o.cluster for o in accepted),
                num_examples=examples,
                metrics={k: float(v) for k, v in metrics.items()},
            ),
            weights,
        )


class _Refused(Exception):
    """An update that cannot be read as what its report says (missing, corrupt, undecodable)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


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
    store: ModelStore,
    metrics: HubMetrics,
    published_samples: Callable[[str], DatasetSize | None] | None = None,
    check_privacy: PrivacyCheck | None = None,
) -> RoundSession:
    return RoundSession(
        job_uid=job_uid,
        round_number=round_number,
        attempt=attempt,
        aggregator=strategy.begin_round(global_weights, round_number=round_number),
        expected_uris=expected_uris,
        store=store,
        metrics=metrics,
        published_samples=published_samples,
        check_privacy=check_privacy,
    )
