"""The end-to-end target, installed once for the whole module (the scenarios build on each
other: install, train, break things, clean up, uninstall)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.e2e.targets import CRD_DIR, Target, make_target


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the end-to-end suite installs with it (README)")
    if not CRD_DIR.is_dir():
        pytest.skip(f"upstream OCM CRDs not found at {CRD_DIR} (../shared/ocm-crds)")
    workdir: Path = tmp_path_factory.mktemp("e2e")
    started = await make_target(workdir)
    try:
        yield started
    finally:
        await started.close()
