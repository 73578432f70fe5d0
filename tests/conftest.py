"""Fixtures shared by every test folder: the upstream CRDs and sandboxes built on them.

``crd_dir`` is ``../shared/ocm-crds`` beside the repository, or ``$FL_OCM_CRDS`` (skipped,
with the reason, when absent). ``sandbox_factory`` builds a started ``Sandbox`` in the
test's ``tmp_path`` with those CRDs (so every object written is validated against the
upstream schemas) and stops it afterwards, whatever happened; ``sandbox`` is the common
case: 2 clusters, the add-on enabled, no hub manager, no agents.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fl_sandbox.sandbox import Sandbox

REPO_ROOT = Path(__file__).resolve().parents[1]
# FL_OCM_CRDS points elsewhere (a missing folder shows what runs without the upstream CRDs).
CRD_DIR = Path(os.environ.get("FL_OCM_CRDS") or REPO_ROOT.parent / "shared" / "ocm-crds")

SandboxFactory = Callable[..., contextlib.AbstractAsyncContextManager[Sandbox]]


@pytest.fixture(scope="session")
def crd_dir() -> Path:
    """The upstream OCM CRDs (``../shared/ocm-crds``); skips the test when they are absent."""
    if not CRD_DIR.is_dir() or not any(CRD_DIR.glob("*.yaml")):
        pytest.skip(
            f"upstream OCM CRDs not found at {CRD_DIR}: put open-cluster-management-io/api's "
            "CRD YAML files there to run the tests that validate against them"
        )
    return CRD_DIR


@pytest.fixture
def sandbox_factory(tmp_path: Path, crd_dir: Path) -> SandboxFactory:
    """``async with sandbox_factory(clusters=3, agents=True) as sb:`` -> a started Sandbox.

    Keyword arguments go to ``Sandbox``; ``workdir`` defaults to a fresh folder under
    ``tmp_path`` (one per call, so a test may run several) and ``crd_dirs`` to the upstream
    CRDs. The sandbox is stopped on exit even when the test fails.
    """
    counter = iter(range(1, 1_000_000))

    @contextlib.asynccontextmanager
    async def build(**kwargs: Any) -> AsyncIterator[Sandbox]:
        kwargs.setdefault("workdir", tmp_path / f"sandbox-{next(counter)}")
        kwargs.setdefault("crd_dirs", [crd_dir])
        sandbox = Sandbox(**kwargs)
        try:
            await sandbox.start()
            yield sandbox
        finally:
            await sandbox.stop()

    return build


@pytest.fixture
async def sandbox(sandbox_factory: SandboxFactory) -> AsyncIterator[Sandbox]:
    """A started sandbox: 2 clusters, add-on enabled, no hub manager, no agents."""
    async with sandbox_factory(clusters=2, hub_manager=False, agents=False) as started:
        yield started
