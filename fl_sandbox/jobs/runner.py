"""The sandbox's Job controller: each batch/v1 Job's first container runs as a local process.

It watches Jobs on one (emulated) cluster through ``fl_kube`` like any controller, and for
each Job creates Pod objects (owned by the Job, labelled ``job-name``/``controller-uid``),
runs the container (see ``podenv`` for how paths are mapped), records the outcome in the
Pod's status and the Job's ``/status``, honours ``activeDeadlineSeconds``, ``backoffLimit``
and ``ttlSecondsAfterFinished``, and kills the process when the Job is deleted. With a
``ForkServer``, an `fl-train` container is forked from it instead of started afresh
(``forkserver``: same environment, files, logs and exit status, without the import time).

Pods run one after another per Job (``parallelism`` 1; ``completions`` successes are
collected sequentially); ``restartPolicy: OnFailure`` is treated like ``Never`` (each retry
is a new Pod), which is what the Job's counters show in both cases. Only the first container
runs: init containers, sidecars, images, ``resources`` and ``securityContext`` have no local
meaning and are ignored. A missing ConfigMap or Secret keeps the Pod Pending with
``CreateContainerConfigError`` until it appears or the Job's deadline passes, as on a node.
Files: ``<root>/pods/<ns>/<pod>/`` (volumes, termination message; removed with the Job),
``<root>/logs/<ns>/<pod>.log`` (stdout and stderr; kept), ``<root>/pvcs/<ns>/<claim>/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from fl_kube.backoff import BackoffPolicy, RateLimiter, retry
from fl_kube.client import KubeApi
from fl_kube.controller import Controller, Result
from fl_kube.errors import ApiError, Conflict, NotFound
from fl_kube.informer import Informer, WatchSettings
from fl_kube.metrics import ControllerMetrics
from fl_kube.resources import CONFIGMAP, JOB, POD, SECRET
from fl_kube.timestamps import format_time, parse_time
from fl_sandbox.jobs import status as st
from fl_sandbox.jobs.forkserver import ForkServer
from fl_sandbox.jobs.podenv import (
    ContainerConfigError,
    LaunchPlan,
    PodDirs,
    UnsupportedPodSpec,
    build_launch_plan,
)
from fl_sandbox.jobs.process import Outcome, now_utc, run_container

log = logging.getLogger(__name__)

JobKey = tuple[str, str]  # (namespace, name)
LOG_FILE_ANNOTATION = "sandbox.federated-learning.io/log-file"
DEFAULT_BACKOFF_LIMIT = 6
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as Kubernetes' generated names
_STATUS_RETRY = BackoffPolicy(base=0.1, cap=2.0)


@dataclass
class _Run:
    uid: str
    task: asyncio.Task[None]


class JobRunner:
    """Runs the Jobs of one API server as local processes, until cancelled."""

    def __init__(
        self,
        api: KubeApi,
        *,
        root: Path,
        max_parallel: int = 2,
        namespace: str | None = None,
        kill_grace: float = 2.0,
        pod_retry_delay: float = 0.0,
        config_retry_interval: float = 0.5,
        node_name: str = "sandbox",
        watch_settings: WatchSettings | None = None,
        registry: CollectorRegistry | None = None,
        base_env: dict[str, str] | None = None,
        pod_credentials: Callable[[str, str], Path] | None = None,
        fork_server: ForkServer | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be >= 1")
        self._api = api
        self.root = Path(root)
        self._namespace = namespace
        self._kill_grace = kill_grace
        self._pod_retry_delay = pod_retry_delay
        self._config_retry_interval = config_retry_interval
        self._node_name = node_name
        self._base_env = base_env
        # (namespace, serviceAccountName) -> a kubeconfig of that ServiceAccount: the
        # sandbox's in-cluster configuration, given to the process as KUBECONFIG.
        self._pod_credentials = pod_credentials
        # Started by the owner (shared by the runners of a sandbox); `fl-train` forks from it.
        self._fork_server = fork_server
        # Processes running at once; runners given the same ``slots`` share one machine.
        self._slots = slots if slots is not None else asyncio.Semaphore(max_parallel)
        self._runs: dict[JobKey, _Run] = {}
        # Jobs this runner finished, until the informer shows their final status: key -> (uid, when)
        self._finished: dict[JobKey, tuple[str, dt.datetime]] = {}
        self._pods: dict[JobKey, list[str]] = {}  # pods created per Job (their folders)
        # A run that failed (API down) is retried with per-Job backoff, not in a hot loop.
        self._failures: RateLimiter[JobKey] = RateLimiter(BackoffPolicy(base=0.5, cap=30.0))
        self._retry_at: dict[JobKey, float] = {}
        self._informer = Informer(api, JOB, namespace=namespace, settings=watch_settings)
        self.registry = registry if registry is not None else CollectorRegistry()
        self._controller: Controller[JobKey] = Controller(
            "sandbox-job-runner",
            self._reconcile,
            workers=4,
            metrics=ControllerMetrics(self.registry),
        )
        self._informer.subscribe(self._on_event)
        self.processes_started = 0

    # -- public ------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch Jobs and run them until cancelled; cancellation kills every child process."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._informer.run(), name="job-runner-informer")
                group.create_task(self._controller.run(), name="job-runner-controller")
        finally:
            runs = list(self._runs.values())
            for job_run in runs:
                job_run.task.cancel()
            for job_run in runs:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job_run.task

    def running(self) -> list[JobKey]:
        """Jobs with a run in progress (for tests and diagnostics)."""
        return [key for key, job_run in self._runs.items() if not job_run.task.done()]

    def log_file(self, namespace: str, pod: str) -> Path:
        return PodDirs(self.root, namespace, pod).log_file

    # -- reconcile ---------------------------------------------------------------------

    def _on_event(self, event_type: str, job: dict[str, Any]) -> None:
        metadata = job.get("metadata") or {}
        self._controller.enqueue((str(metadata.get("namespace")), str(metadata.get("name"))))

    async def _reconcile(self, key: JobKey) -> Result | None:
        namespace, name = key
        job = self._informer.get(name, namespace)
        job_run = self._runs.get(key)
        if job is None or (job.get("metadata") or {}).get("deletionTimestamp"):
            if job_run is not None:
                log.info("job %s/%s deleted: stopping its process", namespace, name)
                await self._stop(key, job_run)
            if job is None:
                await self._forget(key)
            return None
        uid = str(job["metadata"].get("uid") or "")
        if job_run is not None and job_run.uid != uid:
            await self._stop(key, job_run)  # replaced by a new Job with the same name
            await self._forget(key)
            job_run = None
        if job_run is not None:
            return None
        finished = st.job_finished(job)
        if finished is None and key in self._finished and self._finished[key][0] == uid:
            finished = ("", self._finished[key][1])  # our final status is not in the cache yet
        if finished is not None:
            return await self._expire(job, finished[1])
        if (job.get("spec") or {}).get("suspend"):
            return None
        wait = self._retry_at.get(key, 0.0) - asyncio.get_running_loop().time()
        if wait > 0:
            return Result(requeue_after=wait)
        task = asyncio.create_task(self._run_job(key, uid), name=f"job-{namespace}-{name}")
        self._runs[key] = _Run(uid=uid, task=task)
        return None

    async def _expire(self, job: dict[str, Any], finished_at: dt.datetime | None) -> Result | None:
        """Delete a finished Job once its ``ttlSecondsAfterFinished`` has passed."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        finished_at = finished_at or now_utc()
        remaining = (finished_at + dt.timedelta(seconds=int(ttl)) - now_utc()).total_seconds()
        if remaining > 0:
            return Result(requeue_after=remaining)
        metadata = job["metadata"]
        log.info(
            "job %s/%s: TTL after finished passed; deleting",
            metadata["namespace"],
            metadata["name"],
        )
        with contextlib.suppress(Conflict):
            await self._api.delete(
                JOB,
                metadata["name"],
                namespace=metadata["namespace"],
                propagation="Background",
                uid=metadata.get("uid"),
            )
        return None

    async def _stop(self, key: JobKey, job_run: _Run) -> None:
        job_run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await job_run.task
        if self._runs.get(key) is job_run:
            del self._runs[key]

    async def _forget(self, key: JobKey) -> None:
        """The Job is gone: drop its bookkeeping and its pods' folders (logs stay)."""
        self._finished.pop(key, None)
        self._retry_at.pop(key, None)
        self._failures.forget(key)
        for pod in self._pods.pop(key, []):
            pod_dir = PodDirs(self.root, key[0], pod).pod_dir
            await asyncio.to_thread(shutil.rmtree, pod_dir, True)

    # -- one Job -----------------------------------------------------------------------

    async def _run_job(self, key: JobKey, uid: str) -> None:
        namespace, name = key
        try:
            await self._drive(key, uid)
            self._failures.forget(key)
            self._retry_at.pop(key, None)
        except NotFound:
            log.info("job %s/%s disappeared while running", namespace, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = self._failures.when(key)
            self._retry_at[key] = asyncio.get_running_loop().time() + delay
            log.warning(
                "job %s/%s: run failed (%s); retrying in %.1fs", namespace, name, exc, delay
            )
        finally:
            job_run = self._runs.get(key)
            if job_run is not None and job_run.task is asyncio.current_task():
                del self._runs[key]
                self._controller.enqueue(key)

    async def _drive(self, key: JobKey, uid: str) -> None:
        namespace, name = key
        loop = asyncio.get_running_loop()
        job = await self._api.get(JOB, name, namespace=namespace)
        if str(job["metadata"].get("uid")) != uid:
            return
        spec = job.get("spec") or {}
        status = job.get("status") or {}
        now = now_utc()
        start_time = parse_time(status.get("startTime")) or now
        # Count from the Pods as well as the status: a status write lost before a restart
        # must not make a finished Pod run again.
        pods_succeeded, pods_failed = await self._settle_pods(job)
        succeeded = max(int(status.get("succeeded") or 0), pods_succeeded)
        failed = max(int(status.get("failed") or 0), pods_failed)
        deadline: float | None = None
        if spec.get("activeDeadlineSeconds") is not None:
            elapsed = (now - start_time).total_seconds()
            deadline = loop.time() + float(spec["activeDeadlineSeconds"]) - elapsed
        backoff_limit = int(_default(spec.get("backoffLimit"), DEFAULT_BACKOFF_LIMIT))
        completions = int(spec.get("completions") or 1)
        counts: dict[str, Any] = {
            "startTime": format_time(start_time),
            "succeeded": succeeded,
            "failed": failed,
        }

        def verdict() -> tuple[str, str] | None:
            if counts["succeeded"] >= completions:
                return "Complete", "CompletionsReached"
            if counts["failed"] > backoff_limit:
                return "Failed", "BackoffLimitExceeded"
            if deadline is not None and loop.time() >= deadline:
                return "Failed", "DeadlineExceeded"
            return None

        while (decided := verdict()) is None:
            outcome = await self._run_pod(job, deadline=deadline, counts=counts)
            counts["succeeded" if outcome.succeeded else "failed"] += 1
            if outcome.reason == "DeadlineExceeded":
                decided = ("Failed", "DeadlineExceeded")
                break
            if verdict() is None:  # another Pod follows: show the counts meanwhile
                await self._patch_job(key, {"active": 0, "ready": 0, **counts})
                if not outcome.succeeded and self._pod_retry_delay > 0:
                    await asyncio.sleep(self._pod_retry_delay)
        await self._finish(key, uid, counts, *decided)

    async def _run_pod(
        self, job: dict[str, Any], *, deadline: float | None, counts: dict[str, Any]
    ) -> Outcome:
        metadata = job["metadata"]
        namespace, name = str(metadata["namespace"]), str(metadata["name"])
        key = (namespace, name)
        pod = await self._create_pod(job)
        pod_name = str(pod["metadata"]["name"])
        self._pods.setdefault(key, []).append(pod_name)
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        dirs = PodDirs(self.root, namespace, pod_name)
        await self._patch_pod(namespace, pod_name, st.pending_status(container, when=now_utc()))
        await self._patch_job(key, {"active": 1, "ready": 0, **counts})
        loop = asyncio.get_running_loop()

        plan: LaunchPlan | None = None
        last_problem = ""
        while plan is None:
            try:
                plan = await build_launch_plan(
                    pod, dirs=dirs, read_object=self._read_object, base_env=self._base_env
                )
                pod_spec = pod.get("spec") or {}
                mounted = pod_spec.get("automountServiceAccountToken", True) is not False
                if self._pod_credentials is not None and mounted:
                    account = str(pod_spec.get("serviceAccountName") or "default")
                    path = await asyncio.to_thread(self._pod_credentials, namespace, account)
                    plan.env.setdefault("KUBECONFIG", str(path))
            except UnsupportedPodSpec as exc:
                outcome = Outcome(128, "StartError", str(exc), now_utc(), now_utc())
                await self._patch_pod(namespace, pod_name, st.terminated_status(container, outcome))
                return outcome
            except ContainerConfigError as exc:
                if str(exc) != last_problem:
                    last_problem = str(exc)
                    log.info("pod %s/%s waits: %s", namespace, pod_name, exc)
                    await self._patch_pod(
                        namespace,
                        pod_name,
                        st.pending_status(
                            container,
                            when=now_utc(),
                            reason="CreateContainerConfigError",
                            message=str(exc),
                        ),
                    )
                if deadline is not None and loop.time() >= deadline:
                    return await self._deadline_before_start(namespace, pod_name, container)
                await asyncio.sleep(self._config_retry_interval)

        grace = min(
            float(_default((pod.get("spec") or {}).get("terminationGracePeriodSeconds"), 30)),
            self._kill_grace,
        )

        async def started(when: dt.datetime) -> None:
            self.processes_started += 1
            await self._patch_pod(namespace, pod_name, st.running_status(container, started=when))
            try:
                await self._patch_job(key, {"active": 1, "ready": 1, **counts})
            except ApiError as exc:  # only the ready count is lost; the run goes on
                log.warning("job %s/%s: status update failed: %s", namespace, name, exc)

        try:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            async with asyncio.timeout(remaining):
                await self._slots.acquire()
        except TimeoutError:
            return await self._deadline_before_start(namespace, pod_name, container)
        try:
            outcome = await run_container(
                plan,
                log_file=dirs.log_file,
                deadline=deadline,
                grace=grace,
                on_started=started,
                fork_server=self._fork_server,
            )
        finally:
            self._slots.release()
        log.info(
            "pod %s/%s finished: exit %d (%s)",
            namespace,
            pod_name,
            outcome.exit_code,
            outcome.reason,
        )
        await self._patch_pod(namespace, pod_name, st.terminated_status(container, outcome))
        return outcome

    async def _deadline_before_start(
        self, namespace: str, pod_name: str, container: dict[str, Any]
    ) -> Outcome:
        when = now_utc()
        outcome = Outcome(137, "DeadlineExceeded", "", when, when)
        await self._patch_pod(namespace, pod_name, st.terminated_status(container, outcome))
        return outcome

    async def _create_pod(self, job: dict[str, Any]) -> dict[str, Any]:
        metadata = job["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        template = (job.get("spec") or {}).get("template") or {}
        template_meta = template.get("metadata") or {}
        labels = dict(template_meta.get("labels") or {})
        labels.update(
            {
                "job-name": name,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "batch.kubernetes.io/controller-uid": uid,
            }
        )
        pod_spec = dict(template.get("spec") or {})
        pod_spec["nodeName"] = self._node_name
        while True:
            suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
            pod_name = f"{name[:57]}-{suffix}"
            annotations = dict(template_meta.get("annotations") or {})
            annotations[LOG_FILE_ANNOTATION] = str(PodDirs(self.root, namespace, pod_name).log_file)
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": pod_spec,
            }
            try:
                return await self._api.create(POD, body, namespace=namespace)
            except Conflict as exc:
                if not exc.already_exists:
                    raise

    async def _settle_pods(self, job: dict[str, Any]) -> tuple[int, int]:
        """(succeeded, failed) Pods of the Job, after marking as failed the Pods an earlier
        run left unfinished: no process runs for them any more."""
        metadata = job["metadata"]
        pods = await self._api.list(
            POD, namespace=metadata["namespace"], label_selector=f"controller-uid={metadata['uid']}"
        )
        succeeded = failed = 0
        for pod in pods.items:
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Succeeded":
                succeeded += 1
                continue
            failed += 1
            if phase == "Failed":
                continue
            container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
            when = now_utc()
            outcome = Outcome(
                137, "ContainerStatusUnknown", "the sandbox runner restarted", when, when
            )
            await self._patch_pod(
                metadata["namespace"],
                pod["metadata"]["name"],
                st.terminated_status(container, outcome),
            )
        return succeeded, failed

    async def _finish(
        self, key: JobKey, uid: str, counts: dict[str, Any], kind: str, reason: str
    ) -> None:
        when = now_utc()
        body: dict[str, Any] = {"active": 0, "ready": 0, **counts}
        if kind == "Complete":
            body["completionTime"] = format_time(when)
            body["conditions"] = st.completed_conditions(when)
        else:
            body["conditions"] = st.failed_conditions(reason, when)
        await self._patch_job(key, body)
        self._finished[key] = (uid, when)
        log.info("job %s/%s %s (%s)", key[0], key[1], kind, reason)

    # -- API helpers -------------------------------------------------------------------

    async def _patch_job(self, key: JobKey, status: dict[str, Any]) -> None:
        """Job status through /status, retrying temporary API failures (it must land)."""

        async def patch() -> None:
            await self._api.patch(
                JOB, key[1], {"status": status}, namespace=key[0], subresource="status"
            )

        await retry(patch, attempts=6, policy=_STATUS_RETRY, what=f"job {key[1]} status")

    async def _patch_pod(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Pod status, retrying temporary failures; a Pod that is gone is not an error."""

        async def patch() -> None:
            await self._api.patch(
                POD, name, {"status": status}, namespace=namespace, subresource="status"
            )

        try:
            await retry(patch, attempts=6, policy=_STATUS_RETRY, what=f"pod {name} status")
        except NotFound:
            log.info("pod %s/%s is gone; status not recorded", namespace, name)
        except ApiError as exc:
            log.warning("pod %s/%s: status update failed: %s", namespace, name, exc)

    async def _read_object(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        res = CONFIGMAP if kind == "ConfigMap" else SECRET
        return await self._api.get_or_none(res, name, namespace=namespace)


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value
