"""Rounds that do not go to plan: a manager restarted mid-round, a cluster that never
reports, corrupt or malformed updates, late reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from fl_contract import naming
from fl_contract.weights import decode_weights, encode_weights
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from tests.hub import helpers as h


async def test_restart_after_every_report(sandbox_factory: Any) -> None:
    """Killing the manager between any two reports: same rounds, each update counted once."""
    async with sandbox_factory(clusters=3) as sb:
        cs = await h.clusters(sb)
        running = h.start_manager(sb)
        restarts = 0
        try:
            job = await h.create_job(sb, "resume", rounds=2, min_available=3)
            uid = job["metadata"]["uid"]
            for round_number in (1, 2):
                for i, cluster in enumerate(cs.values()):
                    spec = await cluster.wait_spec(uid, round_number=round_number)
                    await running.stop()
                    await cluster.train(spec, examples=100 * (i + 1), shift=float(i + 1))
                    running = h.start_manager(sb)
                    restarts += 1
            status = await h.wait_status(sb, "resume", h.phase_is("Completed"))
        finally:
            await running.stop()
            await h.close_clusters(cs)
        assert restarts == 6
        assert [e["round"] for e in status["history"]] == [1, 2]
        assert [e["accepted"] for e in status["history"]] == [3, 3]
        assert [e["numExamples"] for e in status["history"]] == [600, 600]
        weights = decode_weights(
            await h.store_bytes(sb, status["model"]["uri"], status["model"]["sha256"])
        )
        expected = 2 * (1 * 100 + 2 * 200 + 3 * 300) / 600  # an update counted twice moves it
        assert np.allclose(weights["dense/bias"], expected, atol=1e-5)
        assert not status.get("pendingModel")


async def test_silent_cluster_quorum_then_late_report(sandbox_factory: Any) -> None:
    """A cluster that never reports: each round closes at its deadline with the quorum;
    its report for a closed round is recorded as late and not aggregated."""
    async with sandbox_factory(clusters=3) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        c1, c2, c3 = cs.values()
        try:
            job = await h.create_job(
                sb, "quorum", rounds=2, min_available=3, min_fit=2, timeout="1500ms"
            )
            uid = job["metadata"]["uid"]
            late_spec = None
            for round_number in (1, 2):
                for cluster, shift in ((c1, 1.0), (c2, 3.0)):
                    spec = await cluster.wait_spec(uid, round_number=round_number)
                    await cluster.train(spec, shift=shift)
                spec3 = await c3.wait_spec(uid, round_number=round_number)
                if round_number == 1:
                    late_spec = spec3
                    await h.wait_status(sb, "quorum", lambda s: s.get("round") == 2)
                    await c3.train(late_spec, shift=100.0)  # after the round closed
            status = await h.wait_status(sb, "quorum", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        assert [e["accepted"] for e in status["history"]] == [2, 2]
        late = [u for u in status.get("rejectedUpdates") or [] if u["reason"] == "Late"]
        assert [(u["cluster"], u["round"]) for u in late] == [("cluster3", 1)]
        weights = decode_weights(
            await h.store_bytes(sb, status["model"]["uri"], status["model"]["sha256"])
        )
        assert np.allclose(weights["dense/bias"], 4.0)  # the late shift of 100 never counted


async def test_silent_cluster_without_quorum_fails_after_retries(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        c1 = cs["cluster1"]
        try:
            job = await h.create_job(
                sb, "strict", rounds=2, min_available=2, timeout="1s", retries=1
            )
            uid = job["metadata"]["uid"]
            for attempt in (1, 2):
                spec = await c1.wait_spec(uid, round_number=1, attempt=attempt)
                assert spec.update_uri.endswith(
                    "cluster1.safetensors" if attempt == 1 else "cluster1.a2.safetensors"
                )
                await c1.train(spec)
            status = await h.wait_status(sb, "strict", h.phase_is("Failed"))
        finally:
            await h.close_clusters(cs)
        assert status["attempt"] == 2
        assert "history" not in status
        succeeded = h.condition(status, "Succeeded")
        assert succeeded is not None
        assert succeeded["reason"] == "QuorumNotReached"
        assert "round 1: 1 of 2 updates accepted by the deadline" in succeeded["message"]
        assert await h.works_of(sb, uid) == [] or await _eventually_no_works(sb, uid)


async def _eventually_no_works(sb: Any, uid: str) -> bool:
    from fl_kube.waiting import wait_for

    async def none_left() -> bool:
        return not await h.works_of(sb, uid)

    return bool(await wait_for(none_left, timeout=10, message="works removed"))


async def test_corrupt_and_malformed_updates_are_rejected(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=3) as sb, h.manager(sb) as running:
        cs = await h.clusters(sb)
        c1, c2, c3 = cs.values()
        try:
            job = await h.create_job(sb, "guard", rounds=1, min_available=3, min_fit=1)
            uid = job["metadata"]["uid"]
            spec1 = await c1.wait_spec(uid, round_number=1)
            await c1.train(spec1, shift=1.0)
            spec2 = await c2.wait_spec(uid, round_number=1)
            await c2.train(spec2, shift=5.0, claimed_sha="0" * 64)  # sha256 mismatch
            spec3 = await c3.wait_spec(uid, round_number=1)
            nan = encode_weights(
                {k: np.full(v, np.nan, dtype=np.float32) for k, v in h.SHAPES.items()}
            )
            await c3.train(spec3, data=nan)
            status = await h.wait_status(sb, "guard", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        reasons = {(u["cluster"], u["reason"]) for u in status["rejectedUpdates"]}
        assert reasons == {("cluster2", "ChecksumMismatch"), ("cluster3", "NonFinite")}
        states = {p["cluster"]: (p["state"], p.get("reason")) for p in status["participants"]}
        assert states == {
            "cluster1": ("Accepted", None),
            "cluster2": ("Rejected", "ChecksumMismatch"),
            "cluster3": ("Rejected", "NonFinite"),
        }
        assert status["history"][0]["accepted"] == 1
        assert status["history"][0]["rejected"] == 2
        weights = decode_weights(
            await h.store_bytes(sb, status["model"]["uri"], status["model"]["sha256"])
        )
        assert np.allclose(weights["dense/bias"], 1.0)
        registry = running.metrics.registry
        for reason in ("ChecksumMismatch", "NonFinite"):
            value = registry.get_sample_value(
                "federated_learning_updates_total", {"result": "rejected", "reason": reason}
            )
            assert value == 1


async def test_shape_mismatch_against_the_global_model(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        c1, c2 = cs.values()
        try:
            job = await h.create_job(sb, "shapes", rounds=2, min_available=2, min_fit=1)
            uid = job["metadata"]["uid"]
            for cluster, shift in ((c1, 1.0), (c2, 2.0)):
                await cluster.train(await cluster.wait_spec(uid, round_number=1), shift=shift)
            spec = await c1.wait_spec(uid, round_number=2)
            await c1.train(spec)
            spec = await c2.wait_spec(uid, round_number=2)
            wrong = encode_weights(
                {
                    "dense/kernel": np.zeros((5, 3), np.float32),
                    "dense/bias": np.zeros(3, np.float32),
                }
            )
            await c2.train(spec, data=wrong)
            status = await h.wait_status(sb, "shapes", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        assert [(u["cluster"], u["round"], u["reason"]) for u in status["rejectedUpdates"]] == [
            ("cluster2", 2, "ShapeMismatch")
        ]


async def test_server_optimiser_state_survives_a_restart(sandbox_factory: Any) -> None:
    """FedAdam keeps moments between rounds: a job restarted between rounds ends with the
    same global model, bit for bit, as one that ran through."""
    adam = {"strategy": {"name": "FedAdam", "parameters": {"eta": 0.1}}}
    async with sandbox_factory(clusters=2) as sb:
        cs = await h.clusters(sb)
        running = h.start_manager(sb)
        try:
            finals = []
            for namespace, restart in (("straight", False), ("restarted", True)):
                job = await h.create_job(sb, "adam", namespace=namespace, rounds=3, server=adam)
                uid = job["metadata"]["uid"]
                for round_number in (1, 2, 3):
                    if restart and round_number == 3:  # round 2 published, moments saved
                        await h.wait_status(
                            sb,
                            "adam",
                            lambda s: (s.get("serverState") or {}).get("round") == 2,
                            namespace=namespace,
                        )
                        await running.stop()
                        running = h.start_manager(sb)
                    for i, cluster in enumerate(cs.values()):
                        spec = await cluster.wait_spec(uid, round_number=round_number)
                        # Pseudo-gradients that change from round to round, so the
                        # moments matter (equal ones make bias-corrected Adam stateless).
                        shift = (i + 1) * round_number * (1.0 if round_number % 2 else -3.0)
                        await cluster.train(spec, shift=shift, examples=50 * (i + 1))
                status = await h.wait_status(
                    sb, "adam", h.phase_is("Completed"), namespace=namespace
                )
                assert status["serverState"]["round"] == 3
                finals.append(status["model"]["sha256"])
        finally:
            await running.stop()
            await h.close_clusters(cs)
        assert finals[0] == finals[1]


async def test_initial_model_is_round_one_global_model(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            from fl_contract.models import StoreConfig
            from fl_core.store import open_store

            store = open_store(StoreConfig(uri=sb.model_store_dir.resolve().as_uri()))
            initial = {k: np.full(v, 10.0, dtype=np.float32) for k, v in h.SHAPES.items()}
            ref = await store.put("seeds/initial.safetensors", encode_weights(initial))
            await store.close()
            job = await h.create_job(
                sb,
                "seeded",
                rounds=1,
                server={"initialModel": {"uri": ref.uri, "sha256": ref.sha256}},
            )
            uid = job["metadata"]["uid"]
            for i, cluster in enumerate(cs.values()):
                spec = await cluster.wait_spec(uid, round_number=1)
                assert spec.global_model == ref
                await cluster.train(spec, shift=float(i))
            status = await h.wait_status(sb, "seeded", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        weights = decode_weights(
            await h.store_bytes(sb, status["model"]["uri"], status["model"]["sha256"])
        )
        assert np.allclose(weights["dense/bias"], 10.5)


async def _crash_after_recording(sb: Any, *, name: str) -> dict[str, Any]:
    """Rewind the job's status to the moment after the result of round 1 was recorded and
    before it was published, as a manager killed at that point leaves it."""
    obj = await h.get_job(sb, name)
    status = obj["status"]
    (entry,) = status["history"]
    pending = {
        "round": 1,
        "attempt": 1,
        "uri": status["model"]["uri"],
        "sha256": status["model"]["sha256"],
        "accepted": entry["accepted"],
        "rejected": entry["rejected"],
        "numExamples": entry["numExamples"],
        "acceptedClusters": ["cluster1", "cluster2"],
        "reportedClusters": ["cluster1", "cluster2"],
    }
    for field in ("history", "model", "previousRound", "metric"):
        status.pop(field, None)
    status.update(round=1, attempt=1, pendingModel=pending)
    # Round 2 had started: undo that too, the participants of round 1 stand.
    status["participants"] = [{"cluster": c, "state": "Accepted"} for c in ("cluster1", "cluster2")]
    await h.hub(sb).replace(r.FEDERATED_LEARNING, obj, subresource="status")
    return pending


async def test_restart_after_the_result_was_written(sandbox_factory: Any) -> None:
    """Recorded and written, not yet published: the restarted manager publishes it without
    aggregating or writing the round again."""
    async with sandbox_factory(clusters=2) as sb:
        cs = await h.clusters(sb)
        running = h.start_manager(sb)
        try:
            job = await h.create_job(sb, "crash", rounds=2)
            uid = job["metadata"]["uid"]
            await h.train_round(cs, uid, 1)
            await h.wait_status(sb, "crash", lambda s: (s.get("model") or {}).get("round") == 1)
            await running.stop()
            pending = await _crash_after_recording(sb, name="crash")
            model_file = _path(pending["uri"])
            written_at = model_file.stat().st_mtime_ns

            running = h.start_manager(sb)
            status = await h.wait_status(sb, "crash", lambda s: s.get("round") == 2)
            assert status["history"][0]["modelSha256"] == pending["sha256"]
            assert "pendingModel" not in status
            assert model_file.stat().st_mtime_ns == written_at  # never written twice
            await h.train_round(cs, uid, 2)
            status = await h.wait_status(sb, "crash", h.phase_is("Completed"))
        finally:
            await running.stop()
            await h.close_clusters(cs)
        assert [e["round"] for e in status["history"]] == [1, 2]


async def test_restart_before_the_result_was_written(sandbox_factory: Any) -> None:
    """Recorded but never written: the restarted manager aggregates the round again from the
    reports in the add-on statuses (the same update set gives the same model)."""
    async with sandbox_factory(clusters=2) as sb:
        cs = await h.clusters(sb)
        running = h.start_manager(sb)
        try:
            # The job is completed first and then set back: keep the round's updates, which
            # a real crash between recording and writing would not have deleted yet.
            job = await h.create_job(
                sb, "lost", rounds=1, server={"storage": {"retention": {"keepUpdates": 1}}}
            )
            uid = job["metadata"]["uid"]
            await h.train_round(cs, uid, 1)
            done = await h.wait_status(sb, "lost", h.phase_is("Completed"))
            await running.stop()
            obj = await h.get_job(sb, "lost")
            obj["status"]["phase"] = "Running"
            obj["status"].pop("completionTime", None)
            await h.hub(sb).replace(r.FEDERATED_LEARNING, obj, subresource="status")
            pending = await _crash_after_recording(sb, name="lost")
            _path(pending["uri"]).unlink()

            running = h.start_manager(sb)
            status = await h.wait_status(sb, "lost", h.phase_is("Completed"))
        finally:
            await running.stop()
            await h.close_clusters(cs)
        assert [e["round"] for e in status["history"]] == [1]
        assert status["model"]["sha256"] == done["model"]["sha256"]
        assert _path(status["model"]["uri"]).exists()


def _path(uri: str) -> Path:
    return Path(unquote(urlsplit(uri).path))


async def test_forged_and_second_updates_are_rejected(sandbox_factory: Any) -> None:
    """A report naming another cluster's update, and a second different update from a
    cluster already counted, are refused and recorded; the first update stands."""
    async with sandbox_factory(clusters=3) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        c1, c2, c3 = cs.values()
        try:
            job = await h.create_job(sb, "forged", rounds=1, min_available=3, min_fit=1)
            uid = job["metadata"]["uid"]
            first = await c1.train(await c1.wait_spec(uid, round_number=1), shift=1.0)
            spec3 = await c3.wait_spec(uid, round_number=1)
            accepted = await c3.train(spec3, shift=3.0)
            await h.wait_status(
                sb,
                "forged",
                lambda s: (
                    {p["cluster"]: p["state"] for p in s.get("participants") or []}.get("cluster3")
                    == "Accepted"
                ),
            )
            # A second, different update for the round. (Reported, not written over the
            # first: the first waits in the store for cluster2 and is folded in name order.)
            assert accepted.update is not None
            second = accepted.update.model_copy(update={"sha256": "5" * 64})
            await c3.report(spec3, accepted.model_copy(update={"update": second}))

            def duplicate_recorded(status: dict[str, Any]) -> bool:
                reasons = {u["reason"] for u in status.get("rejectedUpdates") or []}
                return "Duplicate" in reasons

            await h.wait_status(sb, "forged", duplicate_recorded)
            spec2 = await c2.wait_spec(uid, round_number=1)
            assert first.update is not None
            forged = first.model_copy(update={"cluster": "cluster2"})
            await c2.report(spec2, forged)  # cluster1's update, claimed by cluster2
            status = await h.wait_status(sb, "forged", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        reasons = sorted((u["cluster"], u["reason"]) for u in status["rejectedUpdates"])
        assert reasons == [("cluster2", "UnexpectedUri"), ("cluster3", "Duplicate")]
        weights = decode_weights(
            await h.store_bytes(sb, status["model"]["uri"], status["model"]["sha256"])
        )
        assert np.allclose(weights["dense/bias"], 2.0)  # mean of 1 and 3; the second never counted


async def test_examples_beyond_the_published_dataset_are_rejected(sandbox_factory: Any) -> None:
    """num_examples is a claim: a cluster weighs at most what its dataset ClusterClaim says
    it holds. Junk weights claiming 10**15 examples would take over FedAvg; they are refused
    with both numbers, and the model is the honest cluster's."""
    async with sandbox_factory(clusters=2, datasets=False) as sb, h.manager(sb):
        claim = naming.dataset_claim_name("digits")
        for name in sb.cluster_names:
            await sb.spoke_apis[name].create(
                r.CLUSTER_CLAIM,
                {"metadata": {"name": claim}, "spec": {"value": "samples=407,task=classification"}},
            )

        async def published() -> bool:
            found = [
                c
                for name in sb.cluster_names
                for c in ((await h.hub(sb).get(r.MANAGED_CLUSTER, name)).get("status") or {}).get(
                    "clusterClaims"
                )
                or []
                if c.get("name") == claim
            ]
            return len(found) == len(sb.cluster_names)

        await wait_for(published, timeout=15, message="dataset claims on the ManagedClusters")
        cs = await h.clusters(sb)
        c1, c2 = cs.values()
        try:
            job = await h.create_job(
                sb, "greedy", rounds=1, min_available=2, min_fit=1, client={"dataset": "digits"}
            )
            uid = job["metadata"]["uid"]
            await c1.train(await c1.wait_spec(uid, round_number=1), shift=1.0, examples=407)
            await c2.train(await c2.wait_spec(uid, round_number=1), shift=1e4, examples=10**15)
            status = await h.wait_status(sb, "greedy", lambda s: s.get("model") is not None)
        finally:
            await h.close_clusters(cs)
        (rejected,) = status["rejectedUpdates"]
        assert (rejected["cluster"], rejected["reason"]) == ("cluster2", "ExamplesExceedDataset")
        assert "1000000000000000" in rejected["message"]
        assert "407" in rejected["message"]
        weights = decode_weights(
            await h.store_bytes(sb, status["model"]["uri"], status["model"]["sha256"])
        )
        assert np.allclose(weights["dense/bias"], 1.0)


async def test_identical_updates_from_different_clusters_all_count(sandbox_factory: Any) -> None:
    """Clusters with identical data, or a trainer that returns the model unchanged, send
    the same bytes: every cluster is accepted and the job goes on."""
    async with sandbox_factory(clusters=3, datasets=False) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "same", rounds=2, min_available=3)
            uid = job["metadata"]["uid"]
            for round_number in (1, 2):
                for cluster in cs.values():
                    spec = await cluster.wait_spec(uid, round_number=round_number)
                    await cluster.train(spec, shift=0.5)
            status = await h.wait_status(sb, "same", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        assert not status.get("rejectedUpdates")
        assert [e["accepted"] for e in status["history"]] == [3, 3]
        weights = decode_weights(
            await h.store_bytes(sb, status["model"]["uri"], status["model"]["sha256"])
        )
        assert np.allclose(weights["dense/bias"], 1.0)
