"""The agent tests' sandbox: two clusters, the add-on enabled, no agents, no digits data
(each test writes the catalogue it needs, which keeps start-up fast)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fl_sandbox.sandbox import Sandbox


@pytest.fixture
async def sandbox(sandbox_factory: Any) -> AsyncIterator[Sandbox]:
    async with sandbox_factory(clusters=2, agents=False, datasets=False) as started:
        yield started
