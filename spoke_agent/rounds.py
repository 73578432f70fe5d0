"""The round controller: one training Job per round spec, and its report on the hub.

Keyed by the round-spec ConfigMap's name. Level-based: every reconcile reads the spec, the
Job (found by its deterministic name) and the condition on the hub, and does only what is
missing. A restart therefore neither creates a second Job nor loses a report: the Job and the
condition are the state. The special key `SWEEP` clears round conditions of specs that are
gone (also the ones that vanished while the agent was down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from fl_contract import keys, naming
from fl_contract.models import Dataset, RoundReport, RoundSpec, SecAggReport
from fl_core.privacy import secagg
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.controller import Controller, Result, TemporaryError, TerminalError
from fl_kube.errors import Conflict
from fl_kube.informer import Informer, WatchSettings
from spoke_agent import conditions as cond
from spoke_agent.claims import ClaimPublisher
from spoke_agent.jobs import DeadlinePassed, build_training_job
from spoke_agent.metrics import AgentMetrics
from spoke_agent.reporting import StatusWriter
from spoke_agent.results import (
    MAX_MESSAGE_CHARS,
    JobOutcome,
    ResultError,
    job_outcome,
    parse_result,
    termination_message,
    training_failure,
    verify_update,
)
from spoke_agent.secure import SecAggRefused, SecureStages, secure_report
from spoke_agent.settings import AgentSettings

log = logging.getLogger(__name__)

SWEEP = "*"  # not a valid object name, so it never collides with a ConfigMap's
SPEC_SELECTOR = f"{keys.LABEL_COMPONENT}={keys.COMPONENT_ROUND_SPEC}"
JOB_SELECTOR = (
    f"{keys.LABEL_COMPONENT}={keys.COMPONENT_TRAINING},"
    f"{keys.LABEL_MANAGED_BY}={keys.AGENT_FIELD_MANAGER}"
)
JOB_NAME_LABEL = "job-name"  # set on a Job's pods by the Job controller
RESULT_GRACE_SECONDS = 10.0  # a finished Job's pod status may trail its Job status briefly
MAX_REPORT_MESSAGE = MAX_MESSAGE_CHARS


@dataclass(frozen=True)
class _Failure:
    reason: str  # CamelCase: the report's reason, and the failures metric's label
    message: str
    invalid: bool = False


class RoundController:
    """Watches round specs and training Jobs in the agent namespace; runs and reports rounds."""

    def __init__(
        self,
        spoke: KubeApi,
        *,
        settings: AgentSettings,
        status: StatusWriter,
        claims: ClaimPublisher,
        metrics: AgentMetrics,
        watch: WatchSettings | None = None,
    ) -> None:
        self._spoke = spoke
        self._settings = settings
        self._ns = settings.namespace
        self._status = status
        self._claims = claims
        self._metrics = metrics
        self._secure = SecureStages(spoke, namespace=self._ns, file_root=settings.file_store_root)
        self.specs = Informer(
            spoke, r.CONFIGMAP, namespace=self._ns, label_selector=SPEC_SELECTOR, settings=watch
        )
        self.jobs = Informer(
            spoke, r.JOB, namespace=self._ns, label_selector=JOB_SELECTOR, settings=watch
        )
        # The training pods (they carry their Job's labels): a finished Job's termination
        # message is read from this cache, not with a pod list per round.
        self.pods = Informer(
            spoke, r.POD, namespace=self._ns, label_selector=JOB_SELECTOR, settings=watch
        )
        self.controller: Controller[str] = Controller(
            "federated-learning-rounds",
            self.reconcile,
            workers=settings.workers,
            metrics=metrics.controller,
        )
        # Jobs this agent created that its watch has not delivered yet (read from here, so
        # a reconcile in between neither creates them again nor asks for them), with when.
        self._created: dict[str, tuple[float, dict[str, Any]]] = {}
        self.specs.subscribe(self._on_spec)
        self.jobs.subscribe(self._on_job)
        self.pods.subscribe(self._enqueue_owner)

    @property
    def ready(self) -> bool:
        """The watches listed and the catalogue read: a round can be judged correctly."""
        watches = (self.specs, self.jobs, self.pods)
        return all(w.has_synced for w in watches) and self._claims.loaded.is_set()

    async def run(self) -> None:
        """Until cancelled: the watches, the workers, and a periodic resync."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.specs.run(), name="round-spec-informer")
            group.create_task(self.jobs.run(), name="training-job-informer")
            group.create_task(self.pods.run(), name="training-pod-informer")
            group.create_task(self.controller.run(), name="round-controller")
            group.create_task(self._resync(), name="round-resync")

    async def _resync(self) -> None:
        for informer in (self.specs, self.jobs, self.pods):
            while True:
                try:
                    await informer.wait_synced(timeout=self._settings.sync_timeout_seconds)
                    break
                except TimeoutError as exc:
                    log.warning("%s; still trying", exc)
        while True:
            for obj in self.specs.list():
                self.controller.enqueue(_name(obj))
            for job in self.jobs.list():
                owner = _spec_of_job(job)
                if owner:
                    self.controller.enqueue(owner)
            self.controller.enqueue(SWEEP)
            await asyncio.sleep(self._settings.resync_seconds)

    def _on_spec(self, event: str, obj: dict[str, Any]) -> None:
        self.controller.enqueue(_name(obj))
        if event == "DELETED":
            self.controller.enqueue(SWEEP)

    def _on_job(self, _event: str, job: dict[str, Any]) -> None:
        self._created.pop(_name(job), None)  # the cache has it now (or it is gone)
        self._enqueue_owner(_event, job)

    def _enqueue_owner(self, _event: str, obj: dict[str, Any]) -> None:
        owner = _spec_of_job(obj)
        if owner:
            self.controller.enqueue(owner)

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        if not self.ready:
            raise TemporaryError("waiting for the watches to list", retry_after=0.5)
        if key == SWEEP:
            await self._sweep()
            return None
        cm = self.specs.get(key, self._ns)
        jobs = [j for j in self.jobs.list() if _spec_of_job(j) == key]
        if cm is None or (cm.get("metadata") or {}).get("deletionTimestamp"):
            # Its Jobs are the garbage collector's (the spec owns them); one still running
            # is stopped now rather than whenever the collector gets to it.
            for orphan in jobs:
                if job_outcome(orphan).phase == "Running":
                    await self._delete_job(_name(orphan), why=f"round spec {key} is gone")
            self.controller.enqueue(SWEEP)
            return None
        spec = await self._parse(cm)
        job_name = naming.training_job_name(
            spec.job.uid, spec.round, spec.attempt, secure=spec.secure_aggregation is not None
        )
        for stale in jobs:  # an earlier round's or attempt's: stopped, or its pod freed
            if _name(stale) != job_name:
                await self._delete_job(_name(stale), why=f"{key} moved on to {job_name}")
        type_ = naming.round_condition_type(spec.job.namespace, spec.job.name)
        reported = cond.report_of(cond.find(await self._status.conditions(), type_))
        if spec.secure_aggregation is not None:
            same = reported is not None and _same_round(reported, spec)
            return await self._secure_round(spec, cm, job_name, reported if same else None)
        if reported is not None and _same_round(reported, spec) and reported.state != "Training":
            return None  # final report on the hub: nothing left to do for this round
        return await self._train(spec, cm, job_name)

    async def _train(
        self, spec: RoundSpec, cm: dict[str, Any], job_name: str, secure: SecAggReport | None = None
    ) -> Result | None:
        """Start the round's Job, follow it, and report its update (or why there is none)."""
        # The watch has listed (reconcile waits for it), so the cache answers: a Job it
        # does not hold yet is created, and one that exists after all answers 409.
        job = self.jobs.get(job_name, self._ns) or self._just_created(job_name)
        if job is None:
            return await self._start(spec, cm, secure)
        outcome = job_outcome(job)
        if outcome.phase == "Running":
            return await self._running(spec, outcome, secure)
        if outcome.phase == "Failed":
            message = self._pod_message(job_name, succeeded=False)
            reason, detail = training_failure(message, outcome)
            await self._fail(spec, outcome, _Failure(reason, detail))
            return None
        return await self._finish(spec, job_name, outcome, secure)

    async def _secure_round(
        self,
        spec: RoundSpec,
        cm: dict[str, Any],
        job_name: str,
        reported: RoundReport | None,
    ) -> Result | None:
        """The stage the round spec asks for, each done once (the report says which are)."""
        asked = spec.secure_aggregation
        assert asked is not None
        if reported is not None and reported.state == "TrainingFailed":
            return None
        current = reported.secure_aggregation if reported is not None else None
        if current is not None and current.stage == "reveal":
            await self._secure.forget(spec)  # revealed and reported: the secrets are done
            return None
        try:
            if current is None:
                await self._secure.forget_earlier_attempt(spec)
                secrets = await self._secure.secrets(spec, cm)
                current = self._secure.keys_report(spec, secrets)
                await self._report(spec, secure_report(spec, state="Training", secure=current))
            if asked.stage == "keys":
                return None
            if current.stage == "keys":
                secrets = await self._secure.secrets(spec, cm)
                current = await self._secure.share(spec, secrets, current)
                await self._report(spec, secure_report(spec, state="Training", secure=current))
            if asked.stage == "shares":
                return None
            if current.stage == "shares":
                return await self._train(spec, cm, job_name, current)
            if asked.stage != "reveal" or reported is None or reported.update is None:
                return None
            secrets = await self._secure.secrets(spec, cm)
            current = await self._secure.reveal(spec, cm, secrets, current)
        except (SecAggRefused, secagg.SecAggError) as exc:
            reason = exc.reason if isinstance(exc, SecAggRefused) else "SecAggFailed"
            now = cond.now_utc()
            await self._fail(spec, JobOutcome("Failed", finished=now), _Failure(reason, str(exc)))
            return None
        report = secure_report(spec, state="UpdateReady", secure=current, update=reported.update)
        if await self._report(spec, report):
            log.info("%s round %d: secure-aggregation shares revealed", _job_id(spec), spec.round)
        await self._secure.forget(spec)
        return None

    async def _start(
        self, spec: RoundSpec, cm: dict[str, Any], secure: SecAggReport | None = None
    ) -> Result | None:
        now = cond.now_utc()
        dataset, missing = self._dataset_for(spec)
        if missing is not None:
            await self._fail(spec, JobOutcome("Failed", finished=now), missing)
            return None
        try:
            manifest = build_training_job(
                spec,
                namespace=self._ns,
                spec_configmap=cm,
                dataset=dataset,
                now=now,
                backoff_limit=self._settings.job_backoff_limit,
                ttl_seconds=self._settings.job_ttl_seconds,
                min_deadline_seconds=self._settings.min_active_deadline_seconds,
                secagg_secret=(
                    naming.secagg_secret_name(spec.job.uid, spec.round, spec.attempt)
                    if secure is not None
                    else None
                ),
            )
        except DeadlinePassed as exc:
            failure = _Failure("DeadlineExceeded", f"{exc}; no Job was started")
            await self._fail(spec, JobOutcome("Failed", finished=now), failure)
            return None
        name = manifest["metadata"]["name"]
        try:
            job = await self._spoke.create(r.JOB, manifest, namespace=self._ns)
            log.info("created training Job %s for %s round %d", name, _job_id(spec), spec.round)
            if self.jobs.get(name, self._ns) is None:
                self._created[name] = (time.monotonic(), job)
        except Conflict as exc:
            if not exc.already_exists:
                raise
            job = await self._spoke.get(r.JOB, name, namespace=self._ns)  # already there: use it
        return await self._running(spec, job_outcome(job), secure)

    async def _running(
        self, spec: RoundSpec, outcome: JobOutcome, secure: SecAggReport | None
    ) -> Result:
        """Report Training once the Job has run for the report delay; a Job done sooner
        goes straight to its final report (one status write per round instead of two)."""
        delay = self._settings.training_report_delay_seconds
        if outcome.started is not None:
            left = delay - (cond.now_utc() - outcome.started).total_seconds()
            if left > 0:
                return Result(requeue_after=left)
        await self._report(spec, _training(spec, outcome, secure))
        return Result(requeue_after=self._settings.resync_seconds)

    async def _finish(
        self,
        spec: RoundSpec,
        job_name: str,
        outcome: JobOutcome,
        secure: SecAggReport | None = None,
    ) -> Result | None:
        message = self._pod_message(job_name, succeeded=True)
        if message is None and outcome.finished is not None:
            waited = (cond.now_utc() - outcome.finished).total_seconds()
            if waited < RESULT_GRACE_SECONDS:
                raise TemporaryError(f"Job {job_name} finished; its pod status is not in yet")
        try:
            result = parse_result(message, spec, dataset=self._dataset_for(spec)[0])
            update = await verify_update(result, spec, file_root=self._settings.file_store_root)
        except ResultError as exc:
            failure = _Failure(exc.reason, str(exc), invalid=exc.invalid)
            await self._fail(spec, outcome, failure)
            return None
        report = RoundReport(
            job_uid=spec.job.uid,
            cluster=spec.cluster,
            round=spec.round,
            attempt=spec.attempt,
            state="UpdateReady",
            update=update,
            metrics=result.metrics,
            privacy=result.privacy,
            started_at=outcome.started,
            finished_at=outcome.finished,
        )
        if secure is not None:
            # A masked input: its example count (the weight) and the cluster's own metrics
            # stay here; the hub learns only sums.
            report = report.model_copy(
                update={
                    "update": update.model_copy(update={"num_examples": 0}),
                    "metrics": {},
                    "secure_aggregation": secure.model_copy(update={"stage": "mask"}),
                }
            )
        if await self._report(spec, report):
            self._metrics.rounds_trained_total.labels(result="UpdateReady").inc()
            self._observe_duration(outcome)
            log.info("%s round %d: update ready (%s)", _job_id(spec), spec.round, update.uri)
        return None

    async def _fail(self, spec: RoundSpec, outcome: JobOutcome, failure: _Failure) -> None:
        report = RoundReport(
            job_uid=spec.job.uid,
            cluster=spec.cluster,
            round=spec.round,
            attempt=spec.attempt,
            state="TrainingFailed",
            reason=failure.reason,
            message=_bounded(failure.message),
            started_at=outcome.started,
            finished_at=outcome.finished,
        )
        if spec.secure_aggregation is not None:
            await self._secure.forget(spec)
        if await self._report(spec, report, invalid=failure.invalid):
            result = "UpdateInvalid" if failure.invalid else "TrainingFailed"
            self._metrics.rounds_trained_total.labels(result=result).inc()
            self._metrics.failure(failure.reason)
            self._observe_duration(outcome)
            log.warning(
                "%s round %d failed: %s: %s",
                _job_id(spec),
                spec.round,
                failure.reason,
                failure.message,
            )

    async def _report(self, spec: RoundSpec, report: RoundReport, *, invalid: bool = False) -> bool:
        """Write the round's condition; True when something was written."""
        new = cond.round_condition(
            report,
            fl_namespace=spec.job.namespace,
            fl_name=spec.job.name,
            now=cond.now_utc(),
            invalid=invalid,
        )

        def mutate(conditions: list[cond.Condition]) -> list[cond.Condition] | None:
            current = cond.report_of(cond.find(conditions, new["type"]))
            if (
                report.state == "Training"
                and current is not None
                and _same_round(current, spec)
                and current.state != "Training"
            ):
                return None  # never step back from a final report
            return cond.set_condition(conditions, new)

        what = f"{_job_id(spec)} round {spec.round}"
        return await self._status.update(mutate, what=what, result=new["reason"])

    async def _sweep(self) -> None:
        """Remove this cluster's round conditions whose round spec no longer exists."""
        live = set()
        for cm in self.specs.list():
            labels = (cm.get("metadata") or {}).get("labels") or {}
            if labels.get(keys.LABEL_JOB_UID):
                live.add(labels[keys.LABEL_JOB_UID])
            try:
                live.add(
                    RoundSpec.from_json((cm.get("data") or {}).get(keys.ROUND_SPEC_KEY, "")).job.uid
                )
            except (ValidationError, ValueError):
                continue
        cluster = self._settings.cluster_name

        def mutate(conditions: list[cond.Condition]) -> list[cond.Condition] | None:
            stale = {
                c["type"]
                for c in cond.owned_round_conditions(conditions, cluster=cluster)
                if (rep := cond.report_of(c)) is not None and rep.job_uid not in live
            }
            if not stale:
                return None
            return [c for c in conditions if c.get("type") not in stale]

        if await self._status.update(mutate, what="cleared round conditions", result="Cleared"):
            log.info("cleared round conditions of round specs that are gone")

    # -- helpers -----------------------------------------------------------------------

    async def _parse(self, cm: dict[str, Any]) -> RoundSpec:
        """The round spec, or a TerminalError (reported to the hub when the labels allow)."""
        text = (cm.get("data") or {}).get(keys.ROUND_SPEC_KEY)
        where = f"ConfigMap {self._ns}/{_name(cm)} key {keys.ROUND_SPEC_KEY}"
        problem: str | None = None
        spec: RoundSpec | None = None
        if not text:
            problem = f"{where} is missing"
        else:
            try:
                spec = RoundSpec.from_json(text)
            except ValidationError as exc:
                err = exc.errors()[0]
                path = ".".join(str(p) for p in err["loc"]) or "(document)"
                problem = f"{where}: {path}: {err['msg']}"
        if spec is not None and spec.cluster != self._settings.cluster_name:
            problem = (
                f"{where} is for cluster {spec.cluster}, this agent serves "
                f"{self._settings.cluster_name}"
            )
        if problem is None and spec is not None:
            return spec
        await self._report_invalid_spec(cm, problem or where)
        raise TerminalError(problem or where, reason="RoundSpecInvalid")

    async def _report_invalid_spec(self, cm: dict[str, Any], problem: str) -> None:
        """Tell the hub the round cannot run, if the ConfigMap's labels say which round it is."""
        labels = (cm.get("metadata") or {}).get("labels") or {}
        uid = labels.get(keys.LABEL_JOB_UID)
        ns, name = labels.get(keys.LABEL_JOB_NAMESPACE), labels.get(keys.LABEL_JOB_NAME)
        round_text = str(labels.get(keys.LABEL_ROUND, ""))
        if not (uid and ns and name and round_text.isdigit() and int(round_text) >= 1):
            return
        report = RoundReport(
            job_uid=uid,
            cluster=self._settings.cluster_name,
            round=int(round_text),
            state="TrainingFailed",
            reason="RoundSpecInvalid",
            message=_bounded(problem),
        )
        new = cond.round_condition(report, fl_namespace=ns, fl_name=name, now=cond.now_utc())
        written = await self._status.update(
            lambda conditions: cond.set_condition(conditions, new),
            what=f"invalid round spec {_name(cm)}",
            result="TrainingFailed",
        )
        if written:
            self._metrics.failure("RoundSpecInvalid")

    def _just_created(self, name: str) -> dict[str, Any] | None:
        """A Job created lately, until the watch delivers it (or a resync period passes:
        the watch then has it, or it is gone and is created again)."""
        when, job = self._created.get(name, (0.0, None))
        if job is not None and time.monotonic() - when > self._settings.resync_seconds:
            del self._created[name]
            return None
        return job

    def _dataset_for(self, spec: RoundSpec) -> tuple[Dataset | None, _Failure | None]:
        if spec.dataset is None:
            return None, None
        catalogue = self._claims.catalogue
        found = (
            next((d for d in catalogue.datasets if d.name == spec.dataset), None)
            if catalogue
            else None
        )
        if found is not None:
            return found, None
        why = (
            f"dataset {spec.dataset!r} is not in this cluster's catalogue"
            if catalogue is not None
            else f"the dataset catalogue is invalid ({self._claims.error})"
        )
        return None, _Failure("DatasetNotFound", why)

    def _pod_message(self, job_name: str, *, succeeded: bool) -> str | None:
        pods = [p for p in self.pods.list() if _labels(p).get(JOB_NAME_LABEL) == job_name]
        return termination_message(pods, succeeded=succeeded)

    async def _delete_job(self, name: str, *, why: str) -> None:
        if await self._spoke.delete(r.JOB, name, namespace=self._ns, propagation="Background"):
            log.info("deleted training Job %s: %s", name, why)

    def _observe_duration(self, outcome: JobOutcome) -> None:
        if outcome.duration is not None:
            self._metrics.job_duration_seconds.observe(outcome.duration)


def _training(
    spec: RoundSpec, outcome: JobOutcome, secure: SecAggReport | None = None
) -> RoundReport:
    return RoundReport(
        job_uid=spec.job.uid,
        cluster=spec.cluster,
        round=spec.round,
        attempt=spec.attempt,
        state="Training",
        started_at=outcome.started,
        secure_aggregation=secure,
    )


def _same_round(report: RoundReport, spec: RoundSpec) -> bool:
    return (report.job_uid, report.round, report.attempt) == (
        spec.job.uid,
        spec.round,
        spec.attempt,
    )


def _spec_of_job(job: dict[str, Any]) -> str | None:
    """The round-spec ConfigMap a training Job belongs to (its controlling owner)."""
    for ref in (job.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ConfigMap" and ref.get("apiVersion") == "v1":
            return str(ref.get("name"))
    uid = ((job.get("metadata") or {}).get("labels") or {}).get(keys.LABEL_JOB_UID)
    return naming.round_spec_configmap_name(uid) if uid else None


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _job_id(spec: RoundSpec) -> str:
    return f"{spec.job.namespace}/{spec.job.name}"


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_REPORT_MESSAGE else text[: MAX_REPORT_MESSAGE - 3] + "..."
