"""The demo's progress display and round table, from FederatedLearning status objects."""

from __future__ import annotations

import io
from typing import Any

from fl_sandbox.demo_progress import JobState, Progress
from fl_sandbox.demo_report import format_table, rounds_from_history


def _job(
    phase: str, round_: int, states: list[str], history: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "status": {
            "phase": phase,
            "round": round_,
            "participants": [
                {"cluster": f"cluster{i}", "state": s} for i, s in enumerate(states, 1)
            ],
            "history": history,
        }
    }


ROUND_1 = {"round": 1, "accuracy": 0.91, "loss": 0.5, "participants": 2, "durationSeconds": 1.5}
SEQUENCE = [
    _job("Waiting", 0, [], []),
    _job("Running", 1, ["Training", "Training"], []),
    _job("Running", 1, ["Accepted", "Training"], []),
    _job("Running", 1, ["Accepted", "Accepted"], []),
    _job("Running", 2, ["Pending", "Pending"], [ROUND_1]),
    _job("Running", 2, ["Pending", "Pending"], [ROUND_1]),  # no visible change
]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_prints_one_line_per_change() -> None:
    out = io.StringIO()
    progress = Progress(out)
    for obj in SEQUENCE:
        progress.update(JobState.of(obj, rounds=2))
    progress.finish()
    lines = out.getvalue().splitlines()
    assert lines == [
        "  Waiting: waiting for the placement and the agents",
        "  Running: round 1/2, 0/2 clusters reported",
        "  Running: round 1/2, 1/2 clusters reported",
        "  Running: round 1/2, 2/2 clusters reported",
        "  round 1/2 done, accuracy 0.9100, loss 0.5000, 1.5s",
        "  Running: round 2/2, 0/2 clusters reported, accuracy 0.9100 after round 1",
    ]


def test_terminal_output_redraws_one_line_and_keeps_round_lines() -> None:
    out = _Terminal()
    progress = Progress(out)
    progress.step("starting")
    for obj in SEQUENCE:
        progress.update(JobState.of(obj, rounds=2))
    progress.finish()
    text = out.getvalue()
    assert text.startswith("- starting\n")
    assert text.count("\r\033[K  Running: round 1/2") == 3
    assert "round 1/2 done, accuracy 0.9100" in text
    assert text.endswith("\r\033[K"), "the live line is cleared at the end"


def test_table_keeps_the_last_attempt_of_a_retried_round() -> None:
    history = [
        {"round": 1, "attempt": 1, "participants": 3, "durationSeconds": 9.0},
        {"round": 1, "attempt": 2, "accuracy": 0.9, "loss": 0.4, "participants": 3,
         "durationSeconds": 2.0},
        {"round": 2, "accuracy": 0.95, "loss": 0.2, "participants": 2, "durationSeconds": 1.25},
    ]  # fmt: skip
    rows = rounds_from_history(history)
    assert [(r.round, r.accuracy, r.seconds) for r in rows] == [(1, 0.9, 2.0), (2, 0.95, 1.25)]
    table = format_table(rows).splitlines()
    assert table[1].split() == ["1", "0.9000", "0.4000", "3", "2.00"]
    assert table[2].split() == ["2", "0.9500", "0.2000", "2", "1.25"]


def test_a_capped_participant_list_counts_from_the_summary() -> None:
    """Above 50 participants the hub lists some and counts all in participantSummary."""
    obj = _job("Running", 1, ["Failed"] + ["Training"] * 49, [])
    obj["status"]["participantSummary"] = {
        "total": 300,
        "listed": 50,
        "states": {"Accepted": 120, "Failed": 1, "Training": 179},
    }
    state = JobState.of(obj, rounds=3)
    assert (state.clusters, state.reported) == (300, 121)
    assert "121/300 clusters reported" in state.line()
