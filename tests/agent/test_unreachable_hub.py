"""An agent whose hub API is out of reach waits longer after each failed attempt and says
so at WARNING, instead of repeating itself at INFO every poll period."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from pathlib import Path

import pytest

from fl_kube.waiting import wait_for
from fl_sandbox.apiserver import ApiServer
from spoke_agent.app import run_agent
from spoke_agent.settings import AgentSettings
from tests.agent.harness import catalogue

RETRY = re.compile(r"^dataset claims: will retry in ([0-9.e+-]+)s: ")


async def test_claims_back_off_while_the_hub_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spoke = ApiServer(name="cluster1")
    await spoke.start()
    gone = ApiServer(name="hub")
    await gone.start()
    hub_kubeconfig = gone.write_kubeconfig(tmp_path / "hub.kubeconfig")
    await gone.stop()  # nothing listens on the hub's port any more
    settings = AgentSettings(
        cluster_name="cluster1",
        hub_kubeconfig=str(hub_kubeconfig),
        kubeconfig=str(spoke.write_kubeconfig(tmp_path / "spoke.kubeconfig")),
        namespace="default",
        datasets=catalogue(tmp_path / "datasets.yaml", {"digits": tmp_path / "digits"}),
        metrics_bind_address="0",
        catalogue_poll_seconds=0.05,
    )
    caplog.set_level(logging.INFO, logger="spoke_agent.claims")
    caplog.set_level(logging.INFO, logger="fl_kube.controller")
    agent = asyncio.create_task(run_agent(settings))
    try:

        def delays() -> list[float]:
            return [
                float(m.group(1))
                for rec in caplog.records
                if rec.name == "spoke_agent.claims" and (m := RETRY.match(rec.getMessage()))
            ]

        await wait_for(lambda: len(delays()) >= 3, timeout=15, message="claims retries")
        first = delays()[:3]
        assert all(later > earlier * 1.3 for earlier, later in itertools.pairwise(first)), first
        retries = [r for r in caplog.records if RETRY.match(r.getMessage())]
        assert {r.levelname for r in retries} == {"WARNING"}

        # The round controller's retries of its reads from the hub say so at WARNING too.
        def round_retries() -> list[logging.LogRecord]:
            return [r for r in caplog.records if " will be retried in " in r.getMessage()]

        rounds = await wait_for(round_retries, timeout=15, message="round controller retries")
        assert {r.levelname for r in rounds} == {"WARNING"}
    finally:
        agent.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await agent
        await spoke.stop()
