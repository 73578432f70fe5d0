"""The real hub manager against a sandbox hub: a job from Waiting to Completed, with the
clusters' side played through the API as agents play it."""

from __future__ import annotations

from typing import Any

import numpy as np

from fl_contract import naming
from fl_contract.weights import decode_weights
from fl_kube import resources as r
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


async def test_a_robust_strategy_ignores_a_wild_cluster(sandbox_factory: Any) -> None:
    """FedMedian through the whole loop: one cluster's update is far off every round."""
    async with sandbox_factory(clusters=3) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(
                sb, "robust", rounds=2, min_available=3, server={"strategy": {"name": "FedMedian"}}
            )
            uid = job["metadata"]["uid"]
            for round_number in (1, 2):
                for cluster, shift in zip(cs.values(), (1.0, 2.0, 1000.0), strict=True):
                    spec = await cluster.wait_spec(uid, round_number=round_number)
                    await cluster.train(spec, shift=shift)
            status = await h.wait_status(sb, "robust", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        assert all(e["accepted"] == 3 for e in status["history"])
        weights = decode_weights(
            await h.store_bytes(sb, status["model"]["uri"], status["model"]["sha256"])
        )
        # The coordinate-wise median of shifts 1, 2, 1000 is 2, added to the model each round.
        assert np.allclose(weights["dense/bias"], 2 * 2.0, atol=1e-5)


async def _no_works(sb: Sandbox, uid: str) -> bool:
    return not await h.works_of(sb, uid)


async def test_requests_per_cluster_per_round(sandbox_factory: Any) -> None:
    """The manager's API requests while a job runs, from the hub's request log."""
    clusters, rounds = 3, 4
    async with sandbox_factory(clusters=clusters) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            assert sb.hub is not None

            async def granted() -> bool:  # the manager is synced and granted every agent
                binding = naming.agent_role_binding_name()
                return all([await h.exists(sb, r.ROLE_BINDING, binding, name) for name in cs])

            await wait_for(granted, timeout=10, message="manager started")
            job = await h.create_job(sb, "counted", rounds=rounds, min_available=clusters)
            start = len(sb.hub.request_log)
            uid = job["metadata"]["uid"]
            for round_number in range(1, rounds + 1):
                for i, cluster in enumerate(cs.values()):
                    spec = await cluster.wait_spec(uid, round_number=round_number)
                    await cluster.train(spec, shift=float(i + 1))
            await h.wait_status(sb, "counted", h.phase_is("Completed"))
            await wait_for(lambda: _no_works(sb, uid), timeout=10, message="works removed")
        finally:
            await h.close_clusters(cs)
        requests = [
            rec
            for rec in sb.hub.request_log[start:]
            if rec.user == h.MANAGER_USER and "watch=" not in rec.query
        ]
        per_job = [  # once per job (finalizer, Placement, ManagedClusterSetBinding) or
            rec  # per round whatever the clusters (the job's Events)
            for rec in requests
            if "/placements/" in rec.path
            or "/managedclustersetbindings/" in rec.path
            or "/events" in rec.path
            or (rec.method == "PATCH" and rec.path.endswith("/federatedlearnings/counted"))
        ]
        per_cluster_round = (len(requests) - len(per_job)) / (clusters * rounds)
        breakdown: dict[str, int] = {}
        for rec in requests:
            kind = f"{rec.method} {rec.status} {'/'.join(rec.path.split('/')[-3:])}"
            breakdown[kind] = breakdown.get(kind, 0) + 1
        print(
            f"\nmanager requests: {len(requests)} for {clusters} clusters x {rounds} rounds, "
            f"{len(per_job)} of them once per job: {per_cluster_round:.2f} per cluster per round"
        )
        for kind, count in sorted(breakdown.items()):
            print(f"  {count:4d}  {kind}")
        assert per_cluster_round <= 3


async def test_fraction_fit_trains_a_subset_each_round(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=3) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(
                sb, "sampled", rounds=3, min_available=3, min_fit=1, client={"fractionFit": 0.5}
            )
            uid = job["metadata"]["uid"]
            chosen_per_round = []
            for round_number in (1, 2, 3):
                status = await h.wait_status(sb, "sampled", h.in_round(round_number))
                chosen = [p["cluster"] for p in status["participants"]]
                chosen_per_round.append(chosen)
                assert len(chosen) == 2

                async def sent_to_chosen(chosen: list[str] = chosen) -> bool:
                    works = await h.works_of(sb, uid)
                    return sorted(w["metadata"]["namespace"] for w in works) == chosen

                await wait_for(sent_to_chosen, timeout=10, message="works only for the chosen")
                for name in chosen:
                    spec = await cs[name].wait_spec(uid, round_number=round_number)
                    await cs[name].train(spec, shift=float(name[-1]))
            status = await h.wait_status(sb, "sampled", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        assert [e["participants"] for e in status["history"]] == [2, 2, 2]
        assert status["clusters"] == 2
