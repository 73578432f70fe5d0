"""Sending each participant its round spec: one ManifestWork per (job, cluster), updated
in place each round, carrying the spec as a ConfigMap into the agent's namespace."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import redact_presigned
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
from hub_manager.reports import AddonView
from hub_manager.round_inputs import global_model, update_uri
from hub_manager.store_access import AccessGranter
from hub_manager.work import build_round_spec, desired_manifest_work, work_matches


class RoundSender:
    def __init__(
        self,
        api: KubeApi,
        *,
        works: Informer,
        addon: Callable[[str], AddonView],
        cleaner: JobCleaner,
    ) -> None:
        self._api = api
        self._works = works
        self._addon = addon
        self._cleaner = cleaner
        self._sent = WriteMemo(works)
        self._access = AccessGranter()
        self._refused: dict[tuple[str, str], tuple[str, str]] = {}  # slot -> (body, why)

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
        for cluster in progress.participants:
            addon = self._addon(cluster)
            if addon.agent_namespace is None:
                continue
            spec = build_round_spec(
                obj=obj,
                spec=runtime.spec,
                cluster=cluster,
                round_number=progress.round,
                attempt=progress.attempt,
                global_model=start_model,
                update_uri=update_uri(obj, runtime, progress=progress, cluster=cluster),
                store=runtime.store_config,
                deadline=deadline,
                client_config=client_config,
                privacy=hub_privacy.round_privacy(
                    runtime.spec,
                    status,
                    cluster,
                    secure_aggregation=runtime.spec.privacy.secure is not None,
                ),
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
            cached = self._works.get(work_name, cluster)
            spec = await self._access.grant(spec, store=runtime.store, current_work=cached)
            desired = desired_manifest_work(
                obj, cluster=cluster, agent_namespace=addon.agent_namespace, round_spec=spec
            )
            fingerprint = repr(desired)
            slot = (uid, cluster)
            earlier = self._refused.get(slot)
            if earlier is not None and earlier[0] == fingerprint:
                refused[cluster] = earlier[1]
                continue
            if self._sent.needs_write(
                slot, fingerprint, cached_matches=work_matches(cached, desired)
            ):
                try:
                    written = await self._api.apply(
                        r.MANIFEST_WORK, desired, field_manager=keys.HUB_FIELD_MANAGER
                    )
                except ApiError as exc:
                    if not refused_for_good(exc):
                        raise
                    why = redact_presigned(f"ManifestWork {cluster}/{work_name}: {exc}")
                    self._refused[slot] = (fingerprint, why)
                    refused[cluster] = why
                    continue
                self._refused.pop(slot, None)
                self._sent.wrote(slot, fingerprint, written)
        await self._cleaner.remove_works(uid, keep=set(progress.participants))
        return refused


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
    for cluster, why in refused.items():
        st.set_participant(
            status, cluster, st.ParticipantState("Failed", "RoundSpecRefused", 0, why)
        )
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
    for cluster in refused:
        st.set_participant(
            status,
            cluster,
            st.ParticipantState("Failed", "RoundSpecRefused", 0, runtime.refused[cluster]),
        )
    return rounds.Tally(
        accepted=tally.accepted,
        finished_without_update=tally.finished_without_update | refused,
    )
