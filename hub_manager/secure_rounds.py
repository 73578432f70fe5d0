"""Secure rounds on the hub: the SecAgg+ stages over round specs, reports and the store.

A secure round attempt goes through four stages, each closed when every cluster still in
the protocol completed it, or at the stage's deadline (a fixed share of roundTimeout from
the round's start) with at least `threshold` of them:

  keys    clusters advertise public keys in their reports      -> status: `keys` (U1)
  shares  each uploads its encrypted shares; the hub sorts them
          into one inbox per recipient in the store            -> status: `sharers`, `inboxes` (U2)
  mask    each trains and uploads only its masked input        -> status: `survivors` (U3)
  reveal  survivors reveal the shares that remove the masks; the hub sums U3's masked
          inputs modulo 2^32, unmasks, and gives the average to the strategy's server step

What each stage fixed is written to `status.secureAggregation` before any round spec
asks for the next stage, so a restarted hub asks the same clusters for the same things:
the survivors and the dropped clusters of a reveal are decided once per attempt. Fewer
than `threshold` clusters at a stage's end end the attempt, which is retried as any
failed round (new keys, new secrets).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_contract.models import (
    RoundReport,
    SecAggStage,
)
from fl_contract.secagg import (
    Layout,
    SecAggFormatError,
    decode_bundle,
    decode_masked,
    encode_bundle,
)
from fl_contract.weights import Weights, encode_weights, sha256_hex
from fl_core.privacy import secagg
from fl_core.privacy.secagg_round import context, decode_keys, params_of
from fl_core.store import IntegrityError, ModelStore, ObjectNotFound
from fl_core.strategies import Rejected, Strategy
from hub_manager.aggregation import Outcome, RoundResult
from hub_manager.crd_spec import SpecError
from hub_manager.metrics import HubMetrics
from hub_manager.secure_record import (
    STAGES,
    STATUS_KEY,
    SecureRecord,
    SecureUris,
    uris_for,
)
from hub_manager.status import ParticipantState

log = logging.getLogger(__name__)

# When each stage ends, as a share of roundTimeout from the round's start.
STAGE_END = {"keys": 0.1, "shares": 0.2, "mask": 0.85, "reveal": 1.0}
SUM_CLIENT = "secure-sum"  # the one "client" the strategy sees: the unmasked average


@dataclass
class _Unmasked:
    weights: Weights
    total_weight: float


class SecureSession:
    """The secure counterpart of `RoundSession` for one round attempt: it follows the
    clusters through the stages (`advance`) and, once the reveal stage closed, holds the
    unmasked average that `result` hands to the strategy."""

    def __init__(
        self,
        *,
        job_uid: str,
        namespace: str,
        job: str,
        round_number: int,
        attempt: int,
        participants: tuple[str, ...],
        strategy: Strategy,
        global_weights: Weights | None,
        store: ModelStore,
        metrics: HubMetrics,
        started: datetime,
        timeout: timedelta,
    ) -> None:
        self.job_uid = job_uid
        self.round = round_number
        self.attempt = attempt
        self.participants = tuple(sorted(participants))
        self._namespace = namespace
        self._job = job
        self._strategy = strategy
        self._global = global_weights
        self._store = store
        self._metrics = metrics
        self._started = started
        self._timeout = timeout
        self.outcomes: dict[str, Outcome] = {}
        self._reports: dict[str, RoundReport] = {}
        self._unmasked: _Unmasked | None = None
        self.closed = False
        self.next_check: datetime | None = None  # the open stage's deadline

    def key(self) -> tuple[str, int, int]:
        return (self.job_uid, self.round, self.attempt)

    def uris(self, cluster: str) -> SecureUris:
        return uris_for(
            self._store,
            namespace=self._namespace,
            job=self._job,
            round_number=self.round,
            attempt=self.attempt,
            cluster=cluster,
        )

    # -- the RoundSession interface the report collector and the publisher use ---------

    async def consider(self, cluster: str, report: RoundReport) -> Outcome | None:
        if cluster in self.outcomes or self.closed:
            return None
        self._reports[cluster] = report
        if report.state == "TrainingFailed":
            outcome = Outcome(
                cluster, "failed", report.reason or "TrainingFailed", report.message[:1024]
            )
            self.outcomes[cluster] = outcome
            return outcome
        return None

    def duplicate(self, _cluster: str, _report: RoundReport) -> Outcome | None:
        return None  # a secure report names no update of its own to compare

    def take_fold_rejections(self) -> list[Outcome]:
        return []

    def accepted(self) -> frozenset[str]:
        return frozenset(c for c, o in self.outcomes.items() if o.kind == "accepted")

    def finished_without_update(self) -> frozenset[str]:
        return frozenset(c for c, o in self.outcomes.items() if o.kind != "accepted")

    def state_of(self, cluster: str) -> ParticipantState | None:
        """Training, with the last stage of secure aggregation the cluster completed."""
        report = self._reports.get(cluster)
        if cluster in self.outcomes or report is None or report.secure_aggregation is None:
            return None
        done = {
            "keys": "public keys advertised",
            "shares": "secret shares sent",
            "mask": "masked input uploaded",
            "reveal": "shares revealed",
        }[report.secure_aggregation.stage]
        return ParticipantState("Training", message=f"secure aggregation: {done}")

    # -- the stages ----------------------------------------------------------------------

    def stage_deadline(self, stage: SecAggStage) -> datetime:
        return self._started + self._timeout * STAGE_END[stage]

    async def advance(
        self, status: dict[str, Any], now: datetime, *, available: set[str] | None = None
    ) -> datetime | None:
        """Close the current stage when it is done (recording what it fixed in `status`),
        as many stages as are done; returns when to look again (a stage's deadline).

        A stage is done when every member completed it, or every member whose add-on is
        still Available (`available`; the others dropped), or at its deadline."""
        self.next_check = None
        while not self.closed and self._unmasked is None:  # unmasked: Aggregate comes next
            record = SecureRecord.of(status)
            if record is None or (record.round, record.attempt) != (self.round, self.attempt):
                return None
            current = set(record.members(record.stage, self.participants))
            for cluster in self.participants:  # dropped at an earlier stage (also before a restart)
                if cluster not in current and cluster not in self.outcomes:
                    self.outcomes[cluster] = Outcome(
                        cluster,
                        "failed",
                        "SecAggDropped",
                        "did not complete an earlier stage of secure aggregation in time",
                    )
            members = [
                c
                for c in record.members(record.stage, self.participants)
                if c not in self.outcomes or self.outcomes[c].kind == "accepted"
            ]
            done = [c for c in members if self._completed(c, record)]
            deadline = self.stage_deadline(record.stage)
            waiting = [
                c for c in members if c not in done and (available is None or c in available)
            ]
            if waiting and now < deadline:
                self.next_check = deadline
                return deadline
            if record.stage == "shares":
                done = await self._relay_shares(record, done)
            threshold = record.params.threshold
            if len(done) < threshold:
                self._fail_all(
                    "SecAggBelowThreshold",
                    f"round {self.round}: {len(done)} of {len(members)} clusters completed the "
                    f"{record.stage} stage of secure aggregation, {threshold} needed "
                    "(spec.privacy.secureAggregation.threshold)",
                )
                return None
            for cluster in sorted(set(members) - set(done) - set(self.outcomes)):
                self.outcomes[cluster] = Outcome(
                    cluster,
                    "failed",
                    "SecAggDropped",
                    f"did not complete the {record.stage} stage of secure aggregation in time",
                )
            if record.stage == "reveal":
                await self._unmask(record, done)
                return None
            if record.stage == "keys":
                record.keys = {c: self._secure_report(c).public_keys for c in done}
            elif record.stage == "mask":
                dropped = sorted(set(record.sharers) - set(done))
                short = secagg.short_of_shares(
                    params_of(record.params), record.neighbours(self.job_uid), done, dropped, done
                )
                if short:  # even if every survivor reveals: fail now, ask no reveal
                    self._fail_all(
                        "SecAggBelowThreshold",
                        f"round {self.round}: too many neighbours of "
                        f"{', '.join(sorted(short))} dropped before the reveal stage to unmask "
                        f"them ({record.params.threshold} shares needed, "
                        "spec.privacy.secureAggregation.threshold)",
                    )
                    return None
                record.survivors = sorted(done)
            record.stage = STAGES[STAGES.index(record.stage) + 1]
            status[STATUS_KEY] = record.to_status()
            log.info(
                "round %d (attempt %d): secure aggregation moves to the %s stage with %s",
                self.round,
                self.attempt,
                record.stage,
                ", ".join(sorted(done)),
            )
        return None

    def _secure_report(self, cluster: str) -> Any:
        report = self._reports[cluster]
        assert report.secure_aggregation is not None
        return report.secure_aggregation

    def _completed(self, cluster: str, record: SecureRecord) -> bool:
        report = self._reports.get(cluster)
        if report is None or report.state == "TrainingFailed":
            return False
        secure = report.secure_aggregation
        if secure is None:
            return False
        reached = STAGES.index(secure.stage) >= STAGES.index(record.stage)
        known = record.keys.get(cluster)
        if known is not None and known != secure.public_keys:
            return False  # not the keys it advertised: its shares and masks cannot match
        stage = record.stage
        if stage == "keys":
            try:
                decode_keys(secure.public_keys)
            except secagg.SecAggError:
                return False
            return True
        if stage == "shares":
            return reached and secure.shares is not None
        if stage == "mask":
            update = report.update
            return (
                reached
                and report.state == "UpdateReady"
                and update is not None
                and update.uri == self.uris(cluster).update
            )
        return reached and secure.revealed is not None

    async def _relay_shares(self, record: SecureRecord, done: list[str]) -> list[str]:
        """Read the share bundles of `done` (refusing unreadable ones) and write each
        recipient's inbox; records `sharers` and the inboxes' sha256 in `record`."""
        bundles: dict[str, dict[str, bytes]] = {}
        for cluster in done:
            ref = self._secure_report(cluster).shares
            expected = self.uris(cluster).shares
            try:
                if ref.uri != expected:
                    raise SecAggFormatError(f"shares at {ref.uri!r}, expected {expected!r}")
                data = await self._store.get_buffer(ref.uri, sha256=ref.sha256)
                bundles[cluster] = decode_bundle(data)
            except (IntegrityError, ObjectNotFound, SecAggFormatError) as exc:
                self.outcomes[cluster] = Outcome(
                    cluster, "rejected", "SecAggInvalidShares", str(exc)[:1024]
                )
                self._metrics.update_rejected("SecAggInvalidShares")
        sharers = sorted(bundles)
        inboxes: dict[str, str] = {}
        for recipient in sharers:
            inbox = {
                sender: items[recipient] for sender, items in bundles.items() if recipient in items
            }
            ref_ = await self._store.put_uri(self.uris(recipient).inbox, encode_bundle(inbox))
            inboxes[recipient] = ref_.sha256
        record.sharers = sharers
        record.inboxes = inboxes
        return sharers

    async def _unmask(self, record: SecureRecord, revealers: list[str]) -> None:
        """Sum the survivors' masked inputs and remove the masks with the revealed shares."""
        started = time.perf_counter()
        try:
            revealed: dict[str, dict[str, bytes]] = {}
            for cluster in revealers:
                ref = self._secure_report(cluster).revealed
                if ref.uri != self.uris(cluster).revealed:
                    continue
                data = await self._store.get_buffer(ref.uri, sha256=ref.sha256)
                revealed[cluster] = decode_bundle(data)
            params = params_of(record.params)
            total: npt.NDArray[Any] | None = None
            layout: Layout | None = None
            for cluster in record.survivors:
                update = self._reports[cluster].update
                assert update is not None
                data = await self._store.get_buffer(update.uri, sha256=update.sha256)
                self._metrics.aggregation_bytes.inc(len(data))
                masked, claimed = decode_masked(data)
                if layout is None:
                    layout = claimed
                    total = secagg.new_sum(params, secagg.vector_length(layout))
                elif claimed != layout:
                    raise SecAggFormatError(f"{cluster}'s masked input has another layout")
                assert total is not None
                vector = secagg.decode_masked(masked, params, total.size)
                await asyncio.to_thread(secagg.add_masked, total, vector)
            assert total is not None
            assert layout is not None
            survivors = list(record.survivors)
            dropped = sorted(set(record.sharers) - set(survivors))
            keys = {c: decode_keys(k) for c, k in record.keys.items()}
            weighted_sum, total_weight = await asyncio.to_thread(
                secagg.unmask,
                params,
                total,
                revealed,
                survivors,
                dropped,
                keys,
                record.neighbours(self.job_uid),
                context(self.job_uid, self.round, self.attempt),
            )
        except (IntegrityError, ObjectNotFound, SecAggFormatError, secagg.SecAggError) as exc:
            self._fail_all(
                "SecAggUnmaskFailed",
                f"round {self.round}: the masked sum could not be unmasked: {exc}",
            )
            return
        finally:
            self._metrics.aggregation_duration.labels(step="fold").observe(
                time.perf_counter() - started
            )
        if total_weight <= 0:
            self._fail_all("SecAggUnmaskFailed", f"round {self.round}: the sum of weights is 0")
            return
        average = np.asarray(weighted_sum, dtype=np.float64) / float(total_weight)
        try:
            weights = secagg.unflatten(average, layout)
        except secagg.SecAggError as exc:
            self._fail_all("SecAggUnmaskFailed", f"round {self.round}: {exc}")
            return
        self._unmasked = _Unmasked(weights, float(total_weight))
        for cluster in survivors:
            self.outcomes[cluster] = Outcome(cluster, "accepted")
            self._metrics.update_accepted()

    def _fail_all(self, reason: str, message: str) -> None:
        log.warning("%s: %s", reason, message)
        for cluster in self.participants:
            if cluster not in self.outcomes or self.outcomes[cluster].kind == "accepted":
                self.outcomes[cluster] = Outcome(cluster, "failed", reason, message[:1024])
        self.closed = True

    async def result(
        self, *, evaluate: Callable[[Weights], dict[str, float]] | None
    ) -> tuple[RoundResult, Weights]:
        """The strategy's server step on the unmasked average, as one update weighing the
        sum of the survivors' weights."""
        assert self._unmasked is not None, "result() before the reveal stage closed"
        self.closed = True
        started = time.perf_counter()
        aggregator = self._strategy.begin_round(self._global, round_number=self.round)
        examples = max(1, round(self._unmasked.total_weight))
        try:
            await asyncio.to_thread(
                aggregator.add, self._unmasked.weights, num_examples=examples, client=SUM_CLIENT
            )
        except Rejected as exc:
            raise SpecError(
                [
                    f"spec.privacy.secureAggregation: the unmasked sum is not a model of this job "
                    f"({exc.reason}: {exc.message})"
                ]
            ) from None
        weights = await asyncio.to_thread(aggregator.result)
        data = await asyncio.to_thread(encode_weights, weights)
        self._metrics.aggregation_duration.labels(step="result").observe(
            time.perf_counter() - started
        )
        metrics: dict[str, float] = {}
        if evaluate is not None:
            metrics = await asyncio.to_thread(evaluate, weights)
        accepted = tuple(sorted(self.accepted()))
        return (
            RoundResult(
                data=bytes(data),
                sha256=sha256_hex(data),
                accepted=accepted,
                num_examples=examples,
                metrics={k: float(v) for k, v in metrics.items()},
            ),
            weights,
        )
