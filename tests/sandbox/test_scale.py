"""A fleet of light clusters end to end: 30 clusters, the real hub manager and agents, one
round of a trainer that hands the model back (benchmarks/noop_trainer.py), so what runs is
the control plane. Larger fleets are measured by `make bench` (control_plane section)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from fl_sandbox.sandbox import AGENT_SPOKE_USER
from tests.conftest import SandboxFactory
from tests.hub import helpers as h

pytestmark = pytest.mark.slow

CLUSTERS = 30
REPO = Path(__file__).resolve().parents[2]


def _ca(kubeconfig: Path) -> bytes:
    config = yaml.safe_load(kubeconfig.read_text())
    return base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])


async def test_a_light_fleet_of_30_clusters_runs_a_round(
    sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the Job's process imports the trainer
    async with (
        sandbox_factory(
            clusters=CLUSTERS,
            agents=True,
            datasets=False,
            authorize=True,
            tls=True,
            start_timeout=120,
        ) as sb,
        h.manager(sb),
    ):
        assert sb.light  # above 20 clusters by default
        # One serving certificate for every API server, not one openssl run each.
        assert len({_ca(sb.cluster_kubeconfig(c)) for c in sb.cluster_names}) == 1
        assert _ca(sb.hub_kubeconfig) == _ca(sb.cluster_kubeconfig("cluster1"))
        await h.create_job(
            sb,
            "fleet",
            rounds=1,
            min_available=CLUSTERS,
            timeout="5m",
            client={
                "command": ["fl-train"],
                "args": ["--trainer", "benchmarks.noop_trainer:NoopTrainer"],
            },
        )
        status = await h.wait_status(
            sb, "fleet", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=240
        )
        assert status["phase"] == "Completed", status.get("message")
        assert status["history"][0]["accepted"] == CLUSTERS
        # Every cluster's agent worked on its own cluster under its own name (the tallies
        # the control-plane benchmark counts requests by).
        for name in sb.cluster_names:
            mine = sb.spokes[name].tally.requests
            assert mine[(AGENT_SPOKE_USER, "create", "jobs")] == 1, name
