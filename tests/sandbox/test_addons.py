"""Add-on install against real API servers: install namespace from the AddOnDeploymentConfig,
the agent's hub identity (Secret, file, RBAC), health from the agent's Lease, removal, and
the real agent started in process."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import yaml

from fl_contract import keys
from fl_kube import Forbidden, KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.ocm.addons import agent_groups, agent_user
from fl_sandbox.ocm.conditions import find
from fl_sandbox.sandbox import Sandbox
from tests.conftest import SandboxFactory

ADDON = keys.ADDON_NAME
SECRET = f"{ADDON}-hub-kubeconfig"
DEFAULT_NS = "open-cluster-management-agent-addon"


async def addon_status(hub: KubeApi, cluster: str) -> dict[str, Any]:
    mca = await hub.get(r.MANAGED_CLUSTER_ADDON, ADDON, namespace=cluster)
    return dict(mca.get("status") or {})


def condition(status: dict[str, Any], type_: str) -> tuple[str, str] | None:
    found = find(status.get("conditions"), type_)
    return (found["status"], found["reason"]) if found else None


async def test_install_sets_status_secret_and_kubeconfig(sandbox: Sandbox) -> None:
    async with await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub:
        for cluster in sandbox.cluster_names:
            status = await addon_status(hub, cluster)
            assert status["namespace"] == DEFAULT_NS == sandbox.agent_namespace(cluster)
            assert status["registrations"] == [
                {
                    "signerName": "kubernetes.io/kube-apiserver-client",
                    "subject": {
                        "user": agent_user(cluster, ADDON),
                        "groups": agent_groups(cluster, ADDON),
                    },
                }
            ]
            assert condition(status, "Available") == ("Unknown", "ManagedClusterAddOnLeaseNotFound")
            kubeconfig = sandbox.agent_hub_kubeconfig(cluster)
            async with await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig(cluster)) as spoke:
                secret = await spoke.get(r.SECRET, SECRET, namespace=DEFAULT_NS)
            assert base64.b64decode(secret["data"]["kubeconfig"]) == kubeconfig.read_bytes()
            config = yaml.safe_load(kubeconfig.read_text())
            assert config["users"][0]["name"] == agent_user(cluster, ADDON)
        refs = {ref["resource"]: ref for ref in status["configReferences"]}
        assert refs["addondeploymentconfigs"]["desiredConfig"]["specHash"]


async def test_agent_is_deployed_from_the_template_through_a_manifest_work(
    sandbox: Sandbox,
) -> None:
    deployments = r.Resource("apps", "v1", "deployments", "Deployment", True)
    async with (
        await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig("cluster1")) as spoke,
    ):

        async def manifests_applied() -> bool:
            return condition(await addon_status(hub, "cluster1"), "ManifestApplied") == (
                "True",
                "AddonManifestApplied",
            )

        await wait_for(manifests_applied, timeout=15, message="ManifestApplied True")
        status = await addon_status(hub, "cluster1")
        assert condition(status, "Progressing") == ("False", "Completed")
        for ref in status["configReferences"]:
            assert ref["lastAppliedConfig"] == ref["desiredConfig"]
        work = await hub.get(r.MANIFEST_WORK, f"addon-{ADDON}-deploy-0", namespace="cluster1")
        assert work["metadata"]["labels"] == {"open-cluster-management.io/addon-name": ADDON}
        text = str(work["spec"])
        assert "{{" not in text  # every template variable rendered
        deployment = await spoke.get(deployments, "federated-learning-agent", namespace=DEFAULT_NS)
        pod = deployment["spec"]["template"]["spec"]
        assert {"name": "hub-kubeconfig", "secret": {"secretName": SECRET}} in pod["volumes"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["CLUSTER_NAME"] == "cluster1"
        assert env["INSTALL_NAMESPACE"] == DEFAULT_NS
        assert env["HUB_KUBECONFIG"] == "/managed/hub-kubeconfig/kubeconfig"
        # Removing the add-on removes what the template put there, except the (shared,
        # deletion-orphan) namespace.
        await hub.delete(r.MANAGED_CLUSTER_ADDON, ADDON, namespace="cluster1")

        async def agent_removed() -> bool:
            return (
                await spoke.get_or_none(
                    deployments, "federated-learning-agent", namespace=DEFAULT_NS
                )
                is None
            )

        await wait_for(agent_removed, timeout=60, message="deployment removed with the add-on")
        assert await spoke.get(r.NAMESPACE, DEFAULT_NS)
        assert await spoke.get_or_none(r.SECRET, SECRET, namespace=DEFAULT_NS) is None


async def test_install_namespace_follows_the_deployment_config(sandbox: Sandbox) -> None:
    async with (
        await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig("cluster1")) as spoke,
    ):
        await hub.create(
            r.ADDON_DEPLOYMENT_CONFIG,
            {
                "metadata": {"name": "custom", "namespace": "cluster1"},
                "spec": {"agentInstallNamespace": "addon-ns-cluster1"},
            },
        )
        await hub.patch(
            r.MANAGED_CLUSTER_ADDON,
            ADDON,
            {
                "spec": {
                    "configs": [
                        {
                            "group": "addon.open-cluster-management.io",
                            "resource": "addondeploymentconfigs",
                            "name": "custom",
                            "namespace": "cluster1",
                        }
                    ]
                }
            },
            namespace="cluster1",
        )

        async def moved() -> bool:
            namespace: str = (await addon_status(hub, "cluster1"))["namespace"]
            return namespace == "addon-ns-cluster1"

        await wait_for(moved, timeout=10, message="status.namespace follows the config")
        await wait_for(
            lambda: sandbox.agent_namespace("cluster1") == "addon-ns-cluster1",
            timeout=5,
            message="the harness reads the new namespace",
        )
        assert await spoke.get(r.NAMESPACE, "addon-ns-cluster1")
        assert await spoke.get(r.SECRET, SECRET, namespace="addon-ns-cluster1")
        assert await spoke.get_or_none(r.SECRET, SECRET, namespace=DEFAULT_NS) is None
        assert (await addon_status(hub, "cluster2"))["namespace"] == DEFAULT_NS


def _micro_time(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_available_follows_the_agent_lease(sandbox_factory: SandboxFactory) -> None:
    grace = 30.0
    async with (
        sandbox_factory(clusters=1, addon_lease_grace=grace, datasets=False) as sb,
        await KubeApi.from_kubeconfig(sb.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sb.cluster_kubeconfig("cluster1")) as spoke,
    ):
        now = dt.datetime.now(dt.UTC)
        await spoke.create(
            r.LEASE,
            {
                "metadata": {"name": ADDON, "namespace": DEFAULT_NS},
                "spec": {
                    "holderIdentity": "external",
                    "leaseDurationSeconds": 60,
                    "renewTime": _micro_time(now),
                },
            },
        )

        async def available(expected: tuple[str, str]) -> bool:
            return condition(await addon_status(hub, "cluster1"), "Available") == expected

        await wait_for(
            lambda: available(("True", "ManagedClusterAddOnLeaseUpdated")),
            timeout=10,
            message="available while the lease is fresh (an externally run agent counts)",
        )
        # The last renewal is now almost a grace period old and nothing renews it: the
        # add-on turns unavailable when the grace period ends, without any further event.
        almost_stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=grace - 1.0)
        await spoke.patch(
            r.LEASE,
            ADDON,
            {"spec": {"renewTime": _micro_time(almost_stale)}},
            namespace=DEFAULT_NS,
        )
        await wait_for(
            lambda: available(("False", "ManagedClusterAddOnLeaseUpdateStopped")),
            timeout=10,
            message="unavailable once the lease is stale",
        )


async def test_hub_permissions_are_bound_per_cluster(sandbox_factory: SandboxFactory) -> None:
    async with (
        sandbox_factory(clusters=2, authorize=True, datasets=False) as sb,
        await KubeApi.from_kubeconfig(sb.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sb.agent_hub_kubeconfig("cluster1")) as agent,
    ):

        async def can_read_own() -> dict[str, Any] | None:
            return await agent.get_or_none(r.MANAGED_CLUSTER_ADDON, ADDON, namespace="cluster1")

        own = await wait_for(can_read_own, timeout=10, message="agent reads its add-on")
        assert own["metadata"]["namespace"] == "cluster1"
        # As upstream: the template's CurrentCluster ClusterRole bound in the cluster namespace
        # to the agent's user and groups (all but system:authenticated), owned by the add-on.
        binding = await hub.get(
            r.ROLE_BINDING,
            f"open-cluster-management:{ADDON}:clusterrole:agent",
            namespace="cluster1",
        )
        assert binding["roleRef"]["name"] == "open-cluster-management:federated-learning:agent-hub"
        assert [s["name"] for s in binding["subjects"]] == [
            agent_user("cluster1", ADDON),
            *agent_groups("cluster1", ADDON)[:2],
        ]
        assert binding["metadata"]["ownerReferences"][0]["uid"] == own["metadata"]["uid"]
        # That role grants reads only: no agent can write another cluster's add-on status.
        try:
            await agent.patch(
                r.MANAGED_CLUSTER_ADDON,
                ADDON,
                {"status": {"conditions": []}},
                namespace="cluster2",
                subresource="status",
            )
        except Forbidden:
            pass
        else:
            raise AssertionError("cluster1's agent could write cluster2's add-on status")


async def test_in_process_agent_starts_and_stops_with_the_addon(
    sandbox_factory: SandboxFactory,
) -> None:
    async with (
        sandbox_factory(clusters=1, agents=True) as sb,
        await KubeApi.from_kubeconfig(sb.hub_kubeconfig) as hub,
    ):
        assert sb.running_agents() == ["cluster1"]

        async def dataset_claimed() -> bool:
            cluster = await hub.get(r.MANAGED_CLUSTER, "cluster1")
            names = [c["name"] for c in (cluster.get("status") or {}).get("clusterClaims") or []]
            return "digits.dataset.federated-learning.io" in names

        await wait_for(dataset_claimed, timeout=15, message="the agent published its dataset")
        await hub.delete(r.MANAGED_CLUSTER_ADDON, ADDON, namespace="cluster1")

        async def stopped() -> bool:
            return sb.running_agents() == []

        # The pre-delete cleanup Job runs first: it withdraws the claims and the Lease, so
        # Placements stop selecting the cluster; only then does the agent go.
        await wait_for(stopped, timeout=60, message="agent stopped with its add-on")
        assert not await dataset_claimed()
        async with await KubeApi.from_kubeconfig(sb.cluster_kubeconfig("cluster1")) as spoke:
            assert await spoke.get_or_none(r.SECRET, SECRET, namespace=DEFAULT_NS) is None
            assert (await spoke.list(r.CLUSTER_CLAIM)).items == []
            assert await spoke.get_or_none(r.LEASE, ADDON, namespace=DEFAULT_NS) is None


async def test_placements_install_strategy(sandbox_factory: SandboxFactory) -> None:
    claim = "gpu.example.io"
    async with (
        sandbox_factory(clusters=2, addon=False, datasets=False) as sb,
        await KubeApi.from_kubeconfig(sb.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sb.cluster_kubeconfig("cluster2")) as spoke,
    ):
        await hub.create(r.NAMESPACE, {"metadata": {"name": "team"}})
        await hub.create(
            r.MANAGED_CLUSTER_SET_BINDING,
            {"metadata": {"name": "global", "namespace": "team"}, "spec": {"clusterSet": "global"}},
        )
        await hub.create(
            r.ADDON_DEPLOYMENT_CONFIG,
            {
                "metadata": {"name": "placed", "namespace": "team"},
                "spec": {"agentInstallNamespace": "placed-ns"},
            },
        )
        selector = {"claimSelector": {"matchExpressions": [{"key": claim, "operator": "Exists"}]}}
        await hub.create(
            r.PLACEMENT,
            {
                "metadata": {"name": "gpus", "namespace": "team"},
                "spec": {"predicates": [{"requiredClusterSelector": selector}]},
            },
        )
        config = {
            "group": "addon.open-cluster-management.io",
            "resource": "addondeploymentconfigs",
            "name": "placed",
            "namespace": "team",
        }
        await hub.create(
            r.CLUSTER_MANAGEMENT_ADDON,
            {
                "metadata": {"name": "auto"},
                "spec": {
                    "supportedConfigs": [
                        {"group": "addon.open-cluster-management.io", "resource": "addontemplates"},
                        {
                            "group": "addon.open-cluster-management.io",
                            "resource": "addondeploymentconfigs",
                        },
                    ],
                    "installStrategy": {
                        "type": "Placements",
                        "placements": [{"name": "gpus", "namespace": "team", "configs": [config]}],
                    },
                },
            },
        )
        await spoke.create(r.CLUSTER_CLAIM, {"metadata": {"name": claim}, "spec": {"value": "1"}})

        async def installed() -> dict[str, Any] | None:
            mca = await hub.get_or_none(r.MANAGED_CLUSTER_ADDON, "auto", namespace="cluster2")
            return mca if mca and (mca.get("status") or {}).get("namespace") else None

        mca = await wait_for(installed, timeout=10, message="add-on installed by placement")
        assert mca["status"]["namespace"] == "placed-ns"
        assert mca["metadata"]["ownerReferences"][0]["kind"] == "ClusterManagementAddOn"
        assert await hub.get_or_none(r.MANAGED_CLUSTER_ADDON, "auto", namespace="cluster1") is None
        assert await spoke.get(r.SECRET, "auto-hub-kubeconfig", namespace="placed-ns")
        await spoke.delete(r.CLUSTER_CLAIM, claim)

        async def removed() -> bool:
            return (
                await hub.get_or_none(r.MANAGED_CLUSTER_ADDON, "auto", namespace="cluster2") is None
            )

        await wait_for(removed, timeout=10, message="add-on removed when no longer placed")


def _reconciles(sb: Sandbox, controller: str) -> float:
    """Reconciles the named emulated controller has run (its controller-runtime metric)."""
    return sum(
        sample.value
        for metric in sb.registry.collect()
        if metric.name == "controller_runtime_reconcile"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels.get("controller") == controller
    )


async def test_lease_renewals_that_change_nothing_cost_no_reconcile(
    sandbox_factory: SandboxFactory,
) -> None:
    async with sandbox_factory(clusters=1, datasets=False, resync_period=None) as sb:
        spoke = sb.spoke_apis["cluster1"]
        assert sb.installer is not None
        assert sb.runtime is not None
        installer, runtime = sb.installer, sb.runtime

        async def renew() -> None:
            lease = await spoke.apply(
                r.LEASE,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": ADDON, "namespace": DEFAULT_NS},
                    "spec": {
                        "holderIdentity": "agent",
                        "leaseDurationSeconds": 60,
                        "renewTime": _micro_time(dt.datetime.now(dt.UTC)),
                    },
                },
                field_manager="agent",
            )
            version = lease["metadata"]["resourceVersion"]
            await wait_for(
                lambda: (
                    (installer.leases["cluster1"].get(ADDON, DEFAULT_NS) or {})
                    .get("metadata", {})
                    .get("resourceVersion")
                    == version
                ),
                timeout=10,
                message="the installer sees the renewal",
            )
            await wait_for(runtime.is_settled, timeout=10, message="controllers settle")

        await renew()
        await wait_for(
            lambda: (
                condition(
                    (installer.addons.get(ADDON, "cluster1") or {}).get("status") or {}, "Available"
                )
                == ("True", "ManagedClusterAddOnLeaseUpdated")
            ),
            timeout=10,
            message="available once the lease is there",
        )
        await wait_for(runtime.is_settled, timeout=10, message="controllers settle")
        before = _reconciles(sb, "addon-install")
        for _ in range(5):
            await renew()
        # Each renewal pushed the stale moment later and left Available True: the reconcile
        # already scheduled for the old stale moment covers them all.
        assert _reconciles(sb, "addon-install") == before
