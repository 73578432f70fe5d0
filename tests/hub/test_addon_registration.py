"""Add-on registration by the hub manager: create what is missing, never take over what an
operator changed, and keep driving jobs while registration fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import yaml

from fl_kube import resources as r
from fl_kube.waiting import wait_for
from hub_manager.settings import default_addon_templates_dir
from tests.hub import helpers as h

ADC_NAMESPACE = "open-cluster-management-federated-learning"
ADC_NAME = "federated-learning"


async def _readyz(port: int) -> int | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status
    except aiohttp.ClientConnectionError:
        return None


def _variables(adc: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v.get("value", "") for v in adc["spec"].get("customizedVariables") or []}


async def test_operator_edits_survive_manager_restarts(
    sandbox_factory: Any, unused_tcp_port: int
) -> None:
    """The README tells operators to set AGENT_IMAGE in the default AddOnDeploymentConfig;
    a restart (or leader change) must not roll it back."""
    async with sandbox_factory(clusters=1, hub_manager=False, agents=False) as sb:
        api = h.hub(sb)
        adc = await api.get(r.ADDON_DEPLOYMENT_CONFIG, ADC_NAME, namespace=ADC_NAMESPACE)
        variables = _variables(adc)
        variables["AGENT_IMAGE"] = "registry.example.com/fl/spoke-agent:9.9.9"
        adc["spec"]["customizedVariables"] = [{"name": k, "value": v} for k, v in variables.items()]
        await api.replace(r.ADDON_DEPLOYMENT_CONFIG, adc, namespace=ADC_NAMESPACE)
        cma = await api.get(r.CLUSTER_MANAGEMENT_ADDON, "federated-learning")
        cma["spec"]["installStrategy"] = {"type": "Manual"}
        cma["metadata"].setdefault("labels", {})["team"] = "platform"
        await api.replace(r.CLUSTER_MANAGEMENT_ADDON, cma)

        for _ in range(2):  # a start, then a restart
            async with h.manager(sb, metrics_bind_address=f"127.0.0.1:{unused_tcp_port}"):
                await wait_for(
                    lambda: _is(200, _readyz(unused_tcp_port)), timeout=20, message="ready"
                )
        after = await api.get(r.ADDON_DEPLOYMENT_CONFIG, ADC_NAME, namespace=ADC_NAMESPACE)
        assert _variables(after)["AGENT_IMAGE"] == "registry.example.com/fl/spoke-agent:9.9.9"
        cma_after = await api.get(r.CLUSTER_MANAGEMENT_ADDON, "federated-learning")
        assert cma_after["metadata"]["labels"]["team"] == "platform"


async def test_missing_objects_are_created(sandbox_factory: Any, unused_tcp_port: int) -> None:
    async with sandbox_factory(clusters=1, hub_manager=False, agents=False) as sb:
        api = h.hub(sb)
        await api.delete(r.ADDON_DEPLOYMENT_CONFIG, ADC_NAME, namespace=ADC_NAMESPACE)
        async with h.manager(sb, metrics_bind_address=f"127.0.0.1:{unused_tcp_port}"):
            await wait_for(lambda: _is(200, _readyz(unused_tcp_port)), timeout=20, message="ready")
            adc = await api.get(r.ADDON_DEPLOYMENT_CONFIG, ADC_NAME, namespace=ADC_NAMESPACE)
        assert _variables(adc)["AGENT_IMAGE"]


async def test_failed_registration_is_retried_and_jobs_are_still_driven(
    sandbox_factory: Any, unused_tcp_port: int, tmp_path: Path
) -> None:
    """A template the API server refuses leaves the manager not ready (and saying why in its
    log), but it keeps driving jobs; nothing points at the missing template."""
    folder = tmp_path / "addon"
    folder.mkdir()
    docs = []
    for path in sorted(default_addon_templates_dir().glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "AddOnTemplate":
                doc["metadata"]["name"] = "federated-learning-broken"
                del doc["spec"]["addonName"]  # required by the upstream CRD: 422
            if isinstance(doc, dict) and doc.get("kind") == "ClusterManagementAddOn":
                doc["metadata"]["name"] = "federated-learning-broken"
            docs.append(doc)
    (folder / "addon.yaml").write_text(yaml.safe_dump_all(docs))

    async with sandbox_factory(clusters=1, hub_manager=False, agents=False) as sb:
        api = h.hub(sb)
        async with h.manager(
            sb,
            metrics_bind_address=f"127.0.0.1:{unused_tcp_port}",
            addon_templates_dir=folder,
        ):
            await h.create_job(sb, "no-image", client={"image": None})
            status = await h.wait_status(sb, "no-image", h.phase_is("Failed"))
            assert status["phase"] == "Failed"
            assert await _readyz(unused_tcp_port) == 503

            async def warned() -> list[dict[str, Any]]:
                events = (await api.list(r.EVENT)).items  # in the manager's namespace
                return [e for e in events if e.get("reason") == "AddonRegistrationFailed"]

            (event,) = await wait_for(warned, timeout=20, message="registration event")
            assert event["type"] == "Warning"
            assert event["involvedObject"]["kind"] == "AddOnTemplate"
            assert "AddOnTemplate federated-learning-broken" in event["message"]
            assert "addonName" in event["message"]  # the API server's own words
        assert not await h.exists(sb, r.CLUSTER_MANAGEMENT_ADDON, "federated-learning-broken")
        assert not await h.exists(sb, r.ADDON_TEMPLATE, "federated-learning-broken")


async def _is(expected: int, probe: Any) -> bool:
    return bool(await probe == expected)
