"""`fl-spoke-agent` as a separate process against the sandbox, configured as a Deployment is."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from tests.agent.harness import catalogue, reported, round_spec, spec_configmap
from tests.agent.test_claims_sandbox import DIGITS, hub_claims


async def test_the_console_script_runs_a_round_and_stops_cleanly(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    cluster = sandbox.cluster_names[1]
    ns = sandbox.agent_namespace(cluster)
    script = Path(sys.executable).parent / "fl-spoke-agent"
    ds = catalogue(tmp_path / "ds.yaml", {"digits": tmp_path / "data"})
    env = {
        **os.environ,
        "CLUSTER_NAME": cluster,
        "POD_NAMESPACE": ns,
        "DATASETS_FILE": str(ds),
        "HUB_KUBECONFIG": str(sandbox.agent_hub_kubeconfig(cluster)),
    }
    proc = await asyncio.create_subprocess_exec(
        str(script),
        "--kubeconfig",
        str(sandbox.cluster_kubeconfig(cluster)),
        "--metrics-bind-address",
        "127.0.0.1:0",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    hub = await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig)
    spoke = await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig(cluster))
    try:

        async def published() -> bool:
            return DIGITS in await hub_claims(hub, cluster)

        await wait_for(published, timeout=20, message="claim from the agent process")
        spec = round_spec(sandbox, cluster=cluster, uid="uid-process")
        await spoke.create(r.CONFIGMAP, spec_configmap(spec, namespace=ns), namespace=ns)

        await reported(hub, cluster, "UpdateReady")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=20)
        await hub.close()
        await spoke.close()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr, stderr.decode()[-2000:]
