"""The FederatedLearning controller: one level-based reconcile per job key.

Each pass reads the job (the informer cache, or the newer object this process just
wrote), validates the spec, keeps the Placement in place, reads the agents' reports, asks
the round state machine (`rounds.decide`) for the next step and carries it out. Status is
written before side effects that depend on it (round start before round specs, the
result's record before its publication), so a restart always finds enough to go on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fl_contract import keys, naming
from fl_core.store import StoreError
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.controller import Result, TemporaryError
from fl_kube.errors import Conflict
from fl_kube.events import EventRecorder
from fl_kube.informer import Informer
from fl_kube.timestamps import format_time, parse_time
from hub_manager import privacy as hub_privacy
from hub_manager import rounds, secure_record
from hub_manager import status as st
from hub_manager.cache import WriteMemo, contains
from hub_manager.cleanup import JobCleaner
from hub_manager.crd_spec import FederatedLearningSpec, SpecError
from hub_manager.job_events import events_between
from hub_manager.job_runtime import JobRuntime, open_runtime
from hub_manager.metrics import HubMetrics
from hub_manager.placement import (
    Selection,
    cluster_sets,
    decisions_of,
    desired_binding,
    desired_placement,
    selection,
)
from hub_manager.publication import Publisher
from hub_manager.reports import AddonView
from hub_manager.round_inputs import ReportCollector
from hub_manager.round_sender import RoundSender, note_refused, with_refused
from hub_manager.settings import HubSettings

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
MAX_STEPS = 8
OWN_WRITES = 16  # resourceVersions of our own writes remembered per job
COALESCE_PARTICIPANTS = 100  # participants per second of the status coalescing interval
BATCH_PARTICIPANTS = 100  # participants per second of the report batching interval
MAX_BATCH_FACTOR = 5.0
COMPONENT = "federated-learning-hub-manager"


class FederatedLearningReconciler:
    """Drives every FederatedLearning job; shares nothing between jobs but the caches."""

    def __init__(
        self,
        api: KubeApi,
        *,
        settings: HubSettings,
        jobs: Informer,
        addons: Informer,
        placements: Informer,
        decisions: Informer,
        works: Informer,
        metrics: HubMetrics,
        clusters: Informer | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._settings = settings
        self._jobs = jobs
        self._addons = addons
        self._placements = placements
        self._decisions = decisions
        self._works = works
        self._metrics = metrics
        self._clock = clock
        self._runtimes: dict[Key, JobRuntime] = {}
        self._latest: dict[Key, dict[str, Any]] = {}
        self._written_at: dict[Key, float] = {}
        self._own_writes: dict[Key, deque[str]] = {}
        self._spec_checked: dict[Key, tuple[str, int, list[str]]] = {}
        self._events = EventRecorder(api, component=COMPONENT, instance=settings.identity)
        self._applied: dict[tuple[str, str, str], str] = {}
        self._addon_views: dict[str, tuple[str, AddonView]] = {}  # cluster -> (version, view)
        self._placed = WriteMemo(placements)
        self._cleaner = JobCleaner(api, jobs=jobs, works=works, settings=settings)
        self._reports = ReportCollector(
            addon=self._addon,
            metrics=metrics,
            managed_cluster=(lambda name: clusters.get(name)) if clusters is not None else None,
        )
        self._sender = RoundSender(
            api, works=works, addon=self._addon, cleaner=self._cleaner, metrics=metrics
        )
        self._publisher = Publisher(
            write_status=self._write_status,
            drop_runtime=self._drop_runtime,
            cleaner=self._cleaner,
            metrics=metrics,
        )

    # -- event routing -------------------------------------------------------------------

    def keys_for_job(self, obj: dict[str, Any]) -> list[Key]:
        metadata = obj.get("metadata") or {}
        return [(str(metadata.get("namespace")), str(metadata.get("name")))]

    def keys_for_job_event(self, obj: dict[str, Any]) -> list[Key]:
        """A job's own events, except those of our own writes: the reconcile that wrote
        already decided what comes next (a requeue, a backoff), and an event of its own
        making must not cut that short."""
        keys_ = self.keys_for_job(obj)
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if version and version in self._own_writes.get(keys_[0], ()):
            return []
        return keys_

    def keys_for_addon(self, obj: dict[str, Any]) -> list[Key]:
        """Jobs that may care about this cluster's add-on: every job not yet finished."""
        if (obj.get("metadata") or {}).get("name") != keys.ADDON_NAME:
            return []
        return [
            k
            for job in self._jobs.list()
            if (job.get("status") or {}).get("phase") not in rounds.TERMINAL_PHASES
            for k in self.keys_for_job(job)
        ]

    def report_batch_delay(self, key: Key) -> float:
        """How long the passes a job's reports ask for may wait, so that a burst of them
        costs one pass over the job (each reads every participant), not one per report."""
        job = self._jobs.get(key[1], key[0])
        participants = int(((job or {}).get("status") or {}).get("clusters") or 0)
        return report_batch_interval(self._settings.report_batch_seconds, participants)

    def keys_for_placement_object(self, obj: dict[str, Any]) -> list[Key]:
        """The job of a Placement or PlacementDecision (by the placement's name)."""
        metadata = obj.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "")
        placement = (metadata.get("labels") or {}).get(
            "cluster.open-cluster-management.io/placement"
        ) or metadata.get("name")
        return [
            (namespace, str(job["metadata"]["name"]))
            for job in self._jobs.list()
            if job["metadata"].get("namespace") == namespace
            and naming.placement_name(str(job["metadata"]["name"])) == placement
        ]

    def keys_for_work(self, obj: dict[str, Any]) -> list[Key]:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        uid = labels.get(keys.LABEL_JOB_UID)
        return [
            k
            for job in self._jobs.list()
            if uid and job["metadata"].get("uid") == uid
            for k in self.keys_for_job(job)
        ]

    # -- reconcile ---------------------------------------------------------------------

    async def reconcile(self, key: Key) -> Result | None:
        try:
            return await self._reconcile(key)
        except Conflict:
            # Someone changed the job since we read it: look again with the fresh object.
            self._latest.pop(key, None)
            return Result(requeue=True)
        finally:
            self._count_phases()

    async def _reconcile(self, key: Key) -> Result | None:
        obj = self._current(key)
        if obj is None:
            await self._forget(key)
            return None
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            delay = await self._cleaner.finalize(
                obj, spec_placement=_raw_placement(obj), now=self._clock()
            )
            if delay is not None:
                return Result(requeue_after=delay)
            await self._forget(key)
            return None
        obj = await self._ensure_finalizer(key, obj)
        # One status for the whole pass: each step works on it, and it is written only
        # where the protocol needs it on record (a round start, a result before its
        # publication) and at the end, as a diff, so that a pass that changes nothing
        # (a retry of the same fault) writes nothing.
        status = st.clone(obj.get("status"))
        try:
            for _ in range(MAX_STEPS):
                obj, status, result, again = await self._step(key, obj, status)
                if not again:
                    return result
        except StoreError as exc:
            await self._store_unavailable(key, obj, status, exc)
        return Result(requeue_after=0.0)

    async def _store_unavailable(
        self, key: Key, obj: dict[str, Any], status: dict[str, Any], exc: StoreError
    ) -> None:
        """An expected fault of the model store: say so in the status (written once per
        change of the fault) and retry with the key's backoff, which only grows until a
        pass succeeds."""
        runtime = self._runtimes.get(key)
        pending = status.get("pendingModel") or {}
        if pending.get("uri"):
            doing = (
                f"cannot publish the global model of round {pending.get('round')} at "
                f"{pending.get('uri')}"
            )
        else:
            doing = "model store" + (f" {runtime.store_config.uri}" if runtime else "")
        message = f"{doing}: {describe_store_error(exc)}; retrying with backoff"
        st.set_condition(
            status,
            type_=st.PROGRESSING,
            value=False,
            reason="StoreUnavailable",
            message=message,
            generation=int(obj["metadata"].get("generation") or 0),
            now=self._clock(),
        )
        await self._write_status(key, obj, status)
        raise TemporaryError(f"StoreUnavailable: {message}") from None

    def _current(self, key: Key) -> dict[str, Any] | None:
        cached = self._jobs.get(key[1], key[0])
        latest = self._latest.get(key)
        if cached is None or latest is None:
            return cached
        if cached["metadata"].get("uid") != latest["metadata"].get("uid"):
            return cached
        try:
            newer = int(latest["metadata"]["resourceVersion"]) > int(
                cached["metadata"]["resourceVersion"]
            )
        except (KeyError, ValueError):
            newer = False
        return latest if newer else cached

    async def _forget(self, key: Key) -> None:
        latest = self._latest.pop(key, None)
        if latest is not None:
            self._events.forget(str(latest["metadata"].get("uid")))
        self._written_at.pop(key, None)
        self._own_writes.pop(key, None)
        self._spec_checked.pop(key, None)
        self._reports.forget(*key)
        runtime = self._runtimes.pop(key, None)
        if runtime is not None:
            await runtime.close()
        self._metrics.forget_job(*key)

    async def _drop_runtime(self, key: Key) -> None:
        runtime = self._runtimes.pop(key, None)
        if runtime is not None:
            await runtime.close()

    async def _ensure_finalizer(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj["metadata"]
        finalizers = list(metadata.get("finalizers") or [])
        if keys.FINALIZER in finalizers:
            return obj
        patch = {
            "metadata": {
                "finalizers": [*finalizers, keys.FINALIZER],
                "resourceVersion": metadata["resourceVersion"],
            }
        }
        updated = await self._api.patch(
            r.FEDERATED_LEARNING, metadata["name"], patch, namespace=metadata["namespace"]
        )
        self._wrote(key, updated)
        self._metrics.job_registered(*key)
        return updated

    def _wrote(self, key: Key, updated: dict[str, Any]) -> None:
        self._latest[key] = updated
        version = str(updated["metadata"].get("resourceVersion") or "")
        self._own_writes.setdefault(key, deque(maxlen=OWN_WRITES)).append(version)

    async def _write_status(
        self, key: Key, obj: dict[str, Any], status: dict[str, Any]
    ) -> dict[str, Any]:
        """Write the status if it differs; then record the Events the change stands for."""
        before = obj.get("status") or {}
        if status == before:
            return obj
        body = {**obj, "status": status}
        updated = await self._api.replace(r.FEDERATED_LEARNING, body, subresource="status")
        self._wrote(key, updated)
        self._written_at[key] = time.monotonic()
        for event in events_between(before, updated.get("status") or {}):
            await self._events.record(
                updated, type_=event.type, reason=event.reason, message=event.message
            )
        return updated

    def _coalesce_wait(self, key: Key, obj: dict[str, Any], status: dict[str, Any]) -> float:
        """Seconds to hold back a status write that only moves participants' states, so a
        round with many clusters costs about one write per interval, not one per report.
        The interval grows with the round (one more second per 100 participants): a big
        status is written less often, and what decides the round is never held back."""
        current = obj.get("status") or {}
        if {k: v for k, v in status.items() if k not in st.PARTICIPANT_PROGRESS} != {
            k: v for k, v in current.items() if k not in st.PARTICIPANT_PROGRESS
        }:
            return 0.0
        since = time.monotonic() - self._written_at.get(key, float("-inf"))
        interval = coalesce_interval(
            self._settings.status_coalesce_seconds, len(st.round_participants(status))
        )
        return max(interval - since, 0.0)

    async def _step(
        self, key: Key, obj: dict[str, Any], status: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], Result | None, bool]:
        """One decision and its execution: (object, status, result, whether to go on)."""
        metadata = obj["metadata"]
        generation = int(metadata.get("generation") or 0)
        now = self._clock()
        try:
            runtime = await self._runtime(key, obj)
        except SpecError as exc:
            obj = await self._invalid(key, obj, status, exc.problems, generation, now)
            return obj, status, None, False
        spec = runtime.spec
        privacy_problem = hub_privacy.edit_problem(spec, status)
        if privacy_problem is not None:
            obj = await self._invalid(key, obj, status, [privacy_problem], generation, now)
            return obj, status, None, False
        self._resume_if_edited(status, spec)
        st.set_condition(
            status,
            type_=st.SPEC_VALID,
            value=True,
            reason="Valid",
            message="the spec is valid",
            generation=generation,
            now=now,
        )
        ignored = spec.ignored_fields()
        if ignored:
            st.set_condition(
                status,
                type_=st.FIELDS_IGNORED,
                value=True,
                reason="NotSupported",
                message="accepted but not used: " + "; ".join(ignored),
                generation=generation,
                now=now,
            )
        else:
            st.remove_condition(status, st.FIELDS_IGNORED)
        status["observedGeneration"] = generation
        if "phase" not in status:
            st.set_phase(status, "Waiting")

        if st.progress_of(status).phase in rounds.TERMINAL_PHASES:
            await self._cleaner.remove_works(str(metadata["uid"]))
            return await self._write_status(key, obj, status), status, None, False

        await self._ensure_placement(obj, spec)
        chosen = self._selection(obj)
        available = [c for c in chosen.clusters if self._addon(c).available]
        self._clusters_condition(status, spec, chosen, available, generation, now)

        tally = await self._reports.collect(
            obj, runtime, status, now, selected=chosen.clusters, available=available
        )
        tally = with_refused(status, runtime, tally)
        clusters = st.condition(status, st.CLUSTERS_AVAILABLE) or {}
        decision = rounds.decide(
            progress=st.progress_of(status),
            policy=_policy(spec),
            available=available,
            tally=tally,
            now=now,
            # Selected without the add-on, or in the round and no longer selected (a
            # disabled add-on withdraws the cluster's dataset claims): name them all.
            unavailable=sorted(
                (set(chosen.clusters) | set(st.progress_of(status).participants)) - set(available)
            ),
            departed=[
                c for c in st.progress_of(status).participants if not self._addon(c).available
            ],
            waiting_since=(
                parse_time(clusters.get("lastTransitionTime"))
                if clusters.get("status") == "False"
                else None
            ),
        )
        log.debug("%s/%s: %s", key[0], key[1], decision)
        if isinstance(decision, rounds.StartRound):
            over = hub_privacy.budget_overrun(
                spec,
                status,
                participants=decision.participants,
                available=len(available),
                samples_of=lambda cluster: self._reports.samples(spec, cluster),
            )
            if over is not None:
                stopped = (
                    hub_privacy.BUDGET_EXHAUSTED,
                    hub_privacy.overrun_message(spec, status, over),
                )
                obj = await self._publisher.finish(
                    key, obj, status, now, failed=None, stopped=stopped
                )
                return obj, st.clone(obj.get("status")), None, False
            hub_privacy.start_round(
                spec, status, participants=decision.participants, available=len(available)
            )
        try:
            return await self._execute(key, obj, status, runtime, decision, tally, now)
        except SpecError as exc:  # found only while running (an evaluator that cannot cope)
            self._spec_checked[key] = (str(metadata["uid"]), generation, exc.problems)
            obj = await self._invalid(key, obj, status, exc.problems, generation, now)
            return obj, status, None, False

    def _resume_if_edited(self, status: dict[str, Any], spec: FederatedLearningSpec) -> None:
        """Level-based: a Failed job whose spec was fixed goes on where it stood, and a
        Completed job whose `rounds` was raised trains the extra rounds from its model."""
        progress = st.progress_of(status)
        spec_condition = st.condition(status, st.SPEC_VALID) or {}
        fixed = progress.phase == "Failed" and spec_condition.get("status") == "False"
        more = (
            progress.phase == "Completed"
            and spec.server.rounds > progress.published_round
            and not hub_privacy.still_exhausted(spec, status)
        )
        if fixed or more:
            st.set_phase(status, "Running" if progress.round else "Waiting")
            status.pop("completionTime", None)
            st.remove_condition(status, st.SUCCEEDED)

    async def _execute(
        self,
        key: Key,
        obj: dict[str, Any],
        status: dict[str, Any],
        runtime: JobRuntime,
        decision: rounds.Decision,
        tally: rounds.Tally,
        now: datetime,
    ) -> tuple[dict[str, Any], dict[str, Any], Result | None, bool]:
        generation = int(obj["metadata"].get("generation") or 0)
        if isinstance(decision, rounds.Done):
            return await self._write_status(key, obj, status), status, None, False
        if isinstance(decision, rounds.WaitForClusters):
            st.set_phase(status, "Waiting")
            until = (
                f"; the job fails at {format_time(decision.until)} unless they return"
                if decision.until is not None
                else ""
            )
            st.set_condition(
                status,
                type_=st.PROGRESSING,
                value=False,
                reason="WaitingForClusters",
                message=(
                    f"round {decision.round} waits for {decision.needed} available clusters, "
                    f"{decision.available} available{until}"
                ),
                generation=generation,
                now=now,
            )
            obj = await self._write_status(key, obj, status)
            delay = self._settings.waiting_recheck_seconds
            if decision.until is not None:
                delay = min(delay, max((decision.until - now).total_seconds(), 0.05))
            return obj, status, Result(requeue_after=delay), False
        if isinstance(decision, rounds.StartRound):
            return await self._start_round(key, obj, status, runtime, decision, tally, now)
        if isinstance(decision, rounds.AwaitReports):
            if status.get(secure_record.STATUS_KEY) != (obj.get("status") or {}).get(
                secure_record.STATUS_KEY
            ):  # a secure stage closed: on record before any round spec asks for the next
                obj = await self._write_status(key, obj, status)
            note_refused(status, runtime, await self._sender.send(obj, status, runtime), now=now)
            delay = min(max(decision.requeue_after, 0.05), self._settings.resync_seconds)
            stage_end = getattr(runtime.session, "next_check", None)
            if stage_end is not None:  # a secure round's stage closes at its own deadline
                delay = min(delay, max((stage_end - now).total_seconds(), 0.05))
            wait = self._coalesce_wait(key, obj, status)
            if wait > 0:  # only per-cluster progress changed: batch it with what follows
                return obj, status, Result(requeue_after=min(delay, wait)), False
            obj = await self._write_status(key, obj, status)
            return obj, status, Result(requeue_after=delay), False
        if isinstance(decision, rounds.Aggregate):
            obj = await self._publisher.aggregate(key, obj, status, runtime, decision, now)
            return obj, st.clone(obj.get("status")), None, True
        if isinstance(decision, rounds.FinishPublication):
            pending = status.get("pendingModel") or {}
            if not await runtime.store.exists(str(pending.get("uri"))):
                # Recorded but never written: aggregate again, in this same pass (the
                # record stays as it is when the result is the same, so no write).
                status.pop("pendingModel", None)
                runtime.session = None
                return obj, status, None, True
            obj = await self._publisher.finish_publication(key, obj, status, runtime, now)
            return obj, st.clone(obj.get("status")), None, True
        if isinstance(decision, rounds.Complete):
            obj = await self._publisher.finish(key, obj, status, now, failed=None)
            return obj, st.clone(obj.get("status")), None, False
        assert isinstance(decision, rounds.Fail)
        causes = st.failure_summary(status) if decision.reason == "QuorumNotReached" else ""
        message = decision.message + (f": {causes}" if causes else "")
        if decision.advice:
            message += f"; {decision.advice}"
        failed = rounds.Fail(reason=decision.reason, message=message)
        obj = await self._publisher.finish(key, obj, status, now, failed=failed)
        return obj, st.clone(obj.get("status")), None, False

    # -- spec and runtime --------------------------------------------------------------

    async def _runtime(self, key: Key, obj: dict[str, Any]) -> JobRuntime:
        metadata = obj["metadata"]
        uid = str(metadata["uid"])
        generation = int(metadata.get("generation") or 0)
        current = self._runtimes.get(key)
        if current is not None and current.uid == uid and current.generation == generation:
            return current
        checked = self._spec_checked.get(key)
        if checked is not None and checked[:2] == (uid, generation):
            raise SpecError(checked[2])  # checked already: only an edit changes the answer
        try:
            runtime = await open_runtime(
                obj,
                default_store_path=self._settings.default_store_path,
                file_store_root=self._settings.file_store_root,
            )
        except SpecError as exc:
            self._spec_checked[key] = (uid, generation, exc.problems)
            raise
        if current is not None:
            await current.close()
        self._spec_checked.pop(key, None)
        self._runtimes[key] = runtime
        return runtime

    async def _invalid(
        self,
        key: Key,
        obj: dict[str, Any],
        status: dict[str, Any],
        problems: list[str],
        generation: int,
        now: datetime,
    ) -> dict[str, Any]:
        """Terminal until the spec changes: a condition, phase Failed, no retry loop."""
        message = "; ".join(problems)
        st.set_condition(
            status,
            type_=st.SPEC_VALID,
            value=False,
            reason="InvalidSpec",
            message=message,
            generation=generation,
            now=now,
        )
        st.set_phase(status, "Failed", f"invalid spec: {message}")
        status["observedGeneration"] = generation
        await self._cleaner.remove_works(str(obj["metadata"]["uid"]))
        return await self._write_status(key, obj, status)

    # -- placement -----------------------------------------------------------------------

    async def _ensure_placement(self, obj: dict[str, Any], spec: FederatedLearningSpec) -> None:
        namespace = str(obj["metadata"]["namespace"])
        uid = str(obj["metadata"]["uid"])
        for cluster_set in cluster_sets(spec.client.placement):
            body = desired_binding(namespace, cluster_set)
            await self._apply_once(r.MANAGED_CLUSTER_SET_BINDING, body, memo=uid)
        placement = desired_placement(obj, spec.client.placement)
        metadata = placement["metadata"]
        cached = self._placements.get(metadata["name"], metadata["namespace"])
        slot = (metadata["namespace"], metadata["name"])
        fingerprint = repr(placement)
        matches = cached is not None and contains(cached, placement)
        if self._placed.needs_write(slot, fingerprint, cached_matches=matches):
            written = await self._api.apply(
                r.PLACEMENT, placement, field_manager=keys.HUB_FIELD_MANAGER
            )
            self._placed.wrote(slot, fingerprint, written)

    async def _apply_once(self, res: r.Resource, body: dict[str, Any], *, memo: str) -> None:
        """Apply unless this process already applied the same body (the server keeps it)."""
        metadata = body["metadata"]
        slot = (res.kind, str(metadata["namespace"]), str(metadata["name"]))
        fingerprint = memo + repr(body)
        if self._applied.get(slot) == fingerprint:
            return
        await self._api.apply(res, body, field_manager=keys.HUB_FIELD_MANAGER)
        self._applied[slot] = fingerprint

    def _selection(self, obj: dict[str, Any]) -> Selection:
        namespace = str(obj["metadata"]["namespace"])
        name = naming.placement_name(str(obj["metadata"]["name"]))
        placement = self._placements.get(name, namespace)
        decisions = decisions_of(self._decisions.list(), namespace=namespace, placement=name)
        return selection(placement, decisions)

    def _addon(self, cluster: str) -> AddonView:
        """The cluster's add-on as the hub sees it, built once per resourceVersion."""
        addon = self._addons.get(keys.ADDON_NAME, cluster)
        if addon is None:
            self._addon_views.pop(cluster, None)
            return AddonView(cluster=cluster, available=False, agent_namespace=None, conditions=())
        version = str((addon.get("metadata") or {}).get("resourceVersion") or "")
        known = self._addon_views.get(cluster)
        if version and known is not None and known[0] == version:
            return known[1]
        view = AddonView.of(addon)
        self._metrics.derived.labels(kind="addon_view").inc()
        self._addon_views[cluster] = (version, view)
        return view

    def _clusters_condition(
        self,
        status: dict[str, Any],
        spec: FederatedLearningSpec,
        chosen: Selection,
        available: list[str],
        generation: int,
        now: datetime,
    ) -> None:
        needed = spec.server.min_available_clients
        if not chosen.clusters and chosen.satisfied_reason:
            value, reason = False, "NoClustersSelected"
            message = (
                f"the placement selects no cluster ({chosen.satisfied_reason}: "
                f"{chosen.satisfied_message}); check spec.client.placement (clusterSets, "
                "predicates, numberOfClusters) and that those cluster sets hold clusters"
            )
        elif len(available) < needed:
            value, reason = False, "WaitingForClusters"
            missing = sorted(set(chosen.clusters) - set(available))
            message = (
                f"{len(available)} of {len(chosen.clusters)} selected clusters have the "
                f"{keys.ADDON_NAME} add-on Available, {needed} needed"
                + (
                    f"; not available: {', '.join(missing[:10])} (enable it with clusteradm "
                    f"addon enable --names {keys.ADDON_NAME} --clusters ...)"
                    if missing
                    else ""
                )
            )
        else:
            value, reason = True, "ClustersAvailable"
            message = f"{len(available)} selected clusters have the add-on Available"
        st.set_condition(
            status,
            type_=st.CLUSTERS_AVAILABLE,
            value=value,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        )

    # -- reports -------------------------------------------------------------------------

    async def _start_round(
        self,
        key: Key,
        obj: dict[str, Any],
        status: dict[str, Any],
        runtime: JobRuntime,
        decision: rounds.StartRound,
        tally: rounds.Tally,
        now: datetime,
    ) -> tuple[dict[str, Any], dict[str, Any], Result | None, bool]:
        generation = int(obj["metadata"].get("generation") or 0)
        progress = st.progress_of(status)
        if progress.in_round:  # a retry: remember who reported in the abandoned attempt
            status["previousRound"] = {
                "round": progress.round,
                "attempt": progress.attempt,
                "reported": sorted(tally.reported()),
            }
        status.update(
            round=decision.round,
            attempt=decision.attempt,
            roundStartTime=format_time(now, precise=True),
            roundDeadline=format_time(decision.deadline, precise=True),
            clusters=len(decision.participants),
        )
        st.set_participants(
            status, decision.participants, runtime.states_for(decision.round, decision.attempt)
        )
        status.setdefault("startTime", format_time(now))
        status.pop(secure_record.STATUS_KEY, None)
        if runtime.spec.privacy.secure is not None:
            secure_record.start_record(
                status,
                runtime.spec,
                round_number=decision.round,
                attempt=decision.attempt,
                participants=len(decision.participants),
                max_weight=self._reports.max_weight(
                    decision.participants, runtime.spec.client.dataset
                ),
            )
        st.set_phase(status, "Running")
        retry = f" (attempt {decision.attempt})" if decision.attempt > 1 else ""
        st.set_condition(
            status,
            type_=st.PROGRESSING,
            value=True,
            reason="RoundStarted",
            message=(
                f"round {decision.round}{retry}: {len(decision.participants)} clusters training "
                f"until {format_time(decision.deadline)}"
            ),
            generation=generation,
            now=now,
        )
        obj = await self._write_status(key, obj, status)
        runtime.session = None
        self._metrics.round_participants.observe(len(decision.participants))
        log.info(
            "%s/%s: round %d%s started with %s",
            key[0],
            key[1],
            decision.round,
            retry,
            ", ".join(decision.participants),
        )
        note_refused(status, runtime, await self._sender.send(obj, status, runtime), now=now)
        return obj, status, None, True

    def _count_phases(self) -> None:
        counts: dict[str, int] = {}
        for job in self._jobs.list():
            phase = str((job.get("status") or {}).get("phase") or "Waiting")
            counts[phase] = counts.get(phase, 0) + 1
        self._metrics.set_jobs(counts)


def _policy(spec: FederatedLearningSpec) -> rounds.RoundPolicy:
    server = spec.server
    secure = spec.privacy.secure
    # A secure round needs at least `threshold` participants (2 when it is left to default).
    quorum = max(server.quorum, (secure.threshold or 2) if secure is not None else 0)
    return rounds.RoundPolicy(
        rounds=server.rounds,
        min_available=server.min_available_clients,
        quorum=quorum,
        max_retries=server.max_round_retries,
        round_timeout=server.round_timeout,
        fraction_fit=spec.client.fraction_fit,
        seed=server.seed,
        wait_for_clusters=server.wait_for_clusters,
    )


def coalesce_interval(base: float, participants: int) -> float:
    """How often per-cluster progress of a round of `participants` may be written."""
    return base * max(1.0, participants / COALESCE_PARTICIPANTS)


def report_batch_interval(base: float, participants: int) -> float:
    """How long a round of `participants` gathers reports before a pass handles them."""
    return base * min(participants / BATCH_PARTICIPANTS, MAX_BATCH_FACTOR)


def describe_store_error(exc: StoreError) -> str:
    """The store error in one stable line: an OS error by its number and text only (its
    file names may hold a random temporary name, which would make every retry's message,
    and so the status, different)."""
    text = str(exc)
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        text = text.replace(str(cause), f"[Errno {cause.errno}] {cause.strerror}")
    return text


def _raw_placement(obj: dict[str, Any]) -> dict[str, Any]:
    placement = ((obj.get("spec") or {}).get("client") or {}).get("placement")
    return dict(placement) if isinstance(placement, dict) else {}
