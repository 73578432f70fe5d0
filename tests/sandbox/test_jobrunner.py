"""The sandbox Job runner against an emulated API server: Jobs become local processes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.waiting import wait_for
from fl_sandbox.apiserver import ApiServer
from fl_sandbox.jobrunner import JobRunner

NS = "default"


@dataclass
class Env:
    api: KubeApi
    server: ApiServer
    runner: JobRunner
    root: Path
    tmp: Path


@contextlib.asynccontextmanager
async def running_env(tmp_path: Path, **options: Any) -> AsyncIterator[Env]:
    """An API server and a JobRunner on it (`options` go to JobRunner), stopped on exit."""
    server = ApiServer(name="spoke")
    await server.start()
    api = await KubeApi.from_kubeconfig(server.write_kubeconfig(tmp_path / "kubeconfig"))
    root = tmp_path / "runner"
    runner = JobRunner(api, root=root, **options)
    task = asyncio.create_task(runner.run())
    try:
        yield Env(api=api, server=server, runner=runner, root=root, tmp=tmp_path)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await api.close()
        await server.stop()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with running_env(tmp_path, max_parallel=2, kill_grace=1.0) as started:
        yield started


def job(
    name: str,
    code: str,
    *,
    env: list[dict[str, Any]] | None = None,
    spec: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Job whose container runs ``python -c code`` (``python`` found through PATH)."""
    main: dict[str, Any] = {
        "name": "main",
        "image": "trainer:dev",
        "command": ["python", "-c", code],
        "env": [{"name": "OUT", "value": "/dev/termination-log"}, *(env or [])],
    }
    main.update(container or {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "backoffLimit": 0,
            **(spec or {}),
            "template": {
                "metadata": {"labels": {"app": "fl"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [main],
                    "volumes": volumes or [],
                },
            },
        },
    }


async def finished(api: KubeApi, name: str, *, within: float = 15) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        current = await api.get(r.JOB, name, namespace=NS)
        for condition in (current.get("status") or {}).get("conditions") or []:
            if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
                return current
        return None

    return await wait_for(done, timeout=within, message=f"job {name} did not finish")


def conditions(job_obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in job_obj["status"].get("conditions") or []}


async def pods_of(api: KubeApi, job_obj: dict[str, Any]) -> list[dict[str, Any]]:
    uid = job_obj["metadata"]["uid"]
    listed = await api.list(r.POD, namespace=NS, label_selector=f"controller-uid={uid}")
    return sorted(listed.items, key=lambda p: p["metadata"]["creationTimestamp"])


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]  # type: ignore[no-any-return]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of the runner still answers kill(0); read its state when we can.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


async def test_success_records_the_termination_message(env: Env) -> None:
    code = (
        "import os, sys; print('training on', os.environ['HOSTNAME']); "
        "open(os.environ['OUT'], 'w').write(json.dumps({'prefix': sys.prefix}))"
    )
    created = await env.api.create(r.JOB, job("ok", "import json; " + code), namespace=NS)
    done = await finished(env.api, "ok")
    status = done["status"]
    assert status["succeeded"] == 1
    assert status.get("failed", 0) == 0
    assert status["active"] == 0
    assert status["startTime"]
    assert status["completionTime"]
    assert conditions(done)["Complete"]["status"] == "True"
    assert conditions(done)["SuccessCriteriaMet"]["status"] == "True"
    assert "Failed" not in conditions(done)

    [pod] = await pods_of(env.api, done)
    assert pod["status"]["phase"] == "Succeeded"
    state = terminated(pod)
    assert state["exitCode"] == 0
    assert state["reason"] == "Completed"
    assert state["startedAt"]
    assert state["finishedAt"]
    # The container found `python` through PATH: the sandbox's interpreter.
    assert json.loads(state["message"]) == {"prefix": sys.prefix}
    labels = pod["metadata"]["labels"]
    assert labels["job-name"] == "ok"
    assert labels["controller-uid"] == created["metadata"]["uid"]
    assert labels["app"] == "fl"
    [owner] = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Job", "ok", created["metadata"]["uid"])
    log_file = env.runner.log_file(NS, pod["metadata"]["name"])
    assert f"training on {pod['metadata']['name']}" in log_file.read_text()


async def test_failure_retries_until_the_backoff_limit(env: Env) -> None:
    code = "import sys; print('bad input at row 7', file=sys.stderr); sys.exit(3)"
    body = job(
        "bad",
        code,
        spec={"backoffLimit": 2},
        container={"terminationMessagePolicy": "FallbackToLogsOnError"},
    )
    await env.api.create(r.JOB, body, namespace=NS)
    done = await finished(env.api, "bad")
    assert done["status"]["failed"] == 3  # the first try and two retries
    assert done["status"].get("succeeded", 0) == 0
    assert "completionTime" not in done["status"]
    failed = conditions(done)["Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "BackoffLimitExceeded")
    assert conditions(done)["FailureTarget"]["reason"] == "BackoffLimitExceeded"
    pods = await pods_of(env.api, done)
    assert len(pods) == 3
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        state = terminated(pod)
        assert (state["exitCode"], state["reason"]) == (3, "Error")
        assert "bad input at row 7" in state["message"]  # the log tail, as kubelet falls back


async def test_active_deadline_kills_the_process_group(env: Env) -> None:
    pids = env.tmp / "pids"
    code = (
        "import os, subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}'); "
        "time.sleep(60)"
    )
    body = job("slow", code, spec={"activeDeadlineSeconds": 1, "backoffLimit": 3})
    await env.api.create(r.JOB, body, namespace=NS)
    done = await finished(env.api, "slow")
    failed = conditions(done)["Failed"]
    assert failed["reason"] == "DeadlineExceeded"
    assert done["status"]["failed"] == 1  # no retry after the deadline
    [pod] = await pods_of(env.api, done)
    assert terminated(pod)["reason"] == "DeadlineExceeded"
    assert pod["status"]["phase"] == "Failed"
    parent, child = (int(p) for p in pids.read_text().split())
    await wait_for(lambda: not alive(parent) and not alive(child), timeout=5)


async def test_volumes_env_sources_and_path_rewriting(env: Env) -> None:
    await env.api.create(
        r.CONFIGMAP,
        {"metadata": {"name": "cfg"}, "data": {"settings.json": '{"lr": 0.1}', "mode": "fast"}},
        namespace=NS,
    )
    await env.api.create(
        r.SECRET,
        {
            "metadata": {"name": "creds"},
            "data": {"AWS_KEY": base64.b64encode(b"s3cret").decode()},
        },
        namespace=NS,
    )
    data_dir = env.tmp / "host-data"
    data_dir.mkdir()
    (data_dir / "train.txt").write_text("42 samples")
    code = (
        "import json, os, sys; "
        "out = {"
        "'settings': open(os.environ['CONFIG']).read(), "
        "'arg': open(sys.argv[1].split('=', 1)[1]).read(), "
        "'item': open('/etc/app-items/nested/s.json'.replace('/etc/app-items', os.environ['ITEMS'])).read(), "
        "'data': open(os.path.join(os.environ['DATA'], 'train.txt')).read(), "
        "'mode': os.environ['MODE'], 'pod': os.environ['POD'], 'ns': os.environ['NAMESPACE'], "
        "'key': os.environ['CRED_AWS_KEY'], 'cfg_mode': os.environ['CFG_mode'], "
        "'cwd': os.getcwd(), 'work': os.environ['WORK'], 'expanded': os.environ['EXPANDED']}; "
        "open(os.path.join(os.environ['WORK'], 'scratch'), 'w').write('x'); "
        "open(os.environ['OUT'], 'w').write(json.dumps(out))"
    )
    body = job(
        "cfg",
        code,
        env=[
            {"name": "CONFIG", "value": "/etc/app/settings.json"},
            {"name": "ITEMS", "value": "/etc/app-items"},
            {"name": "DATA", "value": "/data"},
            {"name": "WORK", "value": "/tmp/fl"},
            {"name": "EXPANDED", "value": "$(WORK)/sub"},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        container={
            "args": ["--config=/etc/app/settings.json"],
            "workingDir": "/tmp/fl",
            "envFrom": [
                {"secretRef": {"name": "creds"}, "prefix": "CRED_"},
                {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            ],
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/app", "readOnly": True},
                {"name": "config-items", "mountPath": "/etc/app-items"},
                {"name": "dataset", "mountPath": "/data", "readOnly": True},
                {"name": "work", "mountPath": "/tmp/fl"},
            ],
        },
        volumes=[
            {"name": "config", "configMap": {"name": "cfg"}},
            {
                "name": "config-items",
                "configMap": {
                    "name": "cfg",
                    "items": [{"key": "settings.json", "path": "nested/s.json"}],
                },
            },
            {"name": "dataset", "hostPath": {"path": str(data_dir)}},
            {"name": "work", "emptyDir": {}},
        ],
    )
    await env.api.create(r.JOB, body, namespace=NS)
    done = await finished(env.api, "cfg")
    [pod] = await pods_of(env.api, done)
    state = terminated(pod)
    assert state["reason"] == "Completed", state
    out = json.loads(state["message"])
    pod_name = pod["metadata"]["name"]
    pod_dir = env.root / "pods" / NS / pod_name
    assert out["settings"] == '{"lr": 0.1}'
    assert out["arg"] == '{"lr": 0.1}'
    assert out["item"] == '{"lr": 0.1}'
    assert out["data"] == "42 samples"  # hostPath is the host folder itself
    assert (out["mode"], out["pod"], out["ns"]) == ("fast", pod_name, NS)
    assert (out["key"], out["cfg_mode"]) == ("s3cret", "fast")
    assert out["work"] == str(pod_dir / "volumes" / "work")
    assert out["cwd"] == out["work"]
    assert out["expanded"] == out["work"] + "/sub"
    assert (pod_dir / "volumes" / "work" / "scratch").read_text() == "x"


async def test_missing_configmap_waits_like_kubelet_then_runs(env: Env) -> None:
    body = job(
        "waits",
        "import os; open(os.environ['OUT'], 'w').write(open('/etc/late/k'.replace('/etc/late', os.environ['LATE'])).read())",
        env=[{"name": "LATE", "value": "/etc/late"}],
        container={"volumeMounts": [{"name": "late", "mountPath": "/etc/late"}]},
        volumes=[{"name": "late", "configMap": {"name": "late"}}],
    )
    created = await env.api.create(r.JOB, body, namespace=NS)

    async def waiting_pod() -> dict[str, Any] | None:
        for pod in await pods_of(env.api, created):
            state = pod.get("status", {}).get("containerStatuses", [{}])[0].get("state", {})
            if state.get("waiting", {}).get("reason") == "CreateContainerConfigError":
                return pod
        return None

    pod = await wait_for(waiting_pod, timeout=10)
    assert pod["status"]["phase"] == "Pending"
    assert "late" in pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    await env.api.create(
        r.CONFIGMAP, {"metadata": {"name": "late"}, "data": {"k": "v"}}, namespace=NS
    )
    done = await finished(env.api, "waits")
    [pod] = await pods_of(env.api, done)
    assert terminated(pod)["message"] == "v"


async def test_ttl_after_finished_deletes_the_job(env: Env) -> None:
    await env.api.create(
        r.JOB, job("short-lived", "pass", spec={"ttlSecondsAfterFinished": 0}), namespace=NS
    )
    await wait_for(
        lambda: env.api.get_or_none(r.JOB, "short-lived", namespace=NS),
        timeout=10,
    )

    async def gone() -> bool:
        return await env.api.get_or_none(r.JOB, "short-lived", namespace=NS) is None

    await wait_for(gone, timeout=15, message="job not deleted after its TTL")
    deletes = [
        rec
        for rec in env.server.request_log
        if rec.method == "DELETE" and rec.path.endswith("/jobs/short-lived")
    ]
    assert deletes, "the runner deleted the Job"


async def test_deleting_a_running_job_kills_its_process(env: Env) -> None:
    pid_file = env.tmp / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    created = await env.api.create(r.JOB, job("doomed", code), namespace=NS)

    async def running_pod() -> bool:
        pods = await pods_of(env.api, created)
        return bool(pods) and pods[0]["status"].get("phase") == "Running" and pid_file.exists()

    await wait_for(running_pod, timeout=10)
    job_status = (await env.api.get(r.JOB, "doomed", namespace=NS))["status"]
    assert job_status["active"] == 1
    pid = int(pid_file.read_text())
    assert alive(pid)
    await env.api.delete(r.JOB, "doomed", namespace=NS)
    await wait_for(lambda: not alive(pid), timeout=5, message="process survived its Job")
    await wait_for(lambda: not env.runner.running(), timeout=5)


async def test_parallel_runs_are_limited(tmp_path: Path) -> None:
    async with running_env(tmp_path, max_parallel=1) as started:
        api, runner = started.api, started.runner
        marks = tmp_path / "marks"
        marks.mkdir()
        code = (
            "import os, time; "
            f"d = {str(marks)!r}; n = os.environ['HOSTNAME']; "
            "open(os.path.join(d, n + '.start'), 'w').write(repr(time.time())); "
            "time.sleep(0.3); "
            "open(os.path.join(d, n + '.end'), 'w').write(repr(time.time()))"
        )
        for name in ("one", "two", "three"):
            await api.create(r.JOB, job(name, code), namespace=NS)
        for name in ("one", "two", "three"):
            assert conditions(await finished(api, name))["Complete"]["status"] == "True"
        spans = sorted(
            (float((marks / f"{p.stem}.start").read_text()), float(p.read_text()))
            for p in marks.glob("*.end")
        )
        assert len(spans) == 3
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end  # never two processes at once
        assert runner.processes_started == 3


async def test_a_container_without_command_fails_clearly(env: Env) -> None:
    body = job("nocmd", "pass", container={"command": []})
    await env.api.create(r.JOB, body, namespace=NS)
    done = await finished(env.api, "nocmd")
    assert conditions(done)["Failed"]["reason"] == "BackoffLimitExceeded"
    [pod] = await pods_of(env.api, done)
    state = terminated(pod)
    assert state["reason"] == "StartError"
    assert "command" in state["message"]


async def test_runner_survives_api_failures(env: Env) -> None:
    # Status writes fail for a while; they are retried and nothing is lost.
    env.server.faults.fail(1.0, status=503, methods=["PATCH"], count=3, retry_after=0)
    code = "import os; open(os.environ['OUT'], 'w').write('result')"
    await env.api.create(r.JOB, job("flaky", code), namespace=NS)
    done = await finished(env.api, "flaky")
    assert conditions(done)["Complete"]["status"] == "True"
    assert done["status"]["succeeded"] == 1
    assert env.server.faults.injected == 3
    [pod] = await pods_of(env.api, done)
    assert terminated(pod)["message"] == "result"


async def test_stopping_the_runner_kills_children_and_a_new_runner_resumes(
    tmp_path: Path,
) -> None:
    server = ApiServer(name="spoke")
    await server.start()
    api = await KubeApi.from_kubeconfig(server.write_kubeconfig(tmp_path / "kubeconfig"))
    pid_file = tmp_path / "pid"
    code = (
        "import os, sys, time; first = not os.path.exists(sys.argv[1]); "
        "open(sys.argv[1], 'a').write(str(os.getpid()) + ' '); "
        "time.sleep(60 if first else 0)"
    )
    body = job("resumable", code, spec={"backoffLimit": 2}, container={"args": [str(pid_file)]})
    try:
        first = JobRunner(api, root=tmp_path / "runner", kill_grace=1.0)
        task = asyncio.create_task(first.run())
        created = await api.create(r.JOB, body, namespace=NS)
        await wait_for(pid_file.exists, timeout=10)
        pid = int(pid_file.read_text().split()[0])
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not alive(pid)  # killed before run() returned

        second = JobRunner(api, root=tmp_path / "runner", kill_grace=1.0)
        task = asyncio.create_task(second.run())
        done = await finished(api, "resumable")
        assert conditions(done)["Complete"]["status"] == "True"
        assert done["status"]["failed"] == 1  # the pod orphaned by the first runner
        assert done["status"]["succeeded"] == 1
        pods = await pods_of(api, created)
        reasons = sorted(terminated(p)["reason"] for p in pods)
        assert reasons == ["Completed", "ContainerStatusUnknown"]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await api.close()
        await server.stop()
