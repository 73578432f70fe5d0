"""`python -m fl_sandbox.apiserver` serves until SIGTERM and writes a usable kubeconfig."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from kubernetes_asyncio import client, config


async def test_standalone_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "hub.kubeconfig"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fl_sandbox.apiserver",
        "--name",
        "hub",
        "--kubeconfig",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            ready = (await proc.stdout.readline()).decode()
        assert "ready at http://127.0.0.1:" in ready
        api = await config.new_client_from_config(config_file=str(kubeconfig))
        try:
            names = [
                ns.metadata.name for ns in (await client.CoreV1Api(api).list_namespace()).items
            ]
        finally:
            await api.close()
        assert "default" in names
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            code = await proc.wait()
    assert code == 0
