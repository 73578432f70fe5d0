"""A Flower app, unchanged, through the whole loop: the hub manager, the agents, training
Jobs that run its ClientApp, FedAvg on the hub. It must train exactly as the built-in digits
trainer does (the same reference accuracies, round by round)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fl_contract.weights import decode_weights
from fl_core.examples import digits
from fl_kube import resources as r
from fl_kube.waiting import wait_for

pytest.importorskip("flwr", reason="flwr is not installed (pip install -e '.[dev]' brings it)")

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "samples" / "digits-fedavg.yaml"
APP_DIR = REPO / "examples" / "flower-digits"
INITIAL_ARRAYS = "flower_digits.task:initial_arrays"
NUMPY_CLIENT = "flower_digits.numpy_client:app"
CLUSTERS = 3
ROUNDS = 2


async def _run_job(
    sb: Any, name: str, client: dict[str, Any], *, evaluator: str | None = "digits"
) -> dict[str, Any]:
    hub = sb.hub_api
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"].update(name=name, namespace="team-a")
    body["spec"]["framework"] = "flower"
    body["spec"]["server"].update(rounds=ROUNDS, minAvailableClients=CLUSTERS, roundTimeout="60s")
    if evaluator is None:
        del body["spec"]["server"]["evaluation"]
    body["spec"]["client"].update(command=["fl-train"], **client)
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
    """Both of Flower's client APIs: the Message-API ClientApp its pyproject.toml names, with
    the first model from the app's function as its ServerApp builds it, and the legacy
    NumPyClient, whose first model is its get_parameters() (a list: arrays 0 and 1, which
    the hub's digits evaluator does not know, so its job has none)."""
    async with sandbox_factory(
        clusters=CLUSTERS, hub_manager=True, agents=True, datasets=True
    ) as sb:
        await sb.hub_api.create(r.NAMESPACE, {"metadata": {"name": "team-a"}})
        message_api = await _run_job(
            sb,
            "message-api",
            {"args": ["--app-dir", str(APP_DIR), "--initial-arrays", INITIAL_ARRAYS]},
        )
        numpy_client = await _run_job(
            sb,
            "numpy-client",
            {"args": ["--app-dir", str(APP_DIR), "--client-app", NUMPY_CLIENT]},
            evaluator=None,
        )
    history = message_api["history"]
    assert [h["accepted"] for h in history] == [CLUSTERS] * ROUNDS
    accuracies = [float(h["accuracy"]) for h in history]
    assert accuracies == pytest.approx(digits.fedavg_reference(CLUSTERS, ROUNDS), abs=1e-9)

    assert [h["accepted"] for h in numpy_client["history"]] == [CLUSTERS] * ROUNDS
    final = _model(message_api)
    legacy = _model(numpy_client)
    np.testing.assert_array_equal(legacy["0"], final["W"])
    np.testing.assert_array_equal(legacy["1"], final["b"])


def _model(status: dict[str, Any]) -> dict[str, np.ndarray]:
    uri = str(status["model"]["uri"])
    assert uri.startswith("file://")
    return decode_weights(Path(uri.removeprefix("file://")).read_bytes())
