"""The real hub manager against a sandbox hub: a job from Waiting to Completed, with the
clusters' side played through the API as agents play it."""

from __future__ import annotations

from typing import Any

import numpy as np

from fl_contract.weights import decode_weights
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from tests.hub import helpers as h


async def test_full_job_completes(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=3) as sb, h.manager(sb) as running:
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "digits", rounds=3, min_available=3)
            uid = job["metadata"]["uid"]
            for round_number in (1, 2, 3):
                for i, cluster in enumerate(cs.values()):
                    spec = await cluster.wait_spec(uid, round_number=round_number)
                    if round_number == 1:
                        assert spec.global_model is None
                    else:
                        assert spec.global_model is not None
                    await cluster.train(spec, examples=100 * (i + 1), shift=float(i + 1))
            status = await h.wait_status(sb, "digits", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)

        assert [e["round"] for e in status["history"]] == [1, 2, 3]
        assert all(e["accepted"] == 3 for e in status["history"])
        model = status["model"]
        assert model["round"] == 3
        weights = decode_weights(await h.store_bytes(sb, model["uri"], model["sha256"]))
        # FedAvg of shifts 1, 2, 3 weighted 100, 200, 300 = 14/6 per round, from zero.
        expected = 3 * (1 * 100 + 2 * 200 + 3 * 300) / 600
        assert np.allclose(weights["dense/bias"], expected, atol=1e-5)
        assert status["metric"].startswith("accuracy=")
        assert h.condition(status, "Succeeded")["status"] == "True"  # type: ignore[index]
        # Round specs are withdrawn once the job is over.
        assert await wait_for(
            lambda: _no_works(sb, uid), timeout=10, message="ManifestWorks removed"
        )
        samples = running.metrics.registry.get_sample_value(
            "federated_learning_rounds_completed_total",
            {"namespace": "team-a", "name": "digits"},
        )
        assert samples == 3


async def _no_works(sb: Sandbox, uid: str) -> bool:
    return not await h.works_of(sb, uid)
