"""The agent with exactly the permissions the add-on grants it, on both sides.

Hub: its per-cluster identity, with the RBAC the hub manager sets up. Spoke: the
ServiceAccount of the AddOnTemplate, bound to the Role and ClusterRole the template ships.
The agent must publish claims, run a round and report without a single Forbidden.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fl_contract import keys
from fl_kube import Forbidden, KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from tests.agent.harness import (
    catalogue,
    reported,
    round_report,
    round_spec,
    spec_configmap,
    start_agent,
)
from tests.agent.test_claims_sandbox import DIGITS, hub_claims

TEMPLATE = Path(__file__).resolve().parents[2] / "addon_templates" / "addontemplate.yaml"
RBAC_KINDS = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
SERVICE_ACCOUNT = "federated-learning-agent"


def template_rbac(namespace: str) -> list[dict[str, Any]]:
    """The agent's spoke RBAC from the AddOnTemplate, rendered for its install namespace."""
    text = TEMPLATE.read_text().replace("{{INSTALL_NAMESPACE}}", namespace)
    template = yaml.safe_load(text)
    manifests = template["spec"]["agentSpec"]["workload"]["manifests"]
    return [m for m in manifests if m["kind"] in RBAC_KINDS]


async def test_agent_works_with_the_add_on_permissions_only(
    sandbox_factory: Any, tmp_path: Path
) -> None:
    async with sandbox_factory(
        clusters=2, authorize=True, hub_manager=True, agents=False, datasets=False
    ) as sb:
        c1, c2 = sb.cluster_names
        ns = sb.agent_namespace(c1)
        spoke_admin = sb.spoke_apis[c1]
        for manifest in template_rbac(ns):
            res = r.by_kind(manifest["apiVersion"], manifest["kind"])
            # The sandbox's add-on install applies these too (the template's deploy work),
            # as OCM does: apply, so either may come first.
            await spoke_admin.apply(res, manifest, field_manager="tests")
        sa_kubeconfig = sb.spokes[c1].write_kubeconfig(
            tmp_path / "agent-spoke.kubeconfig",
            user=f"system:serviceaccount:{ns}:{SERVICE_ACCOUNT}",
            groups=(
                "system:serviceaccounts",
                f"system:serviceaccounts:{ns}",
                "system:authenticated",
            ),
        )
        hub = await KubeApi.from_kubeconfig(sb.hub_kubeconfig)
        as_c1 = await KubeApi.from_kubeconfig(sb.agent_hub_kubeconfig(c1))
        running = await start_agent(
            sb,
            c1,
            datasets=catalogue(tmp_path / "ds.yaml", {"digits": tmp_path / "data"}),
            kubeconfig=str(sa_kubeconfig),
        )
        try:

            async def published() -> bool:
                return DIGITS in await hub_claims(hub, c1)

            await wait_for(published, timeout=20, message="claim published as the agent")
            spec = round_spec(sb, cluster=c1, uid="uid-rbac")
            await spoke_admin.create(r.CONFIGMAP, spec_configmap(spec, namespace=ns), namespace=ns)

            await reported(hub, c1, "UpdateReady")
            lease = await spoke_admin.get_or_none(r.LEASE, keys.AGENT_LEASE_NAME, namespace=ns)
            assert lease is not None
            sa_user = f"system:serviceaccount:{ns}:{SERVICE_ACCOUNT}"

            def agent_methods() -> set[str]:
                return {rec.method for rec in sb.spokes[c1].request_log if rec.user == sa_user}

            # Creates (claims, Job, Lease) and patches (Lease renewals) all went through.
            await wait_for(
                lambda: agent_methods() >= {"GET", "POST", "PATCH"},
                timeout=20,
                message="the agent's reads, creates and patches as its service account",
            )
            as_agent = [rec for rec in sb.spokes[c1].request_log if rec.user == sa_user]
            assert [rec for rec in as_agent if rec.status == 403] == []

            # The per-cluster identity cannot forge another cluster's reports.
            other = await hub.get(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=c2)
            forged = {
                "type": "round.federated-learning.io/team-a.digits",
                "status": "True",
                "reason": "UpdateReady",
                "message": "{}",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
            with pytest.raises(Forbidden):
                await as_c1.patch(
                    r.MANAGED_CLUSTER_ADDON,
                    keys.ADDON_NAME,
                    {
                        "metadata": {"resourceVersion": other["metadata"]["resourceVersion"]},
                        "status": {"conditions": [forged]},
                    },
                    namespace=c2,
                    subresource="status",
                )
            assert await round_report(hub, c2) is None
            # Round specs (and the presigned URLs in them) stay out of the add-on identity's
            # reach on the hub: it cannot read ManifestWorks, another cluster's or its own.
            for namespace in (c1, c2):
                with pytest.raises(Forbidden):
                    await as_c1.list(r.MANIFEST_WORK, namespace=namespace)
            # On the spoke the agent reads ConfigMaps in its own namespace only.
            as_sa = await KubeApi.from_kubeconfig(sa_kubeconfig)
            try:
                with pytest.raises(Forbidden):
                    await as_sa.list(r.CONFIGMAP, namespace="default")
            finally:
                await as_sa.close()
        finally:
            await running.stop()
            for api in (hub, as_c1):
                await api.close()
