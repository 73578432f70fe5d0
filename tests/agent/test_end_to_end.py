"""The sandbox's own in-process agents with the real hub manager: a whole job, then cleanup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fl_contract import naming
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from tests.agent.harness import addon_conditions

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "digits-fedavg.yaml"


@pytest.mark.slow
async def test_a_digits_job_completes_and_the_agents_clean_up(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2, hub_manager=True, agents=True, datasets=True) as sb:
        hub = sb.hub_api
        await hub.create(r.NAMESPACE, {"metadata": {"name": "team-a"}})
        body = yaml.safe_load(SAMPLE.read_text())
        body["metadata"]["namespace"] = "team-a"
        body["spec"]["server"].update(rounds=2, minAvailableClients=2, roundTimeout="60s")
        body["spec"]["client"]["trainingConfig"] = {"local_epochs": 1}
        created = await hub.create(r.FEDERATED_LEARNING, body, namespace="team-a")
        name = body["metadata"]["name"]

        async def finished() -> dict[str, Any] | None:
            fl = await hub.get(r.FEDERATED_LEARNING, name, namespace="team-a")
            status = fl.get("status") or {}
            return status if status.get("phase") in ("Completed", "Failed") else None

        status = await wait_for(finished, timeout=60, interval=0.2, message="job finishes")
        assert status["phase"] == "Completed", status.get("message")
        assert [h["accepted"] for h in status["history"]] == [2, 2]

        condition_type = naming.round_condition_type("team-a", name)

        async def cleaned() -> bool:
            for cluster in sb.cluster_names:
                types = {c["type"] for c in await addon_conditions(hub, cluster)}
                if condition_type in types:
                    return False
                ns = sb.agent_namespace(cluster)
                if (await sb.spoke_apis[cluster].list(r.JOB, namespace=ns)).items:
                    return False
            return True

        await wait_for(cleaned, timeout=30, message="round conditions and Jobs removed")
        assert created["metadata"]["uid"]
