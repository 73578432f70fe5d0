"""Wires the agent together and runs it until cancelled."""

from __future__ import annotations

import asyncio
import logging

from spoke_agent.settings import AgentSettings

log = logging.getLogger(__name__)


async def run_agent(settings: AgentSettings) -> None:
    """Run the agent for one managed cluster until cancelled."""
    log.info(
        "agent for cluster %s starting in namespace %s", settings.cluster_name, settings.namespace
    )
    await asyncio.Event().wait()
