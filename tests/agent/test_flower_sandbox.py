"""A Flower app, unchanged, through the whole loop: the hub manager, the agents, training
Jobs that run its ClientApp, FedAvg on the hub. It must train exactly as the built-in digits
trainer does (the same reference accuracies, round by round)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fl_core.examples import digits
from fl_kube import resources as r
from fl_kube.waiting import wait_for

pytest.importorskip("flwr", reason="flwr is not installed (pip install -e '.[dev]' brings it)")

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "samples" / "digits-fedavg.yaml"
APP_DIR = REPO / "examples" / "flower-digits"
CLUSTERS = 3
ROUNDS = 3


async def _run_job(sb: Any, name: str, client: dict[str, Any]) -> dict[str, Any]:
    hub = sb.hub_api
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"].update(name=name, namespace="team-a")
    body["spec"]["framework"] = "flower"
    body["spec"]["server"].update(rounds=ROUNDS, minAvailableClients=CLUSTERS, roundTimeout="60s")
    body["spec"]["client"].update(client)
    await hub.create(r.FEDERATED_LEARNING, body, namespace="team-a")

    async def finished() -> dict[str, Any] | None:
        fl = await hub.get(r.FEDERATED_LEARNING, name, namespace="team-a")
        status = fl.get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed") else None

    status: dict[str, Any] = await wait_for(
        finished, timeout=100, interval=0.2, message=f"job {name} finishes"
    )
    assert status["phase"] == "Completed", status.get("message")
    return status


@pytest.mark.slow
async def test_a_flower_client_app_trains_as_the_built_in_trainer(sandbox_factory: Any) -> None:
    async with sandbox_factory(
        clusters=CLUSTERS, hub_manager=True, agents=True, datasets=True
    ) as sb:
        await sb.hub_api.create(r.NAMESPACE, {"metadata": {"name": "team-a"}})
        status = await _run_job(
            sb,
            "flower-digits",
            {
                "command": ["fl-train"],
                # The app folder (its pyproject.toml names the ClientApp) and the function
                # that gives the first model, as the server app would.
                "args": [
                    "--app-dir",
                    str(APP_DIR),
                    "--initial-arrays",
                    "flower_digits.task:initial_arrays",
                ],
            },
        )
    history = status["history"]
    assert [h["accepted"] for h in history] == [CLUSTERS] * ROUNDS
    accuracies = [float(h["accuracy"]) for h in history]
    assert accuracies == pytest.approx(digits.fedavg_reference(CLUSTERS, ROUNDS), abs=1e-9)
