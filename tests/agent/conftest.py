"""The agent tests' sandbox: two clusters, the add-on enabled, no agents, no digits data
(each test writes the catalogue it needs, which keeps start-up fast)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fl_sandbox.sandbox import Sandbox
from tests.agent.harness import AgentCluster, open_cluster


@pytest.fixture
async def sandbox(sandbox_factory: Any) -> AsyncIterator[Sandbox]:
    async with sandbox_factory(clusters=2, agents=False, datasets=False) as started:
        yield started


@pytest.fixture
async def agent_cluster(sandbox: Sandbox, tmp_path: Path) -> AsyncIterator[AgentCluster]:
    """The sandbox's first cluster with open hub and cluster clients (closed afterwards)."""
    opened = await open_cluster(sandbox, sandbox.cluster_names[0], tmp_path=tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
