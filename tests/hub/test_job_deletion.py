"""Deleting a finished job: its finalizer is released once, and a later pass on a cache that
has not yet seen the deletion finds nothing to do rather than an error."""

from __future__ import annotations

from typing import Any

from fl_kube import resources as r
from fl_kube.waiting import wait_for
from tests.hub import helpers as h

CONTROLLER = {"controller": "federatedlearning"}


async def test_deleting_a_completed_job_is_not_a_reconcile_error(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb, h.manager(sb) as running:
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "finished", rounds=1)
            uid = job["metadata"]["uid"]
            await h.train_round(cs, uid, 1)
            await h.wait_status(sb, "finished", h.phase_is("Completed"))
            registry = running.metrics.registry

            def sample(name: str, labels: dict[str, str]) -> float:
                return registry.get_sample_value(name, labels) or 0.0

            errors_before = sample("controller_runtime_reconcile_errors_total", CONTROLLER)
            await h.hub(sb).delete(r.FEDERATED_LEARNING, "finished", namespace="team-a")

            async def gone() -> bool:
                return not await h.exists(sb, r.FEDERATED_LEARNING, "finished", "team-a")

            await wait_for(gone, timeout=15, message="job deleted")
            # The manager's own count of jobs drops once a reconcile has run on a cache
            # without the job: every pass on the stale cache came before it.
            await wait_for(
                lambda: sample("federated_learning_jobs", {"phase": "Completed"}) == 0,
                timeout=15,
                message="the manager's cache without the job",
            )
            assert sample("controller_runtime_reconcile_errors_total", CONTROLLER) == errors_before
        finally:
            await h.close_clusters(cs)
