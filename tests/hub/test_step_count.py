"""The manager's work per round grows with the fleet, not with its square: the reports of
a round's participants arrive in bursts, and a burst costs one pass over the job, not one
pass per report (each pass reads every participant's report and round spec)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SandboxFactory
from tests.hub import helpers as h

pytestmark = pytest.mark.slow

CLUSTERS = 40
ROUNDS = 2
REPO = Path(__file__).resolve().parents[2]


def _sample(running: h.RunningManager, name: str, labels: dict[str, str]) -> float:
    return running.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_passes_per_round_stay_well_below_one_per_report(
    sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the Job's process imports the trainer
    async with (
        sandbox_factory(clusters=CLUSTERS, agents=True, datasets=False, start_timeout=120) as sb,
        h.manager(sb) as running,
    ):
        await h.create_job(
            sb,
            "steps",
            rounds=ROUNDS,
            min_available=CLUSTERS,
            timeout="5m",
            client={
                "command": ["fl-train"],
                "args": ["--trainer", "benchmarks.noop_trainer:NoopTrainer"],
            },
        )
        status = await h.wait_status(
            sb, "steps", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=240
        )
        assert status["phase"] == "Completed", status.get("message")
        assert [e["accepted"] for e in status["history"]] == [CLUSTERS] * ROUNDS
        # Each participant reports several times a round (its round spec applied, Training,
        # UpdateReady) and each report asks for a pass over the job; each pass reads every
        # participant. What the manager derives per cluster must follow the changes (a few
        # per participant and round), not the passes times the participants.
        views = _sample(running, "federated_learning_hub_derived_total", {"kind": "addon_view"})
        specs = _sample(running, "federated_learning_hub_derived_total", {"kind": "round_spec"})
        assert specs >= CLUSTERS * ROUNDS  # each participant got its round spec each round
        assert specs / ROUNDS <= 3 * CLUSTERS, specs
        assert views / ROUNDS <= 5 * CLUSTERS, views
