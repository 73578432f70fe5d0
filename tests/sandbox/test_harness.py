"""The harness itself: workdir layout, Job runner per cluster, clean stop (no process or
task left behind), bad arguments."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from tests.conftest import SandboxFactory


def python_job(name: str, code: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "trainer:dev", "command": ["python", "-c", code]}
                    ],
                }
            },
        },
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_layout_datasets_and_catalogue(sandbox: Sandbox) -> None:
    assert sandbox.hub_kubeconfig.is_file()
    for index, name in enumerate(sandbox.cluster_names):
        assert sandbox.cluster_kubeconfig(name).is_file()
        catalogue = yaml.safe_load(sandbox.catalogue_path(name).read_text())
        [entry] = catalogue["datasets"]
        assert entry["name"] == "digits"
        # a Flower app's node_config, as Flower's simulation gives node `index`
        assert entry["nodeConfig"] == {
            "partition-id": index,
            "num-partitions": len(sandbox.cluster_names),
        }
        assert Path(entry["hostPath"]) == sandbox.dataset_dir(name)
        with np.load(sandbox.dataset_dir(name) / "train.npz", allow_pickle=False) as data:
            assert entry["samples"] == len(data["y"]) > 0
    assert sandbox.model_store_dir.is_dir()
    with pytest.raises(KeyError, match="cluster9"):
        sandbox.cluster_kubeconfig("cluster9")


async def test_jobs_run_on_each_cluster_and_stop_kills_them(
    sandbox_factory: SandboxFactory, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    async with (
        sandbox_factory(clusters=1, datasets=False, addon=False) as sb,
        await KubeApi.from_kubeconfig(sb.cluster_kubeconfig("cluster1")) as spoke,
    ):
        await spoke.create(r.JOB, python_job("quick", "print('hello')"))

        async def complete() -> bool:
            job = await spoke.get(r.JOB, "quick", namespace="default")
            return (job.get("status") or {}).get("succeeded") == 1

        await wait_for(complete, timeout=20, message="Job completes")
        code = f"import os, time, pathlib; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(120)"
        await spoke.create(r.JOB, python_job("long", code))
        await wait_for(pid_file.exists, timeout=20, message="long Job started")
        pid = int(await wait_for(lambda: pid_file.read_text().strip(), timeout=5))
        assert _alive(pid)
    # The sandbox is stopped: its Job processes with it.
    await wait_for(lambda: not _alive(pid), timeout=10, message="Job process killed on stop")
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert [t.get_name() for t in leftover] == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="clusters must be at least 1"):
        Sandbox(workdir=Path("unused"), clusters=0)
