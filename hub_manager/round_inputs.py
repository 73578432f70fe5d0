"""The inputs of a round decision: the agents' reports, folded into the round session.

Reports are read from the ManagedClusterAddOn conditions in the informer cache; updates of
the current round attempt are verified and folded once per session; reports that arrive
after their round closed, or that cannot be read, are recorded (once) with a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from fl_contract import naming
from fl_contract.models import ModelRef, RoundReport
from fl_kube.timestamps import format_time, parse_time
from hub_manager import privacy as hub_privacy
from hub_manager import rounds
from hub_manager import status as st
from hub_manager.aggregation import RoundSession, new_session
from hub_manager.crd_spec import FederatedLearningSpec
from hub_manager.job_runtime import JobRuntime, build_strategy, load_weights, model_ref
from hub_manager.metrics import HubMetrics
from hub_manager.reports import (
    AddonView,
    DatasetSize,
    ReportView,
    published_size,
    read_report,
)
from hub_manager.secure_rounds import SecureSession

# A secure round's weight bound when no participant publishes its dataset's size: weights
# are quantised as a share of it, so it costs precision when far above the real counts.
DEFAULT_MAX_WEIGHT = 100_000.0


class ReportCollector:
    def __init__(
        self,
        *,
        addon: Callable[[str], AddonView],
        metrics: HubMetrics,
        managed_cluster: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> None:
        self._addon = addon
        self._metrics = metrics
        self._managed_cluster = managed_cluster or (lambda _cluster: None)
        # (namespace, name, cluster) -> (the add-on view read, its report): a report is
        # parsed once per change of the cluster's add-on, not once per pass.
        self._read: dict[tuple[str, str, str], tuple[AddonView, ReportView | None]] = {}

    def _report(self, cluster: str, namespace: str, name: str) -> ReportView | None:
        addon = self._addon(cluster)
        slot = (namespace, name, cluster)
        known = self._read.get(slot)
        if known is not None and known[0] is addon:
            return known[1]
        view = read_report(addon, fl_namespace=namespace, fl_name=name)
        self._read[slot] = (addon, view)
        return view

    def forget(self, namespace: str, name: str) -> None:
        """Drop what was read for a job that is gone."""
        for slot in [s for s in self._read if s[:2] == (namespace, name)]:
            del self._read[slot]

    def max_weight(self, participants: Iterable[str], dataset: str | None) -> float:
        """The largest weight a secure round's participant may have: the most samples any
        of them publishes for the job's dataset (DEFAULT_MAX_WEIGHT when none does)."""
        sizes = [
            size.samples
            for cluster in participants
            if dataset is not None
            and (size := published_size(self._managed_cluster(cluster), dataset)) is not None
        ]
        return float(max(sizes)) if sizes and max(sizes) > 0 else DEFAULT_MAX_WEIGHT

    async def collect(
        self,
        obj: dict[str, Any],
        runtime: JobRuntime,
        status: dict[str, Any],
        now: datetime,
        *,
        selected: Iterable[str],
        available: Iterable[str] | None = None,
    ) -> rounds.Tally:
        """Fold in the reports of the current round attempt; record late and bad ones."""
        metadata = obj["metadata"]
        namespace, name, uid = (
            str(metadata["namespace"]),
            str(metadata["name"]),
            str(metadata["uid"]),
        )
        progress = st.progress_of(status)
        previous = status.get("previousRound") or {}
        previous_key = (int(previous.get("round") or 0), int(previous.get("attempt") or 0))
        previous_reported = set(previous.get("reported") or [])
        clusters = set(progress.participants) | set(selected)
        session = None
        if progress.in_round:
            session = await self.session(obj, runtime, status, progress)
        states: dict[str, st.ParticipantState] = {}
        rejected: list[dict[str, Any]] = []
        for cluster in sorted(clusters):
            view = self._report(cluster, namespace, name)
            if view is None:
                continue
            if view.report is None:
                if session is not None and cluster in progress.participants:
                    entry = _rejection(
                        cluster,
                        progress.round,
                        progress.attempt,
                        "InvalidReport",
                        view.error or "",
                        now,
                    )
                    if not _recorded(status, entry) and entry not in rejected:
                        rejected.append(entry)
                        self._metrics.update_rejected("InvalidReport")
                continue
            report = view.report
            if report.job_uid != uid:
                continue
            current = (report.round, report.attempt) == (progress.round, progress.attempt)
            if session is not None and current and cluster in progress.participants:
                outcome = await session.consider(cluster, report)
                duplicate = session.duplicate(cluster, report)
                for bad in (outcome, duplicate, *session.take_fold_rejections()):
                    if bad is None or bad.kind != "rejected":
                        continue
                    entry = _rejection(
                        bad.cluster, report.round, report.attempt, bad.reason, bad.message, now
                    )
                    if not _recorded(status, entry):
                        rejected.append(entry)
                if report.state == "Training" and cluster not in session.outcomes:
                    states[cluster] = st.ParticipantState("Training")
            elif (
                (report.round, report.attempt) == previous_key
                and report.state == "UpdateReady"
                and cluster not in previous_reported
            ):
                entry = _rejection(
                    cluster,
                    report.round,
                    report.attempt,
                    "Late",
                    "the update arrived after its round closed",
                    now,
                )
                if not _recorded(status, entry):
                    rejected.append(entry)
                    self._metrics.update_rejected("Late")
        if isinstance(session, SecureSession):
            await session.advance(
                status, now, available=set(available) if available is not None else None
            )
            for cluster in progress.participants:
                stage_state = session.state_of(cluster)
                if stage_state is not None:
                    states[cluster] = stage_state
        if rejected:
            st.append_bounded(status, "rejectedUpdates", rejected, limit=st.MAX_REJECTED)
        if session is None:
            return rounds.Tally()
        for cluster, outcome in session.outcomes.items():
            state = {"accepted": "Accepted", "rejected": "Rejected", "failed": "Failed"}[
                outcome.kind
            ]
            states[cluster] = st.ParticipantState(
                state,
                outcome.reason,
                outcome.num_examples,
                outcome.message,
                epsilon=outcome.privacy.epsilon if outcome.privacy is not None else None,
            )
        kept = runtime.states_for(progress.round, progress.attempt)
        kept.clear()
        kept.update(states)
        st.set_participants(status, progress.participants, states)
        return rounds.Tally(
            accepted=session.accepted(), finished_without_update=session.finished_without_update()
        )

    async def session(
        self,
        obj: dict[str, Any],
        runtime: JobRuntime,
        status: dict[str, Any],
        progress: rounds.Progress,
    ) -> RoundSession | SecureSession:
        uid = str(obj["metadata"]["uid"])
        session = runtime.session
        if session is not None and session.key() == (uid, progress.round, progress.attempt):
            return session
        await self._prepare_strategy(obj, runtime, status, progress.round)
        if runtime.spec.privacy.secure is not None:
            runtime.session = SecureSession(
                job_uid=uid,
                namespace=str(obj["metadata"]["namespace"]),
                job=str(obj["metadata"]["name"]),
                round_number=progress.round,
                attempt=progress.attempt,
                participants=progress.participants,
                strategy=runtime.strategy,
                global_weights=runtime.global_weights,
                store=runtime.store,
                metrics=self._metrics,
                started=parse_time(status.get("roundStartTime"))
                or _deadline(progress) - runtime.spec.server.round_timeout,
                timeout=runtime.spec.server.round_timeout,
            )
            return runtime.session
        expected = {
            cluster: update_uri(obj, runtime, progress=progress, cluster=cluster)
            for cluster in progress.participants
        }
        dataset = runtime.spec.client.dataset

        def published_samples(cluster: str) -> DatasetSize | None:
            if dataset is None:
                return None
            return published_size(self._managed_cluster(cluster), dataset)

        privacy_status = {"privacy": st.clone(status).get("privacy") or {}}

        def check_privacy(cluster: str, report: RoundReport) -> tuple[str, str] | None:
            return hub_privacy.check_report(
                runtime.spec, privacy_status, cluster, report, self.samples(runtime.spec, cluster)
            )

        runtime.session = new_session(
            strategy=runtime.strategy,
            global_weights=runtime.global_weights,
            job_uid=uid,
            round_number=progress.round,
            attempt=progress.attempt,
            expected_uris=expected,
            store=runtime.store,
            metrics=self._metrics,
            published_samples=published_samples,
            check_privacy=check_privacy,
        )
        return runtime.session

    def samples(self, spec: FederatedLearningSpec, cluster: str) -> int | None:
        """The sample count `cluster` publishes for the job's dataset (None: none)."""
        if spec.client.dataset is None:
            return None
        size = published_size(self._managed_cluster(cluster), spec.client.dataset)
        return size.samples if size is not None else None

    async def _prepare_strategy(
        self, obj: dict[str, Any], runtime: JobRuntime, status: dict[str, Any], round_number: int
    ) -> None:
        """Bring the strategy and the global weights to the start of `round_number`."""
        before = round_number - 1
        saved = status.get("serverState") or {}
        if runtime.strategy_round != before:
            runtime.strategy = build_strategy(runtime.spec)
            ref = model_ref(saved)
            if ref is not None and int(saved.get("round") or 0) == before:
                runtime.strategy.load_server_state(await load_weights(runtime.store, ref))
            runtime.strategy_round = before
        if runtime.global_round != before:
            ref = global_model(obj, status, round_number)
            runtime.global_weights = await load_weights(runtime.store, ref) if ref else None
            runtime.global_round = before


def _deadline(progress: rounds.Progress) -> datetime:
    assert progress.deadline is not None  # an open round always has one
    return progress.deadline


def global_model(obj: dict[str, Any], status: dict[str, Any], round_number: int) -> ModelRef | None:
    """The global model round `round_number` starts from (None: clients use the seed)."""
    model = status.get("model") or {}
    if round_number > 1 and int(model.get("round") or 0) == round_number - 1:
        return model_ref(model)
    if round_number == 1:
        initial = ((obj.get("spec") or {}).get("server") or {}).get("initialModel")
        return model_ref(initial)
    return None


def update_uri(
    obj: dict[str, Any], runtime: JobRuntime, *, progress: rounds.Progress, cluster: str
) -> str:
    """Where `cluster` writes its update for the round attempt in progress."""
    return runtime.store.uri_for(
        naming.update_key(
            namespace=str(obj["metadata"]["namespace"]),
            job=str(obj["metadata"]["name"]),
            round_number=progress.round,
            cluster=cluster,
            attempt=progress.attempt,
        )
    )


# -- rounds --------------------------------------------------------------------------


def _rejection(
    cluster: str, round_number: int, attempt: int, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "round": round_number,
        "attempt": attempt,
        "reason": reason,
        "message": message[: st.MAX_PARTICIPANT_MESSAGE],
        "time": format_time(now),
    }


def _recorded(status: dict[str, Any], entry: dict[str, Any]) -> bool:
    return any(
        all(old.get(k) == entry[k] for k in ("cluster", "round", "attempt", "reason"))
        for old in status.get("rejectedUpdates") or []
    )
