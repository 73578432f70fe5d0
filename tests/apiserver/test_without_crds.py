"""Without the upstream OCM CRDs the tests that need them skip, saying why; none fails."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


async def test_kubectl_tests_skip_without_the_upstream_crds(tmp_path: Path) -> None:
    missing = tmp_path / "no-ocm-crds"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/apiserver/test_kubectl.py",
        cwd=REPO_ROOT,
        env={**os.environ, "FL_OCM_CRDS": str(missing)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(90):
        out, _ = await proc.communicate()
    report = out.decode()
    assert proc.returncode == 0, report
    assert f"upstream OCM CRDs not found at {missing}" in report
    assert " skipped" in report
