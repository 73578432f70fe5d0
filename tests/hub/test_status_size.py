"""The FederatedLearning status stays bounded at fleet size: a round of 1,000 participants,
most of them failing with long messages, and a full history fit in 256 KiB, as the API
server stores it; the detail the status leaves out is counted, and the round's
participants are all still named."""

from __future__ import annotations

import json
from typing import Any

from fl_kube import resources as r
from fl_sandbox.sandbox import Sandbox
from hub_manager import status as st
from tests.hub import helpers as h

CLUSTERS = 1000
LIMIT = 256 * 1024


def names() -> list[str]:
    return [f"prod-eu-west-1-cluster-{i:04d}" for i in range(CLUSTERS)]


def states() -> dict[str, st.ParticipantState]:
    out = {}
    for i, cluster in enumerate(names()):
        if i % 10 < 6:
            out[cluster] = st.ParticipantState("Accepted", num_examples=1797)
        elif i % 10 < 9:
            reason = ("DatasetNotFound", "TrainingFailed", "DeadlineExceeded")[i % 3]
            out[cluster] = st.ParticipantState("Failed", reason, 0, f"{reason}: " + "x" * 400)
        else:
            out[cluster] = st.ParticipantState("Training")
    return out


def fleet_status() -> dict[str, Any]:
    """A status as the manager leaves it mid-publication of round 100 of a 1,000-cluster job
    (every list at its longest)."""
    status: dict[str, Any] = {"phase": "Running", "round": 100, "attempt": 1, "clusters": CLUSTERS}
    st.set_participants(status, names(), states())
    for round_number in range(1, 101):
        st.add_history(
            status,
            {
                "round": round_number,
                "attempt": 1,
                "participants": CLUSTERS,
                "accepted": 600,
                "rejected": 400,
                "numExamples": 600 * 1797,
                "durationSeconds": 61.5,
                "modelSha256": "a" * 64,
                "completionTime": "2026-01-01T00:00:00Z",
                "loss": 0.25,
                "accuracy": 0.95,
                "failures": st.round_failures(status),
            },
        )
    st.append_bounded(
        status,
        "rejectedUpdates",
        [
            {
                "cluster": cluster,
                "round": 100,
                "attempt": 1,
                "reason": "IntegrityError",
                "message": "y" * st.MAX_PARTICIPANT_MESSAGE,
                "time": "2026-01-01T00:00:00Z",
            }
            for cluster in names()[:60]
        ],
        limit=st.MAX_REJECTED,
    )
    everyone = names()
    status["pendingModel"] = {
        "round": 100,
        "attempt": 1,
        "uri": "s3://federated-learning/team-a/digits/rounds/100/global.safetensors",
        "sha256": "b" * 64,
        "accepted": 600,
        "rejected": 400,
        "numExamples": 600 * 1797,
        "acceptedClusters": everyone[:600],
        "reportedClusters": everyone,
    }
    status["previousRound"] = {"round": 99, "attempt": 1, "reported": everyone}
    status["roundRecord"] = "s3://federated-learning/team-a/digits/records/round-99.json"
    for type_ in (st.SPEC_VALID, st.CLUSTERS_AVAILABLE, st.PROGRESSING):
        status.setdefault("conditions", []).append(
            {
                "type": type_,
                "status": "True",
                "reason": "Fine",
                "message": "z" * 1024,
                "observedGeneration": 1,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        )
    return status


def test_the_listed_detail_is_bounded_and_the_rest_counted() -> None:
    status = fleet_status()
    listed = status["participants"]
    assert len(listed) == st.MAX_LISTED_PARTICIPANTS
    assert {p["state"] for p in listed} == {"Failed"}  # those that need a look come first
    assert [p["cluster"] for p in listed] == sorted(p["cluster"] for p in listed)
    assert st.round_participants(status) == tuple(names())
    assert st.progress_of(status).participants == tuple(names())
    summary = status["participantSummary"]
    assert summary["total"] == CLUSTERS
    assert summary["listed"] == st.MAX_LISTED_PARTICIPANTS
    assert summary["states"] == {"Accepted": 600, "Failed": 300, "Training": 100}
    assert summary["reasons"] == {
        "DatasetNotFound": 100,
        "DeadlineExceeded": 100,
        "TrainingFailed": 100,
    }
    history = status["history"]
    assert len(history) == st.MAX_HISTORY
    assert [("failures" in e) for e in history].count(True) == st.HISTORY_WITH_FAILURES
    assert "failures" in history[-1]


def test_a_small_round_lists_everyone_and_names_no_one_twice() -> None:
    status: dict[str, Any] = {}
    st.set_participants(status, ["c2", "c1"], {"c1": st.ParticipantState("Training")})
    assert status["participants"] == [
        {"cluster": "c1", "state": "Training"},
        {"cluster": "c2", "state": "Pending"},
    ]
    assert "roundParticipants" not in status
    assert st.progress_of(status).participants == ("c1", "c2")


async def test_a_1000_cluster_status_is_stored_in_under_256_kib(sandbox: Sandbox) -> None:
    job = await h.create_job(sandbox, "fleet")
    stored = await h.hub(sandbox).replace(
        r.FEDERATED_LEARNING, {**job, "status": fleet_status()}, subresource="status"
    )
    size = len(json.dumps(stored, separators=(",", ":")))
    print(f"\nstatus of a 1,000-cluster round: {size / 1024:.1f} KiB")
    assert size <= LIMIT, size
    assert stored["status"]["participantSummary"]["total"] == CLUSTERS
    assert len(stored["status"]["roundParticipants"]) == CLUSTERS
