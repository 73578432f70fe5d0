"""`fl-train` containers forked from the sandbox's fork server: a Job cannot tell them from
a fresh process (environment, working folder, logs, exit status, termination message,
deadline and deletion kills), and nothing a child does harms the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.waiting import wait_for
from fl_sandbox.apiserver import ApiServer
from fl_sandbox.jobs import JobRunner
from fl_sandbox.jobs.forkserver import PRELOAD, ForkServer, ForkServerError
from fl_sandbox.jobs.podenv import LaunchPlan
from fl_sandbox.jobs.process import run_container
from tests.sandbox.test_jobrunner import alive, conditions, terminated

FORKED, FRESH = "forked", "fresh"  # namespaces: one runner with the fork server, one without

# A trainer module whose import does what PROBE says, after printing what it sees.
PROBE = """
import json, os, signal, sys, time
print("probe", json.dumps({
    "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0), "cwd": os.getcwd(),
    "argv": sys.argv, "env": dict(os.environ), "path": sys.path,
}), flush=True)
print("probe on stderr", file=sys.stderr, flush=True)
action = os.environ.get("PROBE", "")
if action == "exit":
    os._exit(7)
if action == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
if action == "raise":
    raise RuntimeError("the probe failed on purpose")
if action == "hang":
    with open(os.environ["PID_FILE"], "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(120)

from fl_core.examples.digits import DigitsTrainer as Probe
"""


@dataclass
class Env:
    api: KubeApi
    server: ForkServer
    runners: dict[str, JobRunner]
    code: Path
    tmp: Path


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text(textwrap.dedent(PROBE))
    host_env = {**os.environ, "FL_TEST_HOST_ONLY": "the server's, not a Job's"}
    fork_server = ForkServer(env=host_env)
    await fork_server.start()
    api_server = ApiServer(name="spoke")
    await api_server.start()
    api = await KubeApi.from_kubeconfig(api_server.write_kubeconfig(tmp_path / "kubeconfig"))
    for namespace in (FORKED, FRESH):
        await api.create(r.NAMESPACE, {"metadata": {"name": namespace}})
    runners = {
        namespace: JobRunner(
            api,
            root=tmp_path / namespace,
            namespace=namespace,
            kill_grace=1.0,
            fork_server=fork_server if namespace == FORKED else None,
        )
        for namespace in (FORKED, FRESH)
    }
    tasks = [asyncio.create_task(runner.run()) for runner in runners.values()]
    try:
        yield Env(api=api, server=fork_server, runners=runners, code=code, tmp=tmp_path)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await fork_server.stop()
        await api.close()
        await api_server.stop()


def train_job(
    name: str, env: Env, *, probe: str = "", spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A Job running `fl-train --trainer probe:Probe` (the probe is on PYTHONPATH)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **(spec or {}),
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "train",
                            "image": "trainer:dev",
                            "command": ["fl-train"],
                            "args": ["--trainer", "probe:Probe"],
                            "workingDir": "/workspace",
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "env": [
                                {"name": "PYTHONPATH", "value": str(env.code)},
                                {"name": "FL_RESULT_PATH", "value": "/dev/termination-log"},
                                {"name": "PROBE", "value": probe},
                                {"name": "PID_FILE", "value": str(env.tmp / f"{name}.pid")},
                            ],
                        }
                    ],
                }
            },
        },
    }


async def finished(api: KubeApi, name: str, namespace: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        current = await api.get(r.JOB, name, namespace=namespace)
        for condition in (current.get("status") or {}).get("conditions") or []:
            if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
                return current
        return None

    found: dict[str, Any] = await wait_for(done, timeout=60, message=f"job {name} did not end")
    return found


def probe_record(log_file: Path) -> dict[str, Any]:
    for line in log_file.read_text().splitlines():
        if line.startswith("probe {"):
            return json.loads(line.removeprefix("probe "))  # type: ignore[no-any-return]
    raise AssertionError(f"no probe line in {log_file}: {log_file.read_text()!r}")


async def ended_pod(env: Env, name: str, namespace: str) -> tuple[dict[str, Any], Path]:
    """The Job's (only) pod once the Job ended, and its log file."""
    done = await finished(env.api, name, namespace)
    [pod] = await pods_of_ns(env.api, done, namespace)
    return pod, env.runners[namespace].log_file(namespace, pod["metadata"]["name"])


async def pods_of_ns(api: KubeApi, job_obj: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    uid = job_obj["metadata"]["uid"]
    listed = await api.list(r.POD, namespace=namespace, label_selector=f"controller-uid={uid}")
    return list(listed.items)


async def test_a_forked_container_sees_its_own_env_cwd_and_logs(env: Env) -> None:
    await env.api.create(r.JOB, train_job("plain", env), namespace=FORKED)
    pod, log_file = await ended_pod(env, "plain", FORKED)
    seen = probe_record(log_file)
    assert seen["ppid"] == env.server.pid  # forked, not a new interpreter
    assert seen["sid"] == seen["pid"]  # its own session: the runner kills its group
    pod_name = pod["metadata"]["name"]
    assert seen["cwd"] == str(
        env.runners[FORKED].root / "pods" / FORKED / pod_name / "rootfs/workspace"
    )
    assert Path(seen["argv"][0]).name == "fl-train"
    assert seen["argv"][1:] == ["--trainer", "probe:Probe"]
    # os.environ is the container's, not the server's; its PYTHONPATH is on sys.path.
    assert "FL_TEST_HOST_ONLY" not in seen["env"]
    assert seen["env"]["HOSTNAME"] == pod_name
    assert seen["env"]["PYTHONPATH"] == str(env.code)
    assert seen["env"]["FL_RESULT_PATH"].endswith(f"{pod_name}/termination-log")
    assert str(env.code) in seen["path"]
    assert seen["path"][0] == str(Path(sys.executable).parent)
    # stdout and stderr both go to the pod's log; the exit status and the termination
    # message are fl-train's own (exit 2: no round spec; the failure record).
    assert "probe on stderr" in log_file.read_text()
    state = terminated(pod)
    assert (state["exitCode"], state["reason"]) == (2, "Error")
    record = json.loads(state["message"])
    assert record["failure"] == "UsageError"
    assert "FL_ROUND_SPEC_PATH must be set" in record["message"]
    assert env.server.forked == 1
    assert not alive(seen["pid"])  # reaped by the server: no zombie left


@pytest.mark.parametrize("probe", ["", "exit", "segv", "raise", "hang"])
async def test_forked_and_fresh_containers_end_the_same_way(env: Env, probe: str) -> None:
    spec = {"activeDeadlineSeconds": 3} if probe == "hang" else {}
    for namespace in (FORKED, FRESH):
        await env.api.create(
            r.JOB, train_job("same", env, probe=probe, spec=spec), namespace=namespace
        )
    ended = {ns: await ended_pod(env, "same", ns) for ns in (FORKED, FRESH)}
    states = {ns: terminated(pod) for ns, (pod, _) in ended.items()}
    for key in ("exitCode", "reason"):
        assert states[FORKED][key] == states[FRESH][key], key
    messages = {
        ns: state.get("message", "").strip().splitlines()[-1:] for ns, state in states.items()
    }
    assert messages[FORKED] == messages[FRESH]
    assert probe_record(ended[FORKED][1])["ppid"] == env.server.pid
    assert probe_record(ended[FRESH][1])["ppid"] != env.server.pid
    expected = {
        "": (2, "Error"),
        "exit": (7, "Error"),
        "segv": (139, "Error"),
        "raise": (1, "Error"),
        "hang": (143, "DeadlineExceeded"),
    }[probe]
    assert (states[FORKED]["exitCode"], states[FORKED]["reason"]) == expected
    if probe == "raise":
        assert messages[FORKED] == ["RuntimeError: the probe failed on purpose"]
    if probe == "hang":
        done = await env.api.get(r.JOB, "same", namespace=FORKED)
        assert conditions(done)["Failed"]["reason"] == "DeadlineExceeded"
        pid = probe_record(ended[FORKED][1])["pid"]
        await wait_for(lambda: not alive(pid), timeout=5, message="the hung child survived")


async def test_deleting_the_job_kills_the_child_and_the_server_serves_on(env: Env) -> None:
    pid_file = env.tmp / "doomed.pid"
    created = await env.api.create(r.JOB, train_job("doomed", env, probe="hang"), namespace=FORKED)

    async def running() -> bool:
        pods = await pods_of_ns(env.api, created, FORKED)
        return bool(pods) and pods[0]["status"].get("phase") == "Running" and pid_file.exists()

    await wait_for(running, timeout=30)
    pid = int(pid_file.read_text())
    assert alive(pid)
    await env.api.delete(r.JOB, "doomed", namespace=FORKED)
    await wait_for(lambda: not alive(pid), timeout=5, message="the child survived its Job")
    # The server is unharmed by a child killed, crashed or exited: the next Job forks too.
    await env.api.create(r.JOB, train_job("after", env), namespace=FORKED)
    _, log_file = await ended_pod(env, "after", FORKED)
    assert probe_record(log_file)["ppid"] == env.server.pid


async def test_other_commands_start_a_fresh_process(env: Env) -> None:
    out = env.tmp / "ppid"
    body = train_job("python", env)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [
        "python",
        "-c",
        f"import os; open({str(out)!r}, 'w').write(str(os.getppid()))",
    ]
    container["args"] = []
    await env.api.create(r.JOB, body, namespace=FORKED)
    pod, _ = await ended_pod(env, "python", FORKED)
    assert terminated(pod)["exitCode"] == 0
    assert int(out.read_text()) != env.server.pid
    assert env.server.forked == 0


async def test_stopping_the_server_kills_its_children(tmp_path: Path) -> None:
    server = ForkServer()
    await server.start()
    pid_file = tmp_path / "pid"
    plan = _probe_plan(tmp_path, PROBE="hang", PID_FILE=str(pid_file))
    try:
        entry = server.entry_point(plan)
        assert entry is not None
        child = await server.spawn(plan, entry=entry, log_file=tmp_path / "log")
        await wait_for(pid_file.exists, timeout=30)
        assert int(pid_file.read_text()) == child.pid
    finally:
        await server.stop()
    await wait_for(lambda: not alive(child.pid), timeout=5, message="a child outlived the server")


def _probe_plan(tmp_path: Path, **env: str) -> LaunchPlan:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "probe.py").write_text(textwrap.dedent(PROBE))
    bin_dir = str(Path(sys.executable).parent)
    return LaunchPlan(
        argv=["fl-train", "--trainer", "probe:Probe"],
        env={"PATH": bin_dir, "PYTHONPATH": str(code), **env},
        cwd=tmp_path,
        termination_file=tmp_path / "termination-log",
        termination_policy="File",
    )


async def test_what_an_import_prints_does_not_garble_the_replies(tmp_path: Path) -> None:
    (tmp_path / "chatty.py").write_text("print('hello from an import')\n")
    server = ForkServer(
        preload=[*PRELOAD, "chatty"], env={**os.environ, "PYTHONPATH": str(tmp_path)}
    )
    await server.start()
    try:
        assert await server.wait_ready() == server.pid
        plan = _probe_plan(tmp_path)
        outcome = await run_container(
            plan, log_file=tmp_path / "log", deadline=None, grace=1.0, fork_server=server
        )
        assert outcome.exit_code == 2
        assert probe_record(tmp_path / "log")["ppid"] == server.pid
    finally:
        await server.stop()


async def test_a_server_that_cannot_start_leaves_containers_to_new_processes(
    tmp_path: Path,
) -> None:
    server = ForkServer(preload=["fl_no_such_module"])
    await server.start()
    try:
        with pytest.raises(ForkServerError, match="fl_no_such_module"):
            await server.wait_ready()
        plan = _probe_plan(tmp_path)
        assert server.entry_point(plan) is None
        outcome = await run_container(
            plan, log_file=tmp_path / "log", deadline=None, grace=1.0, fork_server=server
        )
        assert outcome.exit_code == 2  # fl-train's own exit: no round spec
        assert probe_record(tmp_path / "log")["ppid"] == os.getpid()
    finally:
        await server.stop()
