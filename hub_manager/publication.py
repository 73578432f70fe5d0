"""Publishing a round's result: recorded in the status first, then written to the store,
then made the job's global model; and finishing the job (Completed or Failed).

A restarted manager that finds a recorded result finishes its publication (if the write
happened) or aggregates again (if it did not): a round is never published twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fl_contract import naming
from fl_contract.weights import encode_weights, sha256_hex
from fl_kube.timestamps import format_time, parse_time
from hub_manager import privacy as hub_privacy
from hub_manager import retention, rounds
from hub_manager import status as st
from hub_manager.cleanup import JobCleaner
from hub_manager.job_runtime import JobRuntime, server_state_key
from hub_manager.metrics import HubMetrics

log = logging.getLogger(__name__)

Key = tuple[str, str]
WriteStatus = Callable[[Key, dict[str, Any], dict[str, Any]], Awaitable[dict[str, Any]]]


class Publisher:
    def __init__(
        self,
        *,
        write_status: WriteStatus,
        drop_runtime: Callable[[Key], Awaitable[None]],
        cleaner: JobCleaner,
        metrics: HubMetrics,
    ) -> None:
        self._write_status = write_status
        self._drop_runtime = drop_runtime
        self._cleaner = cleaner
        self._metrics = metrics

    async def aggregate(
        self,
        key: Key,
        obj: dict[str, Any],
        status: dict[str, Any],
        runtime: JobRuntime,
        decision: rounds.Aggregate,
        now: datetime,
    ) -> dict[str, Any]:
        """Record the result, write it, then publish it in the status."""
        session = runtime.session
        assert session is not None
        assert session.round == decision.round
        namespace, name = key
        try:
            result, weights = await session.result(evaluate=runtime.evaluate)
            state = runtime.strategy.server_state()
            pending: dict[str, Any] = {
                "round": decision.round,
                "attempt": decision.attempt,
                "uri": runtime.store.uri_for(
                    naming.model_key(namespace=namespace, job=name, round_number=decision.round)
                ),
                "sha256": result.sha256,
                "accepted": len(result.accepted),
                "rejected": sum(1 for o in session.outcomes.values() if o.kind != "accepted"),
                "numExamples": result.num_examples,
                "acceptedClusters": list(result.accepted),
                "reportedClusters": sorted(session.outcomes),
            }
            state_data = encode_weights(state) if state else None
            if state_data is not None:
                pending["serverStateUri"] = runtime.store.uri_for(
                    server_state_key(namespace=namespace, job=name, round_number=decision.round)
                )
                pending["serverStateSha256"] = sha256_hex(state_data)
            for metric in ("loss", "accuracy"):
                if metric in result.metrics:
                    pending[metric] = result.metrics[metric]
            spent = hub_privacy.pending_record(
                runtime.spec,
                status,
                {c: session.outcomes[c].privacy for c in result.accepted},
            )
            if spent is not None:
                pending["privacy"] = spent
            status["pendingModel"] = pending
            obj = await self._write_status(key, obj, status)
            if state_data is not None:
                await runtime.store.put_uri(pending["serverStateUri"], state_data)
            await runtime.store.put_uri(pending["uri"], result.data)
        except BaseException:
            # The session is closed and the strategy may have advanced: rebuild from scratch.
            await self._drop_runtime(key)
            raise
        runtime.global_weights = weights
        runtime.global_round = decision.round
        runtime.strategy_round = decision.round
        status = st.clone(obj.get("status"))
        return await self.finish_publication(key, obj, status, runtime, now)

    async def finish_publication(
        self,
        key: Key,
        obj: dict[str, Any],
        status: dict[str, Any],
        runtime: JobRuntime,
        now: datetime,
    ) -> dict[str, Any]:
        pending = dict(status.get("pendingModel") or {})
        generation = int(obj["metadata"].get("generation") or 0)
        round_number = int(pending["round"])
        if not await runtime.store.exists(str(pending["uri"])):
            # Recorded but never written (the manager stopped in between): aggregate again.
            status.pop("pendingModel", None)
            runtime.session = None
            return await self._write_status(key, obj, status)
        started = parse_time(status.get("roundStartTime"))
        duration = max((now - started).total_seconds(), 0.0) if started else 0.0
        entry: dict[str, Any] = {
            "round": round_number,
            "attempt": int(pending.get("attempt") or 1),
            "participants": len(status.get("participants") or []),
            "accepted": int(pending.get("accepted") or 0),
            "rejected": int(pending.get("rejected") or 0),
            "numExamples": int(pending.get("numExamples") or 0),
            "durationSeconds": round(duration, 3),
            "modelSha256": pending["sha256"],
            "completionTime": format_time(now),
        }
        metrics = {m: float(pending[m]) for m in ("loss", "accuracy") if m in pending}
        entry.update(metrics)
        failures = st.round_failures(status)
        if failures:
            entry["failures"] = failures
        hub_privacy.publish(runtime.spec, status, pending.get("privacy"))
        if "privacy" in status:
            entry["epsilon"] = float(status["privacy"].get("epsilon") or 0.0)
        st.append_bounded(status, "history", [entry], limit=st.MAX_HISTORY)
        status["model"] = {
            "round": round_number,
            "uri": pending["uri"],
            "sha256": pending["sha256"],
        }
        if pending.get("serverStateUri"):
            status["serverState"] = {
                "round": round_number,
                "uri": pending["serverStateUri"],
                "sha256": pending["serverStateSha256"],
            }
        status["previousRound"] = {
            "round": round_number,
            "attempt": int(pending.get("attempt") or 1),
            "reported": list(pending.get("reportedClusters") or []),
        }
        shown = st.display_metric(metrics)
        if shown:
            status["metric"] = shown
        status.pop("pendingModel", None)
        st.set_condition(
            status,
            type_=st.PROGRESSING,
            value=True,
            reason="RoundCompleted",
            message=(
                f"round {round_number} aggregated from {entry['accepted']} updates; "
                f"global model {pending['uri']}"
            ),
            generation=generation,
            now=now,
        )
        obj = await self._write_status(key, obj, status)
        namespace, name = key
        self._metrics.rounds_completed.labels(namespace=namespace, name=name).inc()
        self._metrics.round_duration.observe(duration)
        if "loss" in metrics:
            self._metrics.aggregated_loss.labels(namespace=namespace, name=name).set(
                metrics["loss"]
            )
        if "accuracy" in metrics:
            self._metrics.aggregated_accuracy.labels(namespace=namespace, name=name).set(
                metrics["accuracy"]
            )
        runtime.session = None
        log.info(
            "%s/%s: round %d published (%s) %s",
            namespace,
            name,
            round_number,
            pending["sha256"][:12],
            shown or "",
        )
        await retention.apply_after_publication(
            runtime.store, runtime.spec, namespace=namespace, job=name, published=round_number
        )
        return obj

    async def finish(
        self,
        key: Key,
        obj: dict[str, Any],
        status: dict[str, Any],
        now: datetime,
        *,
        failed: rounds.Fail | None,
        stopped: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Completed (`stopped`: early, with that reason and message) or Failed."""
        generation = int(obj["metadata"].get("generation") or 0)
        model = status.get("model") or {}
        if failed is None:
            message = (
                f"{model.get('round', 0)} rounds completed; final model {model.get('uri')} "
                f"(sha256 {model.get('sha256')})"
            )
            reason, value = "Completed", True
            if stopped is not None:
                reason, message = stopped[0], f"{stopped[1]}; {message}"
            st.set_phase(status, "Completed", message)
        else:
            message = failed.message
            st.set_phase(status, "Failed", message)
            reason, value = failed.reason, False
        status.setdefault("completionTime", format_time(now))
        for type_, cond_value in ((st.SUCCEEDED, value), (st.PROGRESSING, False)):
            st.set_condition(
                status,
                type_=type_,
                value=cond_value,
                reason=reason,
                message=message,
                generation=generation,
                now=now,
            )
        obj = await self._write_status(key, obj, status)
        await self._cleaner.remove_works(str(obj["metadata"]["uid"]))
        log.info("%s/%s: %s: %s", key[0], key[1], status["phase"], message)
        return obj
