"""The agent against the sandbox, through the API only: Jobs, reports, restarts, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fl_contract import keys, naming
from fl_contract.models import ModelRef, StoreConfig
from fl_contract.weights import decode_weights, sha256_hex
from fl_core.store import open_store
from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from tests.agent.harness import (
    AgentCluster,
    addon_conditions,
    reported,
    round_report,
    round_spec,
    spec_configmap,
    start_agent,
)

FOREIGN = {
    "type": "example.io/SomethingElse",
    "status": "True",
    "reason": "WrittenByAnotherController",
    "message": "not the agent's",
    "lastTransitionTime": "2025-01-01T00:00:00Z",
}


async def jobs_on(spoke: KubeApi, namespace: str) -> list[dict[str, Any]]:
    return (await spoke.list(r.JOB, namespace=namespace)).items


async def add_foreign_condition(hub: KubeApi, cluster: str) -> None:
    conditions = await addon_conditions(hub, cluster)
    await hub.patch(
        r.MANAGED_CLUSTER_ADDON,
        keys.ADDON_NAME,
        {"status": {"conditions": [*conditions, FOREIGN]}},
        namespace=cluster,
        subresource="status",
    )


async def test_round_spec_runs_one_job_and_its_report_reaches_the_hub(
    sandbox: Sandbox, agent_cluster: AgentCluster
) -> None:
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    hub, spoke = agent_cluster.hub, agent_cluster.spoke
    running = await start_agent(sandbox, cluster, datasets=agent_cluster.datasets)
    try:
        await add_foreign_condition(hub, cluster)
        spec = round_spec(sandbox, cluster=cluster, uid="uid-one-job")
        await agent_cluster.deliver(spec)

        condition, report = await reported(hub, cluster, "UpdateReady")
        assert condition["status"] == "True"
        assert condition["reason"] == "UpdateReady"
        assert (report.job_uid, report.cluster, report.round) == ("uid-one-job", cluster, 1)
        assert report.update is not None
        assert report.update.uri == spec.update_uri
        assert report.update.num_examples == 5
        assert report.metrics == {"loss": 0.25}
        store = open_store(StoreConfig(uri=f"file://{sandbox.model_store_dir}"))
        weights = decode_weights(await store.get(report.update.uri, sha256=report.update.sha256))
        assert np.array_equal(weights["w"], np.full((2, 2), 1.0, dtype=np.float32))

        jobs = await jobs_on(spoke, ns)
        assert [j["metadata"]["name"] for j in jobs] == [naming.training_job_name("uid-one-job", 1)]
        job = jobs[0]
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert job["metadata"]["ownerReferences"][0]["name"] == naming.round_spec_configmap_name(
            "uid-one-job"
        )
        assert FOREIGN in await addon_conditions(hub, cluster)

        metrics = running.agent.metrics
        assert metrics.rounds_trained_total.labels(result="UpdateReady")._value.get() == 1

        # The hub moves on: the work agent deletes the spec; the agent cleans up after it.
        await spoke.delete(
            r.CONFIGMAP, naming.round_spec_configmap_name("uid-one-job"), namespace=ns
        )
        await wait_for(
            lambda: _none(round_report(hub, cluster)), timeout=20, message="condition cleared"
        )
        await wait_for(lambda: _empty(jobs_on(spoke, ns)), timeout=20, message="Job deleted")
        assert FOREIGN in await addon_conditions(hub, cluster)
    finally:
        await running.stop()


async def _none(coro: Any) -> bool:
    return (await coro) is None


async def _empty(coro: Any) -> bool:
    return not await coro


async def test_restart_mid_job_neither_duplicates_the_job_nor_loses_the_report(
    sandbox: Sandbox, agent_cluster: AgentCluster, tmp_path: Path
) -> None:
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    hub, spoke, ds = agent_cluster.hub, agent_cluster.spoke, agent_cluster.datasets
    gate = tmp_path / "gate"
    spec = round_spec(sandbox, cluster=cluster, uid="uid-restart", mode=f"gate={gate}")
    first = await start_agent(sandbox, cluster, datasets=ds)
    try:
        await agent_cluster.deliver(spec)
        _, report = await reported(hub, cluster, "Training")
        assert report.started_at is not None
        (job,) = await jobs_on(spoke, ns)
    finally:
        await first.stop()
    # The agent is down: training ends, the Job completes with nobody watching.
    gate.touch()
    name = job["metadata"]["name"]

    async def completed() -> bool:
        current = await spoke.get(r.JOB, name, namespace=ns)
        return any(
            c.get("type") == "Complete" and c.get("status") == "True"
            for c in (current.get("status") or {}).get("conditions") or []
        )

    await wait_for(completed, timeout=30, message="Job completes while the agent is down")
    assert (await round_report(hub, cluster)) is not None
    second = await start_agent(sandbox, cluster, datasets=ds)
    try:
        _, report = await reported(hub, cluster, "UpdateReady")
        assert report.update is not None
        jobs = await jobs_on(spoke, ns)
        assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]
        job_posts = [
            rec
            for rec in sandbox.spokes[cluster].request_log
            if rec.method == "POST" and rec.path.endswith(f"/namespaces/{ns}/jobs")
        ]
        assert len(job_posts) == 1
    finally:
        await second.stop()


async def test_failed_and_timed_out_jobs_are_reported_failed(
    sandbox: Sandbox, agent_cluster: AgentCluster, tmp_path: Path
) -> None:
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    hub, spoke = agent_cluster.hub, agent_cluster.spoke
    running = await start_agent(
        sandbox, cluster, datasets=agent_cluster.datasets, job_backoff_limit=0
    )
    try:
        failing = round_spec(sandbox, cluster=cluster, uid="uid-fails", name="fails", mode="fail")
        slow = round_spec(
            sandbox,
            cluster=cluster,
            uid="uid-slow",
            name="slow",
            mode=f"gate={tmp_path / 'never'}",
            deadline_seconds=2,
        )
        unknown = round_spec(
            sandbox, cluster=cluster, uid="uid-nodata", name="nodata", dataset="nosuchdata"
        )
        for spec in (failing, slow, unknown):
            await agent_cluster.deliver(spec)

        condition, report = await reported(hub, cluster, "TrainingFailed", name="fails")
        assert (condition["status"], condition["reason"]) == ("False", "TrainingFailed")
        assert (report.reason, report.message) == (
            "TrainingFailed",
            "ValueError: the dataset has no rows",
        )

        condition, report = await reported(hub, cluster, "TrainingFailed", name="slow")
        assert condition["reason"] == "TrainingFailed"
        assert report.reason == "DeadlineExceeded"
        assert report.message.startswith("Job DeadlineExceeded")

        condition, report = await reported(hub, cluster, "TrainingFailed", name="nodata")
        assert (report.reason, report.message) == (
            "DatasetNotFound",
            "dataset 'nosuchdata' is not in this cluster's catalogue",
        )
        names = {j["metadata"]["name"] for j in await jobs_on(spoke, ns)}
        assert naming.training_job_name("uid-nodata", 1) not in names
        failures = running.agent.metrics.failures_total
        assert failures.labels(reason="DeadlineExceeded")._value.get() == 1
        assert failures.labels(reason="TrainingFailed")._value.get() == 1
        assert failures.labels(reason="DatasetNotFound")._value.get() == 1
    finally:
        await running.stop()


async def test_the_report_says_why_the_container_failed(
    sandbox: Sandbox, agent_cluster: AgentCluster
) -> None:
    """The cause reaches the hub in the report's reason and message: `fl-train`'s failure
    record (a trainer that cannot be imported, a global model whose sha256 is wrong), the
    last lines of the log of a container that died without a word
    (FallbackToLogsOnError), and an update claiming more examples than the catalogue holds."""
    cluster, hub = agent_cluster.name, agent_cluster.hub
    running = await start_agent(
        sandbox, cluster, datasets=agent_cluster.datasets, job_backoff_limit=0
    )
    try:
        noimport = round_spec(sandbox, cluster=cluster, uid="uid-noimport", name="noimport")
        noimport = noimport.model_copy(
            update={"command": ["fl-train"], "args": ["--trainer", "nosuch:Trainer"]}
        )
        corrupt = round_spec(sandbox, cluster=cluster, uid="uid-corrupt", name="corrupt")
        model = sandbox.model_store_dir / "team-a/corrupt/rounds/1/global.safetensors"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(b"not the model the hub published")
        corrupt = corrupt.model_copy(
            update={
                "command": ["fl-train"],
                "args": ["--example", "digits"],
                "round": 2,
                "global_model": ModelRef(uri=f"file://{model}", sha256="ab" * 32),
            }
        )
        crash = round_spec(sandbox, cluster=cluster, uid="uid-crash", name="crash", mode="crash")
        greedy = round_spec(
            sandbox, cluster=cluster, uid="uid-greedy", name="greedy", mode="greedy"
        )
        for spec in (noimport, corrupt, crash, greedy):
            await agent_cluster.deliver(spec)

        _, report = await reported(hub, cluster, "TrainingFailed", name="noimport")
        assert report.reason == "TrainingFailed"
        assert report.message.startswith("ImportError: No module named 'nosuch'")

        _, report = await reported(hub, cluster, "TrainingFailed", name="corrupt")
        assert report.reason == "IntegrityError"
        assert report.message.startswith("IntegrityError: ")
        assert f"sha256 is {sha256_hex(model.read_bytes())}, expected {'ab' * 32}" in (
            report.message
        )

        _, report = await reported(hub, cluster, "TrainingFailed", name="crash")
        assert report.reason == "TrainingFailed"
        cause, *tail = report.message.splitlines()
        assert cause == "MemoryError: cannot allocate 12 GiB for the batch"
        assert tail[-2:] == ["step 99: loss 0.5", "Traceback (most recent call last):"]
        assert len(report.message) <= 1024

        condition, report = await reported(hub, cluster, "TrainingFailed", name="greedy")
        assert (condition["reason"], report.reason) == ("UpdateInvalid", "ExamplesExceedDataset")
        assert "claims 1000000000000000 examples" in report.message
        assert "holds 5 samples for dataset 'digits'" in report.message
    finally:
        await running.stop()


async def test_report_conflicts_are_retried_and_both_writes_survive(
    sandbox: Sandbox, agent_cluster: AgentCluster
) -> None:
    """Another writer changes the add-on between the agent's read and its write: 409, retry."""
    cluster, hub = agent_cluster.name, agent_cluster.hub
    running = await start_agent(sandbox, cluster)
    writer = running.agent.status
    mine = {**FOREIGN, "type": "example.io/Mine", "reason": "Agent"}
    seen: list[set[str]] = []

    async def mutate(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen.append({c["type"] for c in conditions})
        if len(seen) == 1:
            await add_foreign_condition(hub, cluster)  # lands after our read, before our write
        return [c for c in conditions if c["type"] != mine["type"]] + [mine]

    try:
        before = writer.conflicts
        assert await writer.update(mutate, what="conflict test", result="Health") is True
        # At least our provoked conflict; the sandbox's add-on controller may add one more
        # (it writes the same status when the agent's lease turns it Available).
        conflicts = writer.conflicts - before
        assert conflicts >= 1
        assert len(seen) == conflicts + 1
        assert FOREIGN["type"] not in seen[0]
        assert all(FOREIGN["type"] in s for s in seen[1:])  # retries start from fresh objects
        types = {c["type"] for c in await addon_conditions(hub, cluster)}
        assert {"example.io/Mine", FOREIGN["type"]} <= types
    finally:
        await running.stop()


async def test_rounds_through_a_manifest_work_with_the_digits_trainer(
    sandbox_factory: Any,
) -> None:
    """The hub's way: one ManifestWork per job, updated each round, then removed."""
    async with sandbox_factory(clusters=1, agents=False, datasets=True) as sb:
        cluster = sb.cluster_names[0]
        ns = sb.agent_namespace(cluster)
        hub = await KubeApi.from_kubeconfig(sb.hub_kubeconfig)
        spoke = await KubeApi.from_kubeconfig(sb.cluster_kubeconfig(cluster))
        running = await start_agent(sb, cluster, datasets=sb.catalogue_path(cluster))
        uid = "uid-digits"
        work_name = naming.manifest_work_name(uid)

        async def deliver(spec: Any) -> None:
            work = {
                "metadata": {"name": work_name, "namespace": cluster},
                "spec": {"workload": {"manifests": [spec_configmap(spec, namespace=ns)]}},
            }
            current = await hub.get_or_none(r.MANIFEST_WORK, work_name, namespace=cluster)
            if current is None:
                await hub.create(r.MANIFEST_WORK, work, namespace=cluster)
            else:
                await hub.patch(
                    r.MANIFEST_WORK, work_name, {"spec": work["spec"]}, namespace=cluster
                )

        def digits_spec(round_number: int, global_model: Any = None) -> Any:
            spec = round_spec(sb, cluster=cluster, uid=uid, round_number=round_number)
            return spec.model_copy(
                update={
                    "command": ["fl-train"],
                    "args": ["--example", "digits"],
                    "global_model": global_model,
                    "training_config": {"local_epochs": 1},
                }
            )

        try:
            await deliver(digits_spec(1))
            _, first = await reported(hub, cluster, "UpdateReady")
            assert first.round == 1
            assert first.update is not None
            assert first.update.num_examples > 0
            assert "accuracy" in first.metrics or "loss" in first.metrics

            global_model = ModelRef(uri=first.update.uri, sha256=first.update.sha256)
            await deliver(digits_spec(2, global_model))

            async def second_round() -> Any:
                found = await round_report(hub, cluster)
                return (
                    found
                    if found and found[1].round == 2 and found[1].state == "UpdateReady"
                    else None
                )

            _, second = await wait_for(second_round, timeout=30, message="round 2 report")
            assert second.update is not None
            assert second.update.uri != first.update.uri

            async def only_round_two() -> bool:
                names = [j["metadata"]["name"] for j in await jobs_on(spoke, ns)]
                return names == [naming.training_job_name(uid, 2)]

            await wait_for(only_round_two, timeout=15, message="round 1's Job removed")

            await hub.delete(r.MANIFEST_WORK, work_name, namespace=cluster)
            await wait_for(
                lambda: _none(round_report(hub, cluster)), timeout=20, message="condition cleared"
            )
            await wait_for(lambda: _empty(jobs_on(spoke, ns)), timeout=20, message="Jobs deleted")
        finally:
            await running.stop()
            await hub.close()
            await spoke.close()


async def test_a_spec_removed_while_the_agent_is_down_is_cleaned_up_on_start(
    sandbox: Sandbox, agent_cluster: AgentCluster
) -> None:
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    hub, spoke, ds = agent_cluster.hub, agent_cluster.spoke, agent_cluster.datasets
    keep = round_spec(sandbox, cluster=cluster, uid="uid-keep", name="keep")
    drop = round_spec(sandbox, cluster=cluster, uid="uid-drop", name="drop")
    first = await start_agent(sandbox, cluster, datasets=ds)
    try:
        await add_foreign_condition(hub, cluster)
        for spec in (keep, drop):
            await agent_cluster.deliver(spec)
        await reported(hub, cluster, "UpdateReady", name="keep")
        await reported(hub, cluster, "UpdateReady", name="drop")
    finally:
        await first.stop()
    await spoke.delete(r.CONFIGMAP, naming.round_spec_configmap_name("uid-drop"), namespace=ns)
    second = await start_agent(sandbox, cluster, datasets=ds)
    try:
        await wait_for(
            lambda: _none(round_report(hub, cluster, name="drop")),
            timeout=20,
            message="the dropped job's condition is cleared on start",
        )
        found = await round_report(hub, cluster, name="keep")
        assert found is not None
        assert found[1].state == "UpdateReady"
        assert FOREIGN in await addon_conditions(hub, cluster)
        names = [j["metadata"]["name"] for j in await jobs_on(spoke, ns)]
        assert naming.training_job_name("uid-drop", 1) not in names
    finally:
        await second.stop()
