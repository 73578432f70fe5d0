"""Jobs as users and admins meet them: invalid specs, a placement that selects nothing,
two jobs sharing clusters, deletion, the agents' per-cluster permissions, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from fl_contract import keys, naming
from fl_kube import resources as r
from fl_kube.errors import Forbidden
from fl_kube.waiting import wait_for
from tests.hub import helpers as h

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def manager_writes(sb: Any) -> int:
    return sum(
        1 for rec in sb.hub.request_log if rec.user == h.MANAGER_USER and rec.method in WRITES
    )


async def test_invalid_specs_are_reported_and_recover(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            await h.create_job(sb, "no-image", client={"image": None})
            await h.create_job(
                sb,
                "bad-mu",
                server={"strategy": {"name": "FedProx", "parameters": {"proximalMu": -1}}},
            )
            await h.create_job(sb, "bad-quorum", min_available=1, min_fit=2)
            no_image = await h.wait_status(sb, "no-image", h.phase_is("Failed"))
            bad_mu = await h.wait_status(sb, "bad-mu", h.phase_is("Failed"))
            bad_quorum = await h.wait_status(sb, "bad-quorum", h.phase_is("Failed"))
            for status, field in (
                (no_image, "spec.client.image"),
                (bad_mu, "spec.server.strategy.parameters"),
                (bad_quorum, "spec.server.minFitClients"),
            ):
                valid = h.condition(status, "SpecValid")
                assert valid is not None
                assert valid["status"] == "False"
                assert valid["reason"] == "InvalidSpec"
                assert field in valid["message"]
            assert "proximal" in h.condition(bad_mu, "SpecValid")["message"].lower()  # type: ignore[index]

            # Each invalid spec is one Warning event on its job.
            async def warned() -> list[dict[str, Any]] | None:
                events = (await h.hub(sb).list(r.EVENT, namespace="team-a")).items
                warnings = [e for e in events if e.get("reason") == "InvalidSpec"]
                return warnings if len(warnings) >= 3 else None

            warnings = await wait_for(warned, timeout=10, message="InvalidSpec events")
            assert sorted(e["involvedObject"]["name"] for e in warnings) == [
                "bad-mu",
                "bad-quorum",
                "no-image",
            ]

            # No hot loop: nothing more is written while nothing changes.
            before = manager_writes(sb)
            await _quiet(sb, seconds=1.5)
            assert manager_writes(sb) == before

            # Fixing the spec lets the job run.
            await h.hub(sb).patch(
                r.FEDERATED_LEARNING,
                "no-image",
                {"spec": {"client": {"image": "ocm-federated-learning/trainer:test"}}},
                namespace="team-a",
            )
            fixed = await h.wait_status(sb, "no-image", h.phase_is("Running"))
            assert h.condition(fixed, "SpecValid")["status"] == "True"  # type: ignore[index]
        finally:
            await h.close_clusters(cs)


async def _quiet(sb: Any, *, seconds: float) -> None:
    """A window in which to observe that nothing happens (not a synchronisation)."""
    del sb
    await asyncio.sleep(seconds)


async def test_placement_that_selects_nothing(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            placement = {
                "predicates": [
                    {"requiredClusterSelector": {"labelSelector": {"matchLabels": {"gpu": "h100"}}}}
                ]
            }
            await h.create_job(sb, "nowhere", placement=placement)

            def no_clusters(status: dict[str, Any]) -> bool:
                c = h.condition(status, "ClustersAvailable")
                return c is not None and c["reason"] == "NoClustersSelected"

            status = await h.wait_status(sb, "nowhere", no_clusters)
        finally:
            await h.close_clusters(cs)
        assert status["phase"] == "Waiting"
        assert "spec.client.placement" in h.condition(status, "ClustersAvailable")["message"]  # type: ignore[index]


async def test_two_jobs_share_clusters(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            a = await h.create_job(sb, "job-a", rounds=2)
            b = await h.create_job(sb, "job-b", rounds=2, namespace="team-b")
            assert naming.manifest_work_name(a["metadata"]["uid"]) != naming.manifest_work_name(
                b["metadata"]["uid"]
            )
            for round_number in (1, 2):
                for job, base in ((b, 10.0), (a, 1.0)):
                    for i, cluster in enumerate(cs.values()):
                        spec = await cluster.wait_spec(
                            job["metadata"]["uid"], round_number=round_number
                        )
                        await cluster.train(spec, shift=base + i)
            sa = await h.wait_status(sb, "job-a", h.phase_is("Completed"))
            sb_ = await h.wait_status(sb, "job-b", h.phase_is("Completed"), namespace="team-b")
        finally:
            await h.close_clusters(cs)
        assert [e["accepted"] for e in sa["history"]] == [2, 2]
        assert [e["accepted"] for e in sb_["history"]] == [2, 2]
        assert sa["model"]["uri"] != sb_["model"]["uri"]
        assert sa["model"]["sha256"] != sb_["model"]["sha256"]
        addon = await h.hub(sb).get(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace="cluster1")
        types = {c["type"] for c in addon["status"]["conditions"]}
        assert naming.round_condition_type("team-a", "job-a") in types
        assert naming.round_condition_type("team-b", "job-b") in types
        assert "Available" in types  # the add-on manager's own conditions are untouched


async def test_deletion_cleans_up(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "doomed", rounds=3)
            uid = job["metadata"]["uid"]
            await cs["cluster1"].wait_spec(uid, round_number=1)
            assert len(await h.works_of(sb, uid)) == 2
            placement = naming.placement_name("doomed")
            assert await h.exists(sb, r.PLACEMENT, placement, "team-a")
            assert await h.exists(sb, r.MANAGED_CLUSTER_SET_BINDING, "global", "team-a")
            await h.hub(sb).delete(r.FEDERATED_LEARNING, "doomed", namespace="team-a")

            async def gone() -> bool:
                return not await h.exists(sb, r.FEDERATED_LEARNING, "doomed", "team-a")

            await wait_for(gone, timeout=15, message="job deleted")
            assert await h.works_of(sb, uid) == []
            assert not await h.exists(sb, r.PLACEMENT, placement, "team-a")
            assert not await h.exists(sb, r.MANAGED_CLUSTER_SET_BINDING, "global", "team-a")

            async def spec_withdrawn() -> bool:
                return await cs["cluster1"].round_spec(uid) is None

            await wait_for(spec_withdrawn, timeout=15, message="round spec removed from the spoke")
        finally:
            await h.close_clusters(cs)


async def test_agent_identity_writes_only_its_own_status(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2, authorize=True) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "rbac", rounds=1)
            uid = job["metadata"]["uid"]
            spec = await cs["cluster1"].wait_spec(uid, round_number=1)

            async def granted() -> bool:
                return await h.exists(
                    sb, r.ROLE_BINDING, naming.agent_role_binding_name(), "cluster2"
                )

            await wait_for(granted, timeout=10, message="RoleBinding in cluster2")
            # cluster1's identity forging a report in cluster2's add-on status is refused ...
            forged = spec.model_copy(update={"cluster": "cluster2"})
            with pytest.raises(Forbidden):
                await cs["cluster1"].report(
                    forged,
                    _report(forged),
                    addon_namespace="cluster2",
                )
            # ... while writing its own works.
            await cs["cluster1"].train(spec)
            binding = await h.hub(sb).get(
                r.ROLE_BINDING, naming.agent_role_binding_name(), namespace="cluster1"
            )
            assert binding["subjects"] == [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": naming.cluster_addon_group("cluster1"),
                }
            ]
            # Disabling the add-on for a cluster removes its grant.
            await h.hub(sb).delete(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace="cluster2")

            async def revoked() -> bool:
                return not await granted()

            await wait_for(revoked, timeout=15, message="RoleBinding removed")
        finally:
            await h.close_clusters(cs)


def _report(spec: Any) -> Any:
    from fl_contract.models import RoundReport

    return RoundReport(
        job_uid=spec.job.uid, cluster="cluster2", round=1, state="TrainingFailed", message="x"
    )


async def test_metrics_endpoint(sandbox_factory: Any, unused_tcp_port: int) -> None:
    async with (
        sandbox_factory(clusters=2) as sb,
        h.manager(sb, metrics_bind_address=f"127.0.0.1:{unused_tcp_port}"),
    ):
        base = f"http://127.0.0.1:{unused_tcp_port}"
        async with aiohttp.ClientSession() as session:

            async def fetch(path: str) -> tuple[int, str] | None:
                try:
                    async with session.get(base + path) as response:
                        return response.status, await response.text()
                except aiohttp.ClientConnectionError:
                    return None

            ready = await wait_for(lambda: _ok(fetch("/readyz")), timeout=10, message="readyz")
            assert ready
            found = await fetch("/metrics")
            assert found is not None
            text = found[1]
        for name in (
            "controller_runtime_reconcile_total",
            "workqueue_depth",
            "federated_learning_rounds_completed_total",
            "federated_learning_round_duration_seconds",
            'federated_learning_updates_total{reason="ChecksumMismatch",result="rejected"}',
            "federated_learning_round_participants",
            "federated_learning_aggregation_duration_seconds",
            "federated_learning_aggregation_bytes_total",
            'federated_learning_jobs{phase="Running"}',
        ):
            assert name in text, name


async def _ok(probe: Any) -> bool:
    result = await probe
    return result is not None and result[0] == 200


async def test_cli_process_serves_and_stops_on_sigterm(
    sandbox_factory: Any, unused_tcp_port: int
) -> None:
    """`python -m hub_manager` as its own process: registers the add-on, answers /readyz,
    and exits 0 on SIGTERM."""
    import signal
    import sys

    async with sandbox_factory(clusters=1) as sb:
        settings = h.manager_settings(sb)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub_manager",
            "--kubeconfig",
            str(settings.kubeconfig),
            "--metrics-bind-address",
            f"127.0.0.1:{unused_tcp_port}",
            "--no-leader-elect",
            "--file-store-root",
            str(sb.model_store_dir),
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with aiohttp.ClientSession() as session:

                async def ready() -> bool:
                    try:
                        async with session.get(f"http://127.0.0.1:{unused_tcp_port}/readyz") as r_:
                            return r_.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await wait_for(ready, timeout=30, interval=0.1, message="manager ready")
            assert await h.hub(sb).get(r.CLUSTER_MANAGEMENT_ADDON, keys.ADDON_NAME)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=20)
        assert code == 0
