"""Table-driven cases for the round state machine (pure: no API, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hub_manager.rounds import (
    Aggregate,
    AwaitReports,
    Complete,
    Decision,
    Done,
    Fail,
    FinishPublication,
    Progress,
    RoundPolicy,
    StartRound,
    Tally,
    WaitForClusters,
    decide,
    select_participants,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
EARLIER = NOW - timedelta(seconds=1)
POLICY = RoundPolicy(
    rounds=3, min_available=2, quorum=2, max_retries=1, round_timeout=timedelta(minutes=5)
)
ABC = ("c1", "c2", "c3")


def running(
    round_number: int,
    *,
    attempt: int = 1,
    deadline: datetime = LATER,
    published: int | None = None,
    pending: int | None = None,
) -> Progress:
    return Progress(
        phase="Running",
        round=round_number,
        attempt=attempt,
        participants=ABC,
        deadline=deadline,
        published_round=round_number - 1 if published is None else published,
        pending_round=pending,
    )


def tally(accepted: str = "", failed: str = "") -> Tally:
    return Tally(
        accepted=frozenset(accepted.split()), finished_without_update=frozenset(failed.split())
    )


CASES: list[tuple[str, Progress, tuple[str, ...], Tally, Decision]] = [
    (
        "completed is final",
        Progress(phase="Completed", round=3, published_round=3),
        ABC,
        tally(),
        Done(),
    ),
    ("failed is final", Progress(phase="Failed", round=2, attempt=2), ABC, tally(), Done()),
    (
        "new job, too few clusters",
        Progress(),
        ("c1",),
        tally(),
        WaitForClusters(round=1, available=1, needed=2),
    ),
    (
        "new job, no cluster",
        Progress(phase="Waiting"),
        (),
        tally(),
        WaitForClusters(round=1, available=0, needed=2),
    ),
    (
        "new job starts round 1 with every available cluster",
        Progress(phase="Waiting"),
        ("c2", "c1", "c3"),
        tally(),
        StartRound(round=1, attempt=1, participants=ABC, deadline=NOW + timedelta(minutes=5)),
    ),
    (
        "open round, reports missing",
        running(1),
        ABC,
        tally("c1"),
        AwaitReports(requeue_after=300.0, missing=("c2", "c3")),
    ),
    (
        "every participant reported",
        running(1),
        ABC,
        tally("c1 c2 c3"),
        Aggregate(round=1, attempt=1),
    ),
    (
        "reported, one failed, quorum met",
        running(2),
        ABC,
        tally("c1 c2", "c3"),
        Aggregate(round=2, attempt=1),
    ),
    (
        "deadline passed with quorum: late cluster left out",
        running(1, deadline=EARLIER),
        ABC,
        tally("c1 c3"),
        Aggregate(round=1, attempt=1, late=("c2",)),
    ),
    (
        "deadline passed without quorum: retry",
        running(1, deadline=EARLIER),
        ABC,
        tally("c1"),
        StartRound(round=1, attempt=2, participants=ABC, deadline=NOW + timedelta(minutes=5)),
    ),
    (
        "everyone reported, too few accepted: retry",
        running(2),
        ABC,
        tally("c1", "c2 c3"),
        StartRound(round=2, attempt=2, participants=ABC, deadline=NOW + timedelta(minutes=5)),
    ),
    (
        "retry wanted but clusters gone: wait",
        running(1, deadline=EARLIER),
        ("c1",),
        tally("c1"),
        WaitForClusters(round=1, available=1, needed=2),
    ),
    ("retries exhausted: fail", running(1, attempt=2, deadline=EARLIER), ABC, tally("c1"), "Fail"),  # type: ignore[list-item]
    (
        "reports from non-participants do not count",
        running(1),
        ABC,
        tally("c1 c2 c9"),
        AwaitReports(requeue_after=300.0, missing=("c3",)),
    ),
    (
        "round published: next round starts",
        Progress(phase="Running", round=1, attempt=1, participants=ABC, published_round=1),
        ABC,
        tally("c1 c2 c3"),
        StartRound(round=2, attempt=1, participants=ABC, deadline=NOW + timedelta(minutes=5)),
    ),
    (
        "between rounds, clusters gone: wait",
        Progress(phase="Running", round=1, attempt=1, published_round=1),
        ("c1",),
        tally(),
        WaitForClusters(round=2, available=1, needed=2),
    ),
    (
        "pending publication is finished, not re-aggregated",
        running(2, pending=2),
        ABC,
        tally("c1 c2 c3"),
        FinishPublication(round=2),
    ),
    (
        "stale pending record is ignored",
        running(3, published=2, pending=2),
        ABC,
        tally("c1"),
        AwaitReports(requeue_after=300.0, missing=("c2", "c3")),
    ),
    (
        "rounds lowered below the round in progress: that round finishes",
        running(4, published=3),
        ABC,
        tally("c1 c2 c3"),
        Aggregate(round=4, attempt=1),
    ),
    (
        "rounds lowered below the round in progress, then published: complete",
        Progress(phase="Running", round=4, attempt=1, published_round=4),
        ABC,
        tally(),
        Complete(),
    ),
    (
        "last round published: complete",
        Progress(phase="Running", round=3, attempt=1, published_round=3),
        ABC,
        tally(),
        Complete(),
    ),
]


@pytest.mark.parametrize(
    ("progress", "available", "counts", "expected"),
    [pytest.param(p, a, t, e, id=name) for name, p, a, t, e in CASES],
)
def test_decide(
    progress: Progress, available: tuple[str, ...], counts: Tally, expected: object
) -> None:
    decision = decide(progress=progress, policy=POLICY, available=available, tally=counts, now=NOW)
    if expected == "Fail":
        assert isinstance(decision, Fail)
        assert decision.reason == "QuorumNotReached"
        assert "round 1: 1 of 3" in decision.message
        assert "minFitClients" in decision.advice
    else:
        assert decision == expected


def test_same_facts_same_decision() -> None:
    """A restarted manager sees the same status and reports and decides the same."""
    facts = {
        "progress": running(2),
        "policy": POLICY,
        "available": ABC,
        "tally": tally("c1"),
        "now": NOW,
    }
    assert decide(**facts) == decide(**facts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fraction", "quorum", "available", "expected_size"),
    [(1.0, 1, 5, 5), (0.5, 1, 5, 3), (0.1, 2, 5, 2), (0.2, 1, 10, 2), (0.5, 4, 4, 4)],
)
def test_select_participants_size(
    fraction: float, quorum: int, available: int, expected_size: int
) -> None:
    policy = RoundPolicy(
        rounds=5,
        min_available=quorum,
        quorum=quorum,
        max_retries=0,
        round_timeout=timedelta(seconds=1),
        fraction_fit=fraction,
    )
    clusters = [f"c{i}" for i in range(available)]
    chosen = select_participants(clusters, policy=policy, round_number=1, attempt=1)
    assert len(chosen) == expected_size
    assert chosen == tuple(sorted(chosen))
    assert set(chosen) <= set(clusters)
    assert chosen == select_participants(
        list(reversed(clusters)), policy=policy, round_number=1, attempt=1
    )


def test_select_participants_rotates_between_rounds() -> None:
    policy = RoundPolicy(
        rounds=20,
        min_available=1,
        quorum=1,
        max_retries=0,
        round_timeout=timedelta(seconds=1),
        fraction_fit=0.3,
    )
    clusters = [f"c{i}" for i in range(10)]
    picks = {
        select_participants(clusters, policy=policy, round_number=r, attempt=1)
        for r in range(1, 21)
    }
    assert len(picks) > 5


def test_a_round_that_can_no_longer_reach_its_quorum_ends_at_once() -> None:
    """c3's add-on went mid-round: c1 and c2 alone cannot make a quorum of 3, so the
    attempt ends now and the next one waits for clusters, instead of saying three
    clusters train until the deadline."""
    policy = RoundPolicy(
        rounds=3,
        min_available=3,
        quorum=3,
        max_retries=1,
        round_timeout=timedelta(minutes=5),
        wait_for_clusters=timedelta(minutes=15),
    )
    facts: dict[str, Any] = {
        "progress": running(1),
        "policy": policy,
        "available": ("c1", "c2"),
        "unavailable": ("c3",),
        "departed": ("c3",),
        "now": NOW,
    }
    assert decide(**facts, tally=tally("c1")) == WaitForClusters(
        round=1, available=2, needed=3, until=NOW + timedelta(minutes=15)
    )
    # The last attempt keeps to its deadline (a flapping add-on must not fail the job).
    last = {**facts, "progress": running(1, attempt=2)}
    assert isinstance(decide(**last, tally=tally("c1")), AwaitReports)
    failed = decide(**{**last, "now": LATER}, tally=tally("c1"))
    assert isinstance(failed, Fail)
    assert "round 1: 1 of 3 updates accepted by the deadline" in failed.message
    # A participant dropped from the selection whose add-on is still there may report.
    assert isinstance(decide(**{**facts, "departed": ()}, tally=tally("c1")), AwaitReports)


def test_waiting_for_clusters_is_bounded() -> None:
    """Too few clusters: wait until `wait_for_clusters` after they went, then fail."""
    policy = RoundPolicy(
        rounds=3,
        min_available=3,
        quorum=3,
        max_retries=2,
        round_timeout=timedelta(minutes=5),
        wait_for_clusters=timedelta(minutes=15),
    )
    facts: dict[str, Any] = {
        "progress": running(1, deadline=EARLIER),
        "policy": policy,
        "available": ("c1", "c2"),
        "unavailable": ("c3",),
        "tally": tally("c1 c2"),
    }
    gone = NOW - timedelta(minutes=10)
    assert decide(**facts, now=NOW, waiting_since=gone) == WaitForClusters(
        round=1, available=2, needed=3, until=gone + timedelta(minutes=15)
    )
    failed = decide(**facts, now=NOW + timedelta(minutes=5), waiting_since=gone)
    assert isinstance(failed, Fail)
    assert failed.reason == "ClustersUnavailable"
    assert "waited 15m for 3 available clusters, 2 available (not available: c3)" in (
        failed.message
    )
