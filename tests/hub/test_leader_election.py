"""Two manager replicas: only the Lease holder drives jobs; the other takes over when the
holder goes away, and the job still finishes with every round aggregated once."""

from __future__ import annotations

from typing import Any

from fl_kube import resources as r
from fl_kube.errors import Conflict
from fl_kube.waiting import wait_for
from tests.hub import helpers as h

WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _replica(sb: Any, user: str) -> h.RunningManager:
    kubeconfig = sb.workdir / f"{user}.kubeconfig"
    sb.hub.write_kubeconfig(kubeconfig, user=user, groups=("system:masters",))
    return h.start_manager(
        sb,
        kubeconfig=str(kubeconfig),
        identity=user,
        leader_election=True,
        lease_duration_seconds=2.0,
        renew_deadline_seconds=1.5,
        retry_period_seconds=0.2,
    )


def _job_writers(sb: Any) -> set[str]:
    return {
        rec.user
        for rec in sb.hub.request_log
        if rec.method in WRITES and "/federatedlearnings/" in rec.path
    }


async def test_one_leader_drives_and_a_standby_takes_over(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2) as sb:
        cs = await h.clusters(sb)
        first = _replica(sb, "replica-a")
        lease = await wait_for(
            lambda: h.hub(sb).get_or_none(
                r.LEASE, "federated-learning-hub-manager", namespace="open-cluster-management"
            ),
            timeout=10,
            message="lease taken",
        )
        assert lease["spec"]["holderIdentity"] == "replica-a"
        second = _replica(sb, "replica-b")
        try:
            job = await h.create_job(sb, "ha", rounds=2)
            uid = job["metadata"]["uid"]
            await h.train_round(cs, uid, 1)
            await h.wait_status(sb, "ha", lambda s: (s.get("model") or {}).get("round") == 1)
            assert _job_writers(sb) == {"replica-a"}

            await first.stop()  # releases the Lease; the standby takes over
            await h.train_round(cs, uid, 2)
            status = await h.wait_status(sb, "ha", h.phase_is("Completed"), timeout=30)
        finally:
            await first.stop()
            await second.stop()
            await h.close_clusters(cs)
        assert [e["round"] for e in status["history"]] == [1, 2]
        assert _job_writers(sb) == {"replica-a", "replica-b"}


async def test_lease_lost_and_regained_in_one_process(sandbox_factory: Any) -> None:
    """Another holder takes the Lease: the manager stops driving, then leads again (a new
    term with fresh controllers) once the Lease is free, and the job finishes."""
    async with sandbox_factory(clusters=2) as sb:
        cs = await h.clusters(sb)
        replica = _replica(sb, "replica-a")
        try:
            job = await h.create_job(sb, "term", rounds=2)
            uid = job["metadata"]["uid"]
            await h.train_round(cs, uid, 1)
            await h.wait_status(sb, "term", lambda s: (s.get("model") or {}).get("round") == 1)

            async def take_lease() -> bool:
                """Read, modify, write; the leader renews meanwhile, so a 409 retries."""
                lease = await h.hub(sb).get(
                    r.LEASE, "federated-learning-hub-manager", namespace="open-cluster-management"
                )
                lease["spec"]["holderIdentity"] = "intruder"
                lease["spec"]["leaseDurationSeconds"] = 1
                try:
                    await h.hub(sb).replace(r.LEASE, lease, namespace="open-cluster-management")
                except Conflict:
                    return False
                return True

            await wait_for(take_lease, timeout=10, message="the intruder takes the Lease")

            async def leading_again() -> bool:
                current = await h.hub(sb).get(
                    r.LEASE, "federated-learning-hub-manager", namespace="open-cluster-management"
                )
                return bool(current["spec"]["holderIdentity"] == "replica-a")

            await wait_for(leading_again, timeout=15, message="lease regained")
            await h.train_round(cs, uid, 2)
            status = await h.wait_status(sb, "term", h.phase_is("Completed"), timeout=30)
            assert not replica.task.done()
        finally:
            await replica.stop()
            await h.close_clusters(cs)
        assert [e["round"] for e in status["history"]] == [1, 2]
