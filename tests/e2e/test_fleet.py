"""One end-to-end suite, two targets (tests/e2e/targets.py): install as the README says,
train the reference task, try to forge, kill the components mid-round, delete a job,
disable the add-on, uninstall. The scenarios run in order on one installation."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytest
import yaml

from fl_contract import keys, naming
from fl_core.examples import digits
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.errors import Conflict, Forbidden
from fl_kube.waiting import wait_for
from tests.e2e.targets import AGENT_NAMESPACE, MANAGER_NAMESPACE, REPO, Target, run

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

JOB_NAMESPACE = "e2e"
CLAIM = naming.dataset_claim_name("digits")
SAMPLE = REPO / "deploy" / "samples" / "digits-fedavg.yaml"
PART_OF = f"{keys.LABEL_PART_OF}=ocm-federated-learning"
ACCURACY_TOLERANCE = 1e-3  # the same arithmetic: only summation order may differ


async def _hub_claims(target: Target, cluster: str) -> set[str]:
    managed = await target.hub.get(r.MANAGED_CLUSTER, cluster)
    return {c["name"] for c in (managed.get("status") or {}).get("clusterClaims") or []}


async def _addon_available(target: Target, cluster: str) -> bool:
    mca = await target.hub.get_or_none(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=cluster)
    conditions = ((mca or {}).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


async def _apply_job(
    target: Target, name: str, rounds: int, privacy: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The README's digits sample, for this many clusters and rounds, in the job namespace."""
    job = yaml.safe_load(SAMPLE.read_text())
    job["metadata"]["name"] = name
    if privacy is not None:
        job["spec"]["privacy"] = privacy
    job["spec"]["server"]["rounds"] = rounds
    job["spec"]["server"]["minAvailableClients"] = len(target.clusters)
    if target.store is not None:
        job["spec"]["server"]["storage"] = target.store
    with contextlib.suppress(Conflict):  # left by an earlier run: the jobs' own namespace
        await target.hub.create(r.NAMESPACE, {"metadata": {"name": JOB_NAMESPACE}})
    path = target.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    await run(
        ["kubectl", "apply", "-n", JOB_NAMESPACE, "-f", str(path)], kubeconfig=target.hub_kubeconfig
    )
    got: dict[str, Any] = await target.hub.get(r.FEDERATED_LEARNING, name, namespace=JOB_NAMESPACE)
    return got


async def _status(target: Target, name: str) -> dict[str, Any]:
    job = await target.hub.get(r.FEDERATED_LEARNING, name, namespace=JOB_NAMESPACE)
    return dict(job.get("status") or {})


async def _completed(target: Target, name: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
    async def done() -> dict[str, Any] | None:
        status = await _status(target, name)
        if status.get("phase") == "Failed":
            raise AssertionError(f"job {name} failed: {status.get('message')}")
        return status if status.get("phase") == "Completed" else None

    result: dict[str, Any] = await wait_for(done, timeout=timeout, interval=0.5, message=name)
    return result


def _check_reference(status: dict[str, Any], clusters: int, rounds: int) -> list[float]:
    history = status["history"]
    assert [h["round"] for h in history] == list(range(1, rounds + 1)), "each round once"
    accuracies = [float(h["accuracy"]) for h in history]
    reference = digits.fedavg_reference(clusters, rounds)
    assert accuracies == pytest.approx(reference, abs=ACCURACY_TOLERANCE)
    return accuracies


async def test_install_as_the_readme_says(target: Target) -> None:
    await target.install()
    for cluster in target.clusters:

        async def available(c: str = cluster) -> bool:
            return await _addon_available(target, c)

        await wait_for(
            available,
            timeout=180,
            interval=0.5,
            message=f"add-on Available on {cluster}",
        )
        mca = await target.hub.get(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=cluster)
        assert mca["status"]["namespace"] == AGENT_NAMESPACE


async def test_dataset_claims_reach_the_hub(target: Target) -> None:
    for cluster in target.clusters:

        async def claimed(c: str = cluster) -> bool:
            return CLAIM in await _hub_claims(target, c)

        await wait_for(claimed, timeout=120, interval=0.5, message=f"{CLAIM} on {cluster}")


async def test_digits_job_reaches_the_reference_accuracy(target: Target) -> None:
    rounds = int(os.environ.get("E2E_ROUNDS", "3"))
    await _apply_job(target, "digits", rounds=rounds)
    status = await _completed(target, "digits", timeout=60 + 30 * rounds)
    accuracies = _check_reference(status, len(target.clusters), rounds)
    print(f"[{target.name}] digits, {len(target.clusters)} clusters: {accuracies}")


async def test_secure_aggregation_reaches_the_plain_accuracy(target: Target) -> None:
    """SecAgg+ through the real channel: keys and shares in reports and the store, client
    secrets in a Secret mounted into the training Job, only masked inputs leave a cluster."""
    rounds = int(os.environ.get("E2E_ROUNDS", "3"))
    secure = {"secureAggregation": {"enabled": True}}
    await _apply_job(target, "digits-secure", rounds=rounds, privacy=secure)
    status = await _completed(target, "digits-secure", timeout=90 + 45 * rounds)
    history = status["history"]
    assert [h["round"] for h in history] == list(range(1, rounds + 1)), "each round once"
    accuracies = [float(h["accuracy"]) for h in history]
    reference = digits.fedavg_reference(len(target.clusters), rounds)
    assert abs(accuracies[-1] - reference[-1]) <= 0.005, (accuracies, reference)
    print(f"[{target.name}] secure digits, {len(target.clusters)} clusters: {accuracies}")


async def test_one_cluster_cannot_act_for_another(target: Target) -> None:
    first, second = target.clusters[0], target.clusters[1]
    async with await KubeApi.from_kubeconfig(await target.agent_credentials(first)) as agent:
        with pytest.raises(Forbidden):
            await agent.patch(
                r.MANAGED_CLUSTER_ADDON,
                keys.ADDON_NAME,
                {"status": {"conditions": []}},
                namespace=second,
                subresource="status",
            )
        with pytest.raises(Forbidden):
            await agent.list(r.MANIFEST_WORK, namespace=second)
        with pytest.raises(Forbidden):
            await agent.list(r.SECRET, namespace=second)
        with pytest.raises(Forbidden):
            await agent.delete(r.FEDERATED_LEARNING, "digits", namespace=JOB_NAMESPACE)
        with pytest.raises(Forbidden):
            await agent.list(r.FEDERATED_LEARNING, namespace=JOB_NAMESPACE)


async def test_manager_and_agent_killed_mid_round(target: Target) -> None:
    await _apply_job(target, "digits-killed", rounds=4)

    async def in_round_two() -> bool:
        status = await _status(target, "digits-killed")
        return int(status.get("round") or 0) >= 2 and status.get("phase") == "Running"

    await wait_for(in_round_two, timeout=240, interval=0.2, message="round 2 started")
    await target.kill_manager()
    await target.kill_agent(target.clusters[0])
    status = await _completed(target, "digits-killed", timeout=400)
    accuracies = _check_reference(status, len(target.clusters), 4)
    print(f"[{target.name}] killed mid-round 2, {len(target.clusters)} clusters: {accuracies}")


async def test_job_deleted_mid_round_is_cleaned_up(target: Target) -> None:
    job = await _apply_job(target, "digits-deleted", rounds=20)
    uid = job["metadata"]["uid"]
    selector = f"{keys.LABEL_JOB_UID}={uid}"

    async def training() -> bool:
        for spoke in target.spokes.values():
            jobs = await spoke.list(r.JOB, namespace=AGENT_NAMESPACE, label_selector=selector)
            if not jobs.items:
                return False
        return True

    await wait_for(training, timeout=240, interval=0.2, message="training Jobs on every cluster")
    await target.hub.delete(r.FEDERATED_LEARNING, "digits-deleted", namespace=JOB_NAMESPACE)

    async def all_gone() -> bool:
        if await target.hub.get_or_none(
            r.FEDERATED_LEARNING, "digits-deleted", namespace=JOB_NAMESPACE
        ):
            return False
        for cluster, spoke in target.spokes.items():
            if (
                await target.hub.list(r.MANIFEST_WORK, namespace=cluster, label_selector=selector)
            ).items:
                return False
            for res in (r.JOB, r.CONFIGMAP):
                if (
                    await spoke.list(res, namespace=AGENT_NAMESPACE, label_selector=selector)
                ).items:
                    return False
        return True

    await wait_for(
        all_gone, timeout=180, interval=0.5, message="job, works, Jobs, round specs gone"
    )


async def test_disabling_the_addon_withdraws_the_cluster(target: Target) -> None:
    cluster = target.clusters[-1]
    await target.disable_addon(cluster)

    async def withdrawn() -> bool:
        if await target.hub.get_or_none(
            r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=cluster
        ):
            return False
        if CLAIM in await _hub_claims(target, cluster):
            return False
        return not await target.agent_running(cluster)

    await wait_for(withdrawn, timeout=240, interval=0.5, message=f"{cluster} withdrawn")
    spoke = target.spokes[cluster]
    assert [
        c for c in (await spoke.list(r.CLUSTER_CLAIM)).items if c["metadata"]["name"] == CLAIM
    ] == []
    assert (
        await spoke.get_or_none(r.LEASE, keys.AGENT_LEASE_NAME, namespace=AGENT_NAMESPACE) is None
    )


async def test_uninstall_leaves_nothing(target: Target) -> None:
    await target.uninstall()

    async def hub_clean() -> list[str]:
        left = []
        if await target.hub.get_or_none(r.CRD, f"{keys.FL_PLURAL}.{keys.FL_GROUP}"):
            left.append("FederatedLearning CRD")
        if await target.hub.get_or_none(r.NAMESPACE, MANAGER_NAMESPACE):
            left.append(f"namespace {MANAGER_NAMESPACE}")
        if await target.hub.get_or_none(r.CLUSTER_MANAGEMENT_ADDON, keys.ADDON_NAME):
            left.append("ClusterManagementAddOn")
        left += [
            f"AddOnTemplate {t['metadata']['name']}"
            for t in (await target.hub.list(r.ADDON_TEMPLATE, label_selector=PART_OF)).items
        ]
        left += [
            f"ClusterRole {c['metadata']['name']}"
            for c in (await target.hub.list(r.CLUSTER_ROLE, label_selector=PART_OF)).items
        ]
        for cluster in target.clusters:
            if await target.hub.get_or_none(
                r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=cluster
            ):
                left.append(f"ManagedClusterAddOn {cluster}")
            works = (await target.hub.list(r.MANIFEST_WORK, namespace=cluster)).items
            left += [
                f"ManifestWork {cluster}/{w['metadata']['name']}"
                for w in works
                if keys.ADDON_NAME in w["metadata"]["name"]
                or w["metadata"]["name"].startswith("fl-")
            ]
        return left

    async def spokes_clean() -> list[str]:
        left = []
        for cluster, spoke in target.spokes.items():
            left += [
                f"{cluster}: ClusterClaim {c['metadata']['name']}"
                for c in (await spoke.list(r.CLUSTER_CLAIM)).items
                if c["metadata"]["name"].endswith(keys.DATASET_CLAIM_SUFFIX)
            ]
            for res in (r.SERVICE_ACCOUNT, r.ROLE, r.CONFIGMAP, r.JOB):
                left += [
                    f"{cluster}: {res.kind} {o['metadata']['name']}"
                    for o in (
                        await spoke.list(res, namespace=AGENT_NAMESPACE, label_selector=PART_OF)
                    ).items
                ]
            left += [
                f"{cluster}: ClusterRole {c['metadata']['name']}"
                for c in (await spoke.list(r.CLUSTER_ROLE, label_selector=PART_OF)).items
            ]
        return left

    async def nothing_left() -> bool:
        return not (await hub_clean() or await spokes_clean())

    try:
        await wait_for(nothing_left, timeout=180, interval=1.0, message="uninstalled")
    except TimeoutError as exc:
        raise AssertionError(f"left behind: {await hub_clean() + await spokes_clean()}") from exc
