"""The round state machine: what to do next, from the job's status, the reports and the clock.

Pure (no I/O, no wall clock): the round driver gathers the facts, calls `decide`, and
carries out the one step it returns. Every decision depends only on what the status and
the add-on reports hold, so a restarted manager takes the same decision again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

Phase = Literal["Waiting", "Running", "Completed", "Failed"]
TERMINAL_PHASES: frozenset[str] = frozenset({"Completed", "Failed"})


@dataclass(frozen=True)
class RoundPolicy:
    """The parts of the spec the state machine needs."""

    rounds: int
    min_available: int
    quorum: int
    max_retries: int
    round_timeout: timedelta
    fraction_fit: float = 1.0
    seed: int = 0
    wait_for_clusters: timedelta | None = None  # None: wait for clusters without a bound


@dataclass(frozen=True)
class Progress:
    """Where the job stands, as recorded in its status."""

    phase: Phase | None = None
    round: int = 0  # the round in progress (or the last one); 0 before the first
    attempt: int = 0
    participants: tuple[str, ...] = ()
    deadline: datetime | None = None
    published_round: int = 0  # the last round whose global model is published
    pending_round: int | None = None  # a model recorded for publication, not yet confirmed

    @property
    def in_round(self) -> bool:
        return self.round > self.published_round and self.attempt > 0


@dataclass(frozen=True)
class Tally:
    """What the participants of the current round (and attempt) have done so far."""

    accepted: frozenset[str] = frozenset()
    finished_without_update: frozenset[str] = frozenset()  # failed or rejected

    def reported(self) -> frozenset[str]:
        return self.accepted | self.finished_without_update


@dataclass(frozen=True)
class Done:
    """Nothing left to do (terminal phase)."""


@dataclass(frozen=True)
class FinishPublication:
    """A global model was recorded for publication: finish it, never aggregate again."""

    round: int


@dataclass(frozen=True)
class Complete:
    """Every round is published: phase Completed."""


@dataclass(frozen=True)
class WaitForClusters:
    """Too few selected clusters with the add-on Available to start the next round."""

    round: int
    available: int
    needed: int
    until: datetime | None = None  # when the job fails unless clusters return


@dataclass(frozen=True)
class StartRound:
    """Record round/attempt, participants and deadline; then send each its round spec."""

    round: int
    attempt: int
    participants: tuple[str, ...]
    deadline: datetime


@dataclass(frozen=True)
class AwaitReports:
    """The round is open and reports are missing; look again by the deadline at the latest."""

    requeue_after: float
    missing: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Aggregate:
    """Enough updates (all participants reported, or the deadline passed with a quorum)."""

    round: int
    attempt: int
    late: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fail:
    """The job cannot go on: phase Failed. `advice` (what to do) ends the message, after
    the causes the driver knows of (why each participant gave no update)."""

    reason: str
    message: str
    advice: str = ""


Decision = (
    Done
    | FinishPublication
    | Complete
    | WaitForClusters
    | StartRound
    | AwaitReports
    | Aggregate
    | Fail
)


def decide(
    *,
    progress: Progress,
    policy: RoundPolicy,
    available: Sequence[str],
    tally: Tally,
    now: datetime,
    unavailable: Sequence[str] = (),
    waiting_since: datetime | None = None,
    departed: Sequence[str] = (),
) -> Decision:
    """The next step of a job. `available`: selected clusters with the add-on Available;
    `unavailable`: the selected ones without it and the round's participants no longer
    selected; `waiting_since`: since when too few were available (None: enough are);
    `departed`: the round's participants whose add-on is no longer Available.

    A round in progress always finishes, even when `rounds` was lowered below it meanwhile:
    the job then completes with that round, so its round, history and model agree.
    """
    if progress.phase in TERMINAL_PHASES:
        return Done()
    if progress.pending_round is not None and progress.pending_round > progress.published_round:
        return FinishPublication(round=progress.pending_round)
    waiting = _Waiting(unavailable=tuple(unavailable), since=waiting_since or now)
    if not progress.in_round:
        if progress.published_round >= policy.rounds:
            return Complete()
        return _start(
            progress.published_round + 1,
            1,
            policy=policy,
            available=available,
            now=now,
            waiting=waiting,
        )

    participants = frozenset(progress.participants)
    reported = tally.reported() & participants
    accepted = tally.accepted & participants
    missing = tuple(sorted(participants - reported))
    deadline_passed = progress.deadline is not None and now >= progress.deadline
    # Participants whose add-on went away will not report: when the ones left cannot make
    # the quorum, the attempt ends now (and the next one waits for clusters), not at the
    # deadline while the status says they are all training.
    # (Not on the last attempt: that one keeps to its deadline, as a flapping add-on must
    # not cost the job.)
    gone = frozenset(missing) & frozenset(departed)
    could_report = accepted | (frozenset(missing) - gone)
    hopeless = (
        bool(gone)
        and progress.attempt <= policy.max_retries
        and len(could_report) < min(policy.quorum, len(participants))
    )
    if not missing or deadline_passed or hopeless:
        if len(accepted) >= min(policy.quorum, len(participants)) and accepted:
            return Aggregate(round=progress.round, attempt=progress.attempt, late=missing)
        if progress.attempt <= policy.max_retries:
            return _start(
                progress.round,
                progress.attempt + 1,
                policy=policy,
                available=available,
                now=now,
                waiting=waiting,
            )
        if not missing:
            why = "after every participant reported"
        elif deadline_passed:
            why = "by the deadline"
        else:
            why = f"with the add-on of {', '.join(sorted(gone))} unavailable"
        return Fail(
            reason="QuorumNotReached",
            message=(
                f"round {progress.round}: {len(accepted)} of {len(participants)} updates "
                f"accepted {why} (quorum {policy.quorum}) in {progress.attempt} attempt(s)"
            ),
            advice=(
                "fix the causes, or lower spec.server.minFitClients / raise "
                "spec.server.roundTimeout"
            ),
        )
    assert progress.deadline is not None  # an open round always has one
    return AwaitReports(requeue_after=(progress.deadline - now).total_seconds(), missing=missing)


@dataclass(frozen=True)
class _Waiting:
    unavailable: tuple[str, ...]
    since: datetime


def _start(
    round_number: int,
    attempt: int,
    *,
    policy: RoundPolicy,
    available: Sequence[str],
    now: datetime,
    waiting: _Waiting,
) -> StartRound | WaitForClusters | Fail:
    if len(available) < policy.min_available:
        bound = policy.wait_for_clusters
        until = waiting.since + bound if bound is not None else None
        if until is not None and now >= until:
            missing = ", ".join(waiting.unavailable[:10]) or "none selected"
            return Fail(
                reason="ClustersUnavailable",
                message=(
                    f"round {round_number}: waited {_span(bound)} for "
                    f"{policy.min_available} available clusters, {len(available)} available "
                    f"(not available: {missing}); bring them back (their add-on Available) or "
                    "lower spec.server.minAvailableClients, then create the job again"
                ),
            )
        return WaitForClusters(
            round=round_number,
            available=len(available),
            needed=policy.min_available,
            until=until,
        )
    participants = select_participants(
        available, policy=policy, round_number=round_number, attempt=attempt
    )
    return StartRound(
        round=round_number,
        attempt=attempt,
        participants=participants,
        deadline=now + policy.round_timeout,
    )


def select_participants(
    available: Sequence[str], *, policy: RoundPolicy, round_number: int, attempt: int
) -> tuple[str, ...]:
    """`fractionFit` of the available clusters (at least the quorum), chosen by a hash of
    seed, round and attempt: deterministic, and different clusters from round to round."""
    clusters = sorted(set(available))
    wanted = max(math.ceil(policy.fraction_fit * len(clusters) - 1e-9), policy.quorum)
    if wanted >= len(clusters):
        return tuple(clusters)

    def rank(cluster: str) -> str:
        text = f"{policy.seed}:{round_number}:{attempt}:{cluster}"
        return hashlib.sha256(text.encode()).hexdigest()

    return tuple(sorted(sorted(clusters, key=rank)[:wanted]))


def _span(delta: timedelta | None) -> str:
    seconds = int((delta or timedelta()).total_seconds())
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"
