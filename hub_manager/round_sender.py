"""Sending each participant its round spec: one ManifestWork per (job, cluster), updated
in place each round, carrying the spec as a ConfigMap into the agent's namespace."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import ModelRef, RoundPrivacy, redact_presigned
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.errors import ApiError
from fl_kube.informer import Informer
from hub_manager import privacy as hub_privacy
from hub_manager import rounds, secure_record
from hub_manager import status as st
from hub_manager.cache import WriteMemo
from hub_manager.cleanup import JobCleaner
from hub_manager.job_runtime import JobRuntime
from hub_manager.metrics import HubMetrics
from hub_manager.reports import AddonView
from hub_manager.round_inputs import global_model, update_uri
from hub_manager.store_access import AccessGranter
from hub_manager.work import build_round_spec, desired_manifest_work, work_matches

CONCURRENT_SENDS = 16  # ManifestWork writes in flight at once


class RoundSender:
    def __init__(
        self,
        api: KubeApi,
        *,
        works: Informer,
        addon: Callable[[str], AddonView],
        cleaner: JobCleaner,
        metrics: HubMetrics,
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._works = works
        self._addon = addon
        self._cleaner = cleaner
        self._sent = WriteMemo(works)
        self._access = AccessGranter()
        self._refused: dict[tuple[str, str], tuple[str, str]] = {}  # slot -> (body, why)
        # slot -> the inputs of the work last found (or written) as they should be
        self._checked: dict[tuple[str, str], tuple[str, ...]] = {}

    async def send(
        self, obj: dict[str, Any], status: dict[str, Any], runtime: JobRuntime
    ) -> dict[str, str]:
        """Each participant's ManifestWork carries this round's spec; others have none.

        Returns the participants whose ManifestWork the API refused for good (a 4xx other
        than a conflict or throttling: admission, validation, permissions), with the API's
        message. A refused body is not sent again; the next round attempt tries anew.
        """
        progress = st.progress_of(status)
        uid = str(obj["metadata"]["uid"])
        deadline = progress.deadline
        refused: dict[str, str] = {}
        if not progress.in_round or deadline is None:
            return refused
        client_config = runtime.strategy.client_config(progress.round)
        start_model = global_model(obj, status, progress.round)
        work_name = naming.manifest_work_name(uid)
        record = secure_record.SecureRecord.of(status)
        if (
            record is None
            or runtime.spec.privacy.secure is None  # turned off mid-round: a plain spec
            or (record.round, record.attempt) != (progress.round, progress.attempt)
        ):
            record = None
        # What every participant's work depends on besides its own add-on and privacy
        # account: a work whose inputs are those of its last check is not built again.
        job_inputs = repr(
            (
                uid,
                str(obj["metadata"]["namespace"]),
                str(obj["metadata"]["name"]),
                runtime.generation,
                progress.round,
                progress.attempt,
                progress.participants if record is not None else (),
                deadline,
                start_model,
                client_config,
                record,
            )
        )
        secure = runtime.spec.privacy.secure is not None
        limit = asyncio.Semaphore(CONCURRENT_SENDS)

        # Inputs first (cheap), then only the works whose inputs changed, 16 at a time.
        changed: list[tuple[str, AddonView, RoundPrivacy | None, Any, tuple[str, ...]]] = []
        for cluster in progress.participants:
            addon = self._addon(cluster)
            if addon.agent_namespace is None:
                continue
            privacy = hub_privacy.round_privacy(
                runtime.spec, status, cluster, secure_aggregation=secure
            )
            cached = self._works.get(work_name, cluster)
            inputs = (job_inputs, addon.agent_namespace, repr(privacy), _work_state(cached))
            if self._checked.get((uid, cluster)) != inputs:
                changed.append((cluster, addon, privacy, cached, inputs))

        async def send_one(
            cluster: str,
            addon: AddonView,
            privacy: RoundPrivacy | None,
            cached: dict[str, Any] | None,
            inputs: tuple[str, ...],
        ) -> str | None:
            async with limit:
                why = await self._send_to(
                    obj,
                    runtime,
                    cluster=cluster,
                    addon=addon,
                    progress=progress,
                    start_model=start_model,
                    client_config=client_config,
                    privacy=privacy,
                    record=record,
                    cached=cached,
                )
            if why is None:
                self._checked[(uid, cluster)] = inputs
            else:
                self._checked.pop((uid, cluster), None)
            return why

        outcomes = await asyncio.gather(*(send_one(*c) for c in changed), return_exceptions=True)
        for (cluster, *_), outcome in zip(changed, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                refused[cluster] = outcome
        participants = set(progress.participants)
        for slot in [s for s in self._checked if s[0] == uid and s[1] not in participants]:
            del self._checked[slot]
        await self._cleaner.remove_works(uid, keep=set(progress.participants))
        return refused

    async def _send_to(
        self,
        obj: dict[str, Any],
        runtime: JobRuntime,
        *,
        cluster: str,
        addon: AddonView,
        progress: rounds.Progress,
        start_model: ModelRef | None,
        client_config: dict[str, float | int | str | bool],
        privacy: RoundPrivacy | None,
        record: secure_record.SecureRecord | None,
        cached: dict[str, Any] | None,
    ) -> str | None:
        """Write one participant's work unless it holds its round spec already; the API's
        message when it refused the work for good."""
        assert progress.deadline is not None
        assert addon.agent_namespace is not None
        uid = str(obj["metadata"]["uid"])
        work_name = naming.manifest_work_name(uid)
        self._metrics.derived.labels(kind="round_spec").inc()
        spec = build_round_spec(
            obj=obj,
            spec=runtime.spec,
            cluster=cluster,
            round_number=progress.round,
            attempt=progress.attempt,
            global_model=start_model,
            update_uri=update_uri(obj, runtime, progress=progress, cluster=cluster),
            store=runtime.store_config,
            deadline=progress.deadline,
            client_config=client_config,
            privacy=privacy,
        )
        if record is not None:
            part = secure_record.round_part(
                record,
                job_uid=uid,
                cluster=cluster,
                uris=secure_record.uris_for(
                    runtime.store,
                    namespace=str(obj["metadata"]["namespace"]),
                    job=str(obj["metadata"]["name"]),
                    round_number=progress.round,
                    attempt=progress.attempt,
                    cluster=cluster,
                ),
                participants=progress.participants,
            )
            spec = spec.model_copy(update={"secure_aggregation": part})
        spec = await self._access.grant(spec, store=runtime.store, current_work=cached)
        desired = desired_manifest_work(
            obj, cluster=cluster, agent_namespace=addon.agent_namespace, round_spec=spec
        )
        fingerprint = repr(desired)
        slot = (uid, cluster)
        earlier = self._refused.get(slot)
        if earlier is not None and earlier[0] == fingerprint:
            return earlier[1]
        if not self._sent.needs_write(
            slot, fingerprint, cached_matches=work_matches(cached, desired)
        ):
            return None
        try:
            written = await self._api.apply(
                r.MANIFEST_WORK, desired, field_manager=keys.HUB_FIELD_MANAGER
            )
        except ApiError as exc:
            if not refused_for_good(exc):
                raise
            why = redact_presigned(f"ManifestWork {cluster}/{work_name}: {exc}")
            self._refused[slot] = (fingerprint, why)
            return why
        self._refused.pop(slot, None)
        self._sent.wrote(slot, fingerprint, written)
        return None


def _work_state(work: dict[str, Any] | None) -> str:
    """What of a ManifestWork decides whether it must be written again: not its status,
    which the cluster's work agent updates as it applies it."""
    metadata = (work or {}).get("metadata") or {}
    return repr(
        tuple(metadata.get(k) for k in ("uid", "generation", "deletionTimestamp", "labels"))
    )


def refused_for_good(exc: ApiError) -> bool:
    """A 4xx that the same request would get again: not a conflict, not throttling."""
    return 400 <= exc.status < 500 and exc.status not in (409, 429)


def note_refused(
    status: dict[str, Any], runtime: JobRuntime, refused: dict[str, str], *, now: datetime
) -> None:
    """Remember which round specs the API refused (for this round attempt), mark those
    participants Failed and say so in a condition (removed once every spec went through)."""
    progress = st.progress_of(status)
    runtime.refused_attempt = (progress.round, progress.attempt)
    runtime.refused = dict(refused)
    if not refused:
        st.remove_condition(status, st.ROUND_SPECS_DELIVERED)
        return
    states = runtime.states_for(progress.round, progress.attempt)
    for cluster, why in refused.items():
        states[cluster] = st.ParticipantState("Failed", "RoundSpecRefused", 0, why)
    st.set_participants(status, progress.participants, states)
    st.set_condition(
        status,
        type_=st.ROUND_SPECS_DELIVERED,
        value=False,
        reason="ManifestWorkRefused",
        message=(
            f"round {progress.round}: the API refused the round spec of "
            f"{len(refused)} cluster(s): " + "; ".join(sorted(refused.values()))
        ),
        generation=int(status.get("observedGeneration") or 0),
        now=now,
    )


def with_refused(status: dict[str, Any], runtime: JobRuntime, tally: rounds.Tally) -> rounds.Tally:
    """Participants whose round spec the API refused have finished without an update."""
    progress = st.progress_of(status)
    if runtime.refused_attempt != (progress.round, progress.attempt) or not runtime.refused:
        return tally
    refused = frozenset(runtime.refused) - tally.reported()
    states = runtime.states_for(progress.round, progress.attempt)
    for cluster in refused:
        states[cluster] = st.ParticipantState(
            "Failed", "RoundSpecRefused", 0, runtime.refused[cluster]
        )
    if refused:
        st.set_participants(status, progress.participants, states)
    return rounds.Tally(
        accepted=tally.accepted,
        finished_without_update=tally.finished_without_update | refused,
    )
