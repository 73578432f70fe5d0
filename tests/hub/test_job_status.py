"""What the job's status says when things go wrong, and that it stays calm meanwhile: a
failing model store, an unusable initial model, a round spec that cannot be delivered,
why clusters failed, clusters that went away, and spec edits on a live or finished job."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_contract import keys, naming
from fl_contract.weights import encode_weights, sha256_hex
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from tests.deploy.manifests import DEPLOY, load_docs
from tests.hub import helpers as h

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def status_writes(sb: Any, name: str) -> int:
    return sum(
        1
        for rec in sb.hub.request_log
        if rec.user == h.MANAGER_USER
        and rec.method in WRITES
        and rec.path.endswith(f"/federatedlearnings/{name}/status")
    )


async def events_of(sb: Any, name: str, namespace: str = "team-a") -> list[dict[str, Any]]:
    listed = await h.hub(sb).list(r.EVENT, namespace=namespace)
    return [e for e in listed.items if e["involvedObject"]["name"] == name]


def progressing(reason: str) -> Any:
    def check(status: dict[str, Any]) -> bool:
        cond = h.condition(status, "Progressing") or {}
        return cond.get("status") == "False" and cond.get("reason") == reason

    return check


async def test_store_fault_backs_off_then_recovers(
    sandbox_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder where round 1's global model goes: the write fails fast, every time."""
    caplog.set_level(logging.WARNING, logger="fl_kube.controller")
    async with sandbox_factory(clusters=3) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "stuck", rounds=2, min_available=3)
            uid = job["metadata"]["uid"]
            blocker = sb.model_store_dir.joinpath(
                *naming.model_key(namespace="team-a", job="stuck", round_number=1).split("/")
            )
            blocker.mkdir(parents=True)
            await h.train_round(cs, uid, 1)
            status = await h.wait_status(sb, "stuck", progressing("StoreUnavailable"))
            message = h.condition(status, "Progressing")["message"]  # type: ignore[index]
            assert blocker.as_uri() in message
            assert "Is a directory" in message

            # Calm while it lasts: retries back off, and they write nothing.
            version = (await h.get_job(sb, "stuck"))["metadata"]["resourceVersion"]
            writes = status_writes(sb, "stuck")
            seen = len(caplog.records)

            def retries() -> list[logging.LogRecord]:
                return [
                    rec
                    for rec in caplog.records[seen:]
                    if rec.name == "fl_kube.controller" and "StoreUnavailable" in rec.message
                ]

            await wait_for(lambda: len(retries()) >= 6, timeout=20, message="six retries")
            assert status_writes(sb, "stuck") == writes
            assert (await h.get_job(sb, "stuck"))["metadata"]["resourceVersion"] == version
            for rec in retries():
                assert rec.levelno == logging.WARNING
                assert rec.exc_info is None
                assert "\n" not in rec.getMessage()
            assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
            warnings = [
                e for e in await events_of(sb, "stuck") if e["reason"] == "StoreUnavailable"
            ]
            assert len(warnings) == 1
            assert warnings[0]["type"] == "Warning"

            # The fault goes away: the job goes on by itself.
            shutil.rmtree(blocker)
            await h.train_round(cs, uid, 2)
            status = await h.wait_status(sb, "stuck", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        assert [e["round"] for e in status["history"]] == [1, 2]


async def test_unusable_initial_models_fail_with_the_field(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            data = encode_weights({"w": np.zeros((2, 2), dtype=np.float32)})
            inside = sb.model_store_dir / "team-a" / "initial.safetensors"
            inside.parent.mkdir(parents=True, exist_ok=True)
            inside.write_bytes(data)
            right = sha256_hex(data)
            cases = {
                "wrong-sha": (inside.as_uri(), "0" * 64, "spec.server.initialModel.sha256"),
                "outside": ("file:///etc/initial.safetensors", right, "initialModel.uri"),
                "s3-on-file": ("s3://bucket/initial.safetensors", right, "initialModel.uri"),
                "http": ("http://models.example/initial.safetensors", right, "initialModel.uri"),
            }
            for name, (uri, sha, _) in cases.items():
                await h.create_job(sb, name, server={"initialModel": {"uri": uri, "sha256": sha}})
            for name, (uri, _, field) in cases.items():
                status = await h.wait_status(sb, name, h.phase_is("Failed"), timeout=15)
                valid = h.condition(status, "SpecValid")
                assert valid is not None
                assert (valid["status"], valid["reason"]) == ("False", "InvalidSpec")
                assert field in valid["message"], valid["message"]
                assert uri in valid["message"] or name == "wrong-sha"
                assert not await h.works_of(sb, (await h.get_job(sb, name))["metadata"]["uid"])
            # Fixed by editing: the job runs from that model.
            await h.hub(sb).patch(
                r.FEDERATED_LEARNING,
                "wrong-sha",
                {"spec": {"server": {"initialModel": {"sha256": right}}}},
                namespace="team-a",
            )
            fixed = await h.wait_status(sb, "wrong-sha", h.phase_is("Running"))
            assert h.condition(fixed, "SpecValid")["status"] == "True"  # type: ignore[index]
        finally:
            await h.close_clusters(cs)


async def test_a_round_spec_too_large_for_a_manifestwork(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            await h.create_job(sb, "huge", client={"trainingConfig": {"blob": "x" * 600_000}})
            status = await h.wait_status(sb, "huge", h.phase_is("Failed"))
        finally:
            await h.close_clusters(cs)
        valid = h.condition(status, "SpecValid")
        assert valid is not None
        assert valid["status"] == "False"
        assert valid["message"].startswith("spec.client.trainingConfig: ")
        assert "512000 bytes" in valid["message"]
        size = int(valid["message"].split("ManifestWork ")[1].split(" bytes")[0])
        assert 600_000 < size < 602_000
        assert not await h.works_of(sb, (await h.get_job(sb, "huge"))["metadata"]["uid"])


async def _report_failure(
    cluster: h.Cluster, uid: str, *, reason: str, message: str, round_number: int = 1
) -> None:
    spec = await cluster.wait_spec(uid, round_number=round_number)
    await cluster.fail(spec, message, reason=reason)


async def test_why_clusters_failed_reaches_the_job(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=3) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        c1, c2, c3 = cs.values()
        try:
            # A round with one failure: the round's history keeps it.
            job = await h.create_job(sb, "partly", rounds=1, min_available=2, min_fit=1)
            uid = job["metadata"]["uid"]
            await c1.train(await c1.wait_spec(uid, round_number=1), shift=1.0)
            await c2.train(await c2.wait_spec(uid, round_number=1), shift=2.0)
            missing = "dataset 'nosuchdata' is not in this cluster's catalogue"
            await _report_failure(c3, uid, reason="DatasetNotFound", message=missing)
            done = await h.wait_status(sb, "partly", h.phase_is("Completed"))
            assert done["history"][0]["failures"] == [
                {
                    "cluster": "cluster3",
                    "state": "Failed",
                    "reason": "DatasetNotFound",
                    "message": missing,
                }
            ]

            # Every cluster fails: the job's message says why, by cluster.
            job = await h.create_job(sb, "broken", rounds=1, min_available=3)
            uid = job["metadata"]["uid"]
            crash = "ImportError: No module named 'nosuch'"
            await _report_failure(c1, uid, reason="TrainingFailed", message=crash)
            await _report_failure(c2, uid, reason="DatasetNotFound", message=missing)
            await _report_failure(c3, uid, reason="TrainingFailed", message=crash)
            status = await h.wait_status(sb, "broken", h.phase_is("Failed"))

            async def failure_events() -> list[dict[str, Any]] | None:
                found = await events_of(sb, "broken")
                ended = any(e["reason"] == "QuorumNotReached" for e in found)
                return found if ended else None

            # The Events follow the status write that failed the job.
            events = await wait_for(failure_events, timeout=10, message="QuorumNotReached")
        finally:
            await h.close_clusters(cs)
        assert f"cluster1, cluster3: TrainingFailed ({crash})" in status["message"]
        assert f"cluster2: DatasetNotFound ({missing})" in status["message"]
        states = {p["cluster"]: (p["reason"], p["message"]) for p in status["participants"]}
        assert states == {
            "cluster1": ("TrainingFailed", crash),
            "cluster2": ("DatasetNotFound", missing),
            "cluster3": ("TrainingFailed", crash),
        }
        reasons = [(e["type"], e["reason"]) for e in events]
        assert ("Normal", "RoundStarted") in reasons
        assert reasons.count(("Warning", "ClusterFailed")) == 3
        assert ("Warning", "QuorumNotReached") in reasons
        failed = next(e for e in events if e["reason"] == "QuorumNotReached")
        assert failed["involvedObject"]["uid"] == uid
        assert "cluster2: DatasetNotFound" in failed["message"]


async def test_a_refused_manifestwork_is_reported(sandbox_factory: Any, tmp_path: Path) -> None:
    """The API refuses the round specs for good (here the manager's RBAC lacks the
    ManifestWork writes): the job says so with the API's message, and the round ends at
    once instead of at its deadline."""
    namespace = "open-cluster-management-federated-learning"
    user = f"system:serviceaccount:{namespace}:federated-learning-hub-manager"
    async with sandbox_factory(clusters=2, authorize=True) as sb:
        for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
            for doc in load_docs(DEPLOY / name):
                for rule in doc.get("rules") or []:
                    if "manifestworks" in rule.get("resources", []):
                        rule["verbs"] = ["get", "list", "watch", "delete"]
                res = r.by_kind(doc["apiVersion"], doc["kind"])
                await h.hub(sb).apply(
                    res, doc, field_manager="kubectl", namespace=doc["metadata"].get("namespace")
                )
        assert sb.hub is not None
        kubeconfig = sb.hub.write_kubeconfig(
            tmp_path / "manager.kubeconfig",
            user=user,
            groups=("system:serviceaccounts", "system:authenticated"),
        )
        async with h.manager(sb, kubeconfig=str(kubeconfig)):
            cs = await h.clusters(sb)
            try:
                await h.create_job(sb, "refused", rounds=1, min_available=2, timeout="60s")
                status = await h.wait_status(sb, "refused", h.phase_is("Failed"), timeout=20)
            finally:
                await h.close_clusters(cs)
        delivered = h.condition(status, "RoundSpecsDelivered")
        assert delivered is not None
        assert delivered["status"] == "False"
        assert delivered["reason"] == "ManifestWorkRefused"
        assert "403 Forbidden" in delivered["message"]
        assert "manifestworks" in delivered["message"]
        assert "cluster1: RoundSpecRefused (ManifestWork cluster1/" in status["message"]
        assert {p["reason"] for p in status["participants"]} == {"RoundSpecRefused"}


async def test_a_job_waits_for_lost_clusters_but_not_forever(sandbox_factory: Any) -> None:
    """minAvailableClients is the whole fleet and one cluster's add-on goes mid-round."""
    async with sandbox_factory(clusters=3) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        c1, c2, c3 = cs.values()
        api = h.hub(sb)

        async def remove_addon() -> None:
            await api.delete(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace="cluster3")

            async def gone() -> bool:
                return (
                    await api.get_or_none(
                        r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace="cluster3"
                    )
                    is None
                )

            await wait_for(
                gone, timeout=60, message="cluster3's add-on removed (after its cleanup Job)"
            )

        def waiting(status: dict[str, Any]) -> bool:
            return status.get("phase") == "Waiting" and progressing("WaitingForClusters")(status)

        try:
            job = await h.create_job(
                sb,
                "fleet",
                rounds=1,
                min_available=3,
                timeout="2s",
                retries=5,
                server={"waitForClustersTimeout": "10m"},
            )
            uid = job["metadata"]["uid"]
            await c1.wait_spec(uid, round_number=1)
            await remove_addon()  # mid-round; the others train, the round misses its quorum
            for shift, cluster in enumerate((c1, c2)):
                spec = await cluster.round_spec(uid)
                assert spec is not None
                await cluster.train(spec, shift=shift)
            status = await h.wait_status(sb, "fleet", waiting)
            attempt = status["attempt"]
            message = h.condition(status, "Progressing")["message"]  # type: ignore[index]
            assert "waits for 3 available clusters, 2 available" in message
            clusters = h.condition(status, "ClustersAvailable")
            assert clusters is not None
            assert "cluster3" in clusters["message"]

            # The cluster comes back: the round goes on at once, in its next attempt.
            await api.create(
                r.MANAGED_CLUSTER_ADDON,
                {"metadata": {"name": keys.ADDON_NAME, "namespace": "cluster3"}, "spec": {}},
            )

            await wait_for(
                lambda: sb.agent_namespace("cluster3"),
                timeout=30,
                message="cluster3's add-on installed",
            )
            await c3.heartbeat()
            await h.wait_status(
                sb,
                "fleet",
                lambda s: s.get("phase") == "Running" and s.get("attempt") == attempt + 1,
                timeout=20,
            )

            # It goes again, and this time the wait is bounded: Failed, naming it.
            await remove_addon()
            await h.wait_status(sb, "fleet", waiting)
            await api.patch(
                r.FEDERATED_LEARNING,
                "fleet",
                {"spec": {"server": {"waitForClustersTimeout": "1s"}}},
                namespace="team-a",
            )
            status = await h.wait_status(sb, "fleet", h.phase_is("Failed"))
        finally:
            await h.close_clusters(cs)
        succeeded = h.condition(status, "Succeeded")
        assert succeeded is not None
        assert succeeded["reason"] == "ClustersUnavailable"
        assert "not available: cluster3" in status["message"]
        assert "waited 1s for 3 available clusters, 2 available" in status["message"]


async def test_lowering_rounds_mid_round_finishes_that_round(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "shorter", rounds=5, min_available=2)
            uid = job["metadata"]["uid"]
            await h.train_round(cs, uid, 1)
            await h.train_round(cs, uid, 2)
            for cluster in cs.values():
                await cluster.wait_spec(uid, round_number=3)
            await h.hub(sb).patch(
                r.FEDERATED_LEARNING,
                "shorter",
                {"spec": {"server": {"rounds": 2}}},
                namespace="team-a",
            )
            await h.wait_status(
                sb, "shorter", lambda s: s.get("observedGeneration") == 2, timeout=10
            )
            await h.train_round(cs, uid, 3)
            status = await h.wait_status(sb, "shorter", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        assert status["round"] == 3
        assert status["model"]["round"] == 3
        assert [e["round"] for e in status["history"]] == [1, 2, 3]
        assert status["message"].startswith("3 rounds completed")


async def test_raising_rounds_on_a_completed_job_trains_on(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "longer", rounds=1, min_available=2)
            uid = job["metadata"]["uid"]
            await h.train_round(cs, uid, 1)
            first = await h.wait_status(sb, "longer", h.phase_is("Completed"))
            updated = await h.hub(sb).patch(
                r.FEDERATED_LEARNING,
                "longer",
                {"spec": {"server": {"rounds": 2}}},
                namespace="team-a",
            )
            spec = await cs["cluster1"].wait_spec(uid, round_number=2)
            assert spec.global_model is not None
            assert spec.global_model.sha256 == first["model"]["sha256"]
            await h.train_round(cs, uid, 2)
            status = await h.wait_status(
                sb, "longer", lambda s: s.get("phase") == "Completed" and s.get("round") == 2
            )
        finally:
            await h.close_clusters(cs)
        assert [e["round"] for e in status["history"]] == [1, 2]
        assert status["observedGeneration"] == updated["metadata"]["generation"]
        assert status["message"].startswith("2 rounds completed")
        assert h.condition(status, "Succeeded")["status"] == "True"  # type: ignore[index]


async def test_an_evaluator_that_does_not_fit_the_model_fails_the_job_once(
    sandbox_factory: Any,
) -> None:
    """The digits evaluator on a model without its W and b: a spec problem the user fixes by
    editing, said once, not a KeyError retried for ever."""
    async with sandbox_factory(clusters=2) as sb, h.manager(sb) as running:
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(
                sb, "wrong-evaluator", server={"evaluation": {"evaluator": "digits"}}
            )
            await h.train_round(cs, job["metadata"]["uid"], 1)
            status = await h.wait_status(sb, "wrong-evaluator", h.phase_is("Failed"))
        finally:
            await h.close_clusters(cs)
        valid = h.condition(status, "SpecValid")
        assert valid is not None
        assert valid["status"] == "False"
        assert valid["message"].startswith("spec.server.evaluation.evaluator: cannot evaluate")
        assert "KeyError" in valid["message"]
        errors = running.metrics.controllers.reconcile_errors_total.labels(
            controller="federatedlearning"
        )._value.get()
        assert errors <= 1
