"""Differential privacy through the whole loop: the hub manager and the agents in the
sandbox over HTTP, the digits trainer running DP-SGD in each cluster's Job."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
import yaml
from dp_accounting import rdp

from fl_contract import naming
from fl_contract.models import claimed_samples
from fl_contract.weights import decode_weights
from fl_kube import resources as r
from fl_kube.waiting import wait_for

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "digits-fedavg.yaml"
NS = "team-a"
SIGMA, CLIP, DELTA, BATCH = 1.0, 1.0, 1e-5, 32


def _direct_epsilon(rate: float, steps: int, sigma: float = SIGMA) -> float:
    engine = rdp.RdpAccountant()
    engine.compose(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    return float(engine.get_epsilon(DELTA))


def _job(name: str, *, rounds: int, dp: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    body["metadata"] = {"name": name, "namespace": NS}
    body["spec"]["server"].update(rounds=rounds, minAvailableClients=2, roundTimeout="60s")
    body["spec"]["client"]["trainingConfig"] = {"local_epochs": 1, "batch_size": BATCH}
    body["spec"]["privacy"] = {"differentialPrivacy": dp}
    return body


async def _finished(hub: Any, name: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        fl = await hub.get(r.FEDERATED_LEARNING, name, namespace=NS)
        status = fl.get("status") or {}
        return status if status.get("phase") in ("Completed", "Failed") else None

    return dict(await wait_for(done, timeout=90, interval=0.2, message="job ends"))


async def _samples(hub: Any, cluster: str) -> int:
    """The samples= of the cluster's digits claim, once its agent published it."""
    claim = naming.dataset_claim_name("digits")

    async def published() -> int | None:
        managed = await hub.get(r.MANAGED_CLUSTER, cluster)
        claims = (managed.get("status") or {}).get("clusterClaims") or []
        value = next((c["value"] for c in claims if c["name"] == claim), None)
        return claimed_samples(value) if value else None

    return int(await wait_for(published, timeout=30, message=f"{cluster} publishes {claim}"))


@pytest.mark.slow
async def test_record_level_dp_reports_epsilon_and_stops_at_the_budget(
    sandbox_factory: Any,
) -> None:
    async with sandbox_factory(clusters=2, hub_manager=True, agents=True, datasets=True) as sb:
        hub = sb.hub_api
        await hub.create(r.NAMESPACE, {"metadata": {"name": NS}})
        samples = {c: await _samples(hub, c) for c in sb.cluster_names}
        per_round = {c: (BATCH / n, math.ceil(n / BATCH)) for c, n in samples.items()}

        def after(rounds: int) -> dict[str, float]:
            return {c: _direct_epsilon(q, k * rounds) for c, (q, k) in per_round.items()}

        # A budget that two rounds fit in and three do not.
        budget = (max(after(2).values()) + max(after(3).values())) / 2
        dp = {"clipNorm": CLIP, "noiseMultiplier": SIGMA, "delta": DELTA, "maxEpsilon": budget}
        await hub.create(r.FEDERATED_LEARNING, _job("dp-budget", rounds=5, dp=dp), namespace=NS)
        status = await _finished(hub, "dp-budget")

        assert status["phase"] == "Completed", status.get("message")
        succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
        assert succeeded["reason"] == "PrivacyBudgetExhausted"
        assert "round 3 not started" in status["message"]
        # The final model is the last one within budget: round 2's.
        assert status["model"]["round"] == 2
        assert [h["round"] for h in status["history"]] == [1, 2]
        assert status["model"]["sha256"] == status["history"][-1]["modelSha256"]

        privacy = status["privacy"]
        expected = after(2)
        assert privacy["mechanism"] == "PoissonSubsampledGaussian"
        assert (privacy["accountant"], privacy["noiseMultiplier"], privacy["delta"]) == (
            "RDP",
            SIGMA,
            DELTA,
        )
        by_cluster = {c["cluster"]: c for c in privacy["clusters"]}
        assert set(by_cluster) == set(samples)
        for cluster, (rate, steps) in per_round.items():
            entry = by_cluster[cluster]
            assert (entry["samplingRate"], entry["steps"], entry["rounds"]) == (rate, 2 * steps, 2)
            assert entry["epsilon"] == pytest.approx(expected[cluster], rel=1e-9)
        assert privacy["epsilon"] == pytest.approx(max(expected.values()), rel=1e-9)
        assert privacy["epsilon"] <= budget
        # Each participant's entry carries the epsilon its agent reported for round 2.
        for participant in status["participants"]:
            assert participant["epsilon"] == pytest.approx(expected[participant["cluster"]])
        assert status["history"][0]["epsilon"] == pytest.approx(max(after(1).values()))

        events = (await hub.list(r.EVENT, namespace=NS)).items
        assert any(e.get("reason") == "PrivacyBudgetExhausted" for e in events)


@pytest.mark.slow
async def test_cluster_level_dp_clips_and_noises_on_the_hub(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2, hub_manager=True, agents=True, datasets=True) as sb:
        hub = sb.hub_api
        await hub.create(r.NAMESPACE, {"metadata": {"name": NS}})
        dp = {"level": "Cluster", "clipNorm": 0.5, "noiseMultiplier": 0.01, "delta": DELTA}
        await hub.create(r.FEDERATED_LEARNING, _job("dp-cluster", rounds=1, dp=dp), namespace=NS)
        status = await _finished(hub, "dp-cluster")

        assert status["phase"] == "Completed", status.get("message")
        privacy = status["privacy"]
        assert (privacy["level"], privacy["samplingRate"], privacy["steps"]) == ("Cluster", 1.0, 1)
        assert privacy["epsilon"] == pytest.approx(_direct_epsilon(1.0, 1, sigma=0.01), rel=1e-9)
        # Round 1 starts from zero weights: its model is the mean of the clusters' changes,
        # each clipped to 0.5, plus noise of standard deviation 0.01 * 0.5 / 2 per weight.
        path = Path(status["model"]["uri"].removeprefix("file://"))
        model = decode_weights(await asyncio.to_thread(path.read_bytes))
        change = math.sqrt(sum(float(np.square(a).sum()) for a in model.values()))
        weights = sum(a.size for a in model.values())
        noise = 0.01 * 0.5 / 2 * math.sqrt(weights)
        assert change <= 0.5 + 2 * noise  # unclipped, one local epoch moves it by 1.6 to 2


async def test_invalid_dp_fields_make_the_spec_invalid(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=1, hub_manager=True, agents=False) as sb:
        hub = sb.hub_api
        await hub.create(r.NAMESPACE, {"metadata": {"name": NS}})
        job = _job("dp-invalid", rounds=1, dp={"clipNorm": 1.0, "noiseMultiplier": 1.0})
        job["spec"]["client"]["args"] = ["--trainer", "mine:Trainer"]
        await hub.create(r.FEDERATED_LEARNING, job, namespace=NS)

        async def invalid() -> dict[str, Any] | None:
            fl = await hub.get(r.FEDERATED_LEARNING, "dp-invalid", namespace=NS)
            conditions = (fl.get("status") or {}).get("conditions") or []
            found = next((c for c in conditions if c["type"] == "SpecValid"), None)
            return found if found and found["status"] == "False" else None

        condition = await wait_for(invalid, timeout=30, message="SpecValid=False")
        assert condition["message"].startswith("spec.privacy.differentialPrivacy.trainerSupport:")
