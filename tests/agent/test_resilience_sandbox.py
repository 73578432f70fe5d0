"""Bad outputs, bad specs and a flaky API: the agent reports what it can and loses nothing."""

from __future__ import annotations

from pathlib import Path

from fl_contract import keys, naming
from fl_kube import resources as r
from fl_sandbox.sandbox import Sandbox
from tests.agent.harness import AgentCluster, reported, round_spec, spec_configmap, start_agent


async def test_untrustworthy_results_and_specs_are_reported_not_accepted(
    sandbox: Sandbox, agent_cluster: AgentCluster
) -> None:
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    hub, spoke = agent_cluster.hub, agent_cluster.spoke
    running = await start_agent(sandbox, cluster, datasets=agent_cluster.datasets)
    try:
        badhash = round_spec(
            sandbox, cluster=cluster, uid="uid-badhash", name="badhash", mode="badhash"
        )
        silent = round_spec(
            sandbox, cluster=cluster, uid="uid-silent", name="silent", mode="silent"
        )
        for spec in (badhash, silent):
            await agent_cluster.deliver(spec)
        # A spec that does not parse: the labels still say which round it was.
        broken = spec_configmap(
            round_spec(sandbox, cluster=cluster, uid="uid-broken", name="broken"), namespace=ns
        )
        broken["data"][keys.ROUND_SPEC_KEY] = '{"version": 1, "round": 0}'
        await spoke.create(r.CONFIGMAP, broken, namespace=ns)

        condition, report = await reported(hub, cluster, "TrainingFailed", name="badhash")
        assert (condition["status"], condition["reason"]) == ("False", "UpdateInvalid")
        assert report.reason == "UpdateHashMismatch"
        assert f"expected {'0' * 64}" in report.message
        assert report.update is None

        condition, report = await reported(hub, cluster, "TrainingFailed", name="silent")
        assert condition["reason"] == "TrainingFailed"
        assert (report.reason, report.message) == (
            "ResultMissing",
            "the training container wrote no result record",
        )

        condition, report = await reported(hub, cluster, "TrainingFailed", name="broken")
        assert report.reason == "RoundSpecInvalid"
        assert "key round-spec.json" in report.message
        names = {j["metadata"]["name"] for j in (await spoke.list(r.JOB, namespace=ns)).items}
        assert naming.training_job_name("uid-broken", 1) not in names
        metrics = running.agent.metrics
        assert metrics.rounds_trained_total.labels(result="UpdateInvalid")._value.get() == 1
    finally:
        await running.stop()


async def test_a_flaky_hub_and_dropped_watches_delay_but_do_not_lose_reports(
    sandbox: Sandbox, agent_cluster: AgentCluster, tmp_path: Path
) -> None:
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    hub, spoke = agent_cluster.hub, agent_cluster.spoke
    gate = tmp_path / "gate"
    running = await start_agent(sandbox, cluster, datasets=agent_cluster.datasets)
    try:
        spec = round_spec(sandbox, cluster=cluster, uid="uid-flaky", mode=f"gate={gate}")
        await agent_cluster.deliver(spec)
        await reported(hub, cluster, "Training")
        # The next status writes fail (500, 500, 429), and every spoke watch is cut.
        addon_path = f"/apis/addon.open-cluster-management.io/v1alpha1/namespaces/{cluster}"
        for status, count in ((500, 2), (429, 1)):
            sandbox.hub.faults.fail(
                status=status, retry_after=1, methods=["PATCH"], path_prefix=addon_path, count=count
            )
        dropped = sandbox.spokes[cluster].faults.drop_watches()
        assert dropped >= 2  # the round-spec and Job watches
        gate.touch()

        _, report = await reported(hub, cluster, "UpdateReady")
        assert sandbox.hub.faults.injected == 3
        assert report.update is not None
        assert len((await spoke.list(r.JOB, namespace=ns)).items) == 1
    finally:
        sandbox.hub.faults.clear()
        await running.stop()
