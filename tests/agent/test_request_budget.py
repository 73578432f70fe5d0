"""The hub API's request budget per cluster per round, for the hub manager and each agent.

A fleet of hundreds of clusters makes every request per cluster per round count: a job of
5 clusters x 3 rounds runs with the real hub manager and agents, and every request they
make to the hub's API server while it runs is counted by identity. The manager's requests
in a cluster's namespace (its round-spec ManifestWork, its withdrawal) are the per-cluster
cost; the job's own (coalesced status writes, Events) are a per-round cost that does not
grow with the clusters. Watches are excluded (an informer holds one open per resource,
however many clusters and rounds).

Each agent's requests to the hub and to its own cluster together are counted too: a
round's Job, its report and the deletion of the round's Job before it, at most
AGENT_BUDGET per cluster per round. A
watch counts once per (re)connection that ended in the run. The time-driven requests (the
health Lease's renewals, the catalogue poll) are not a round's cost and are held to their
own bound: one request per renewal, none for a poll that finds nothing changed.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import AGENT_SPOKE_USER, Sandbox
from hub_manager.round_driver import coalesce_interval
from tests.agent.harness import TRAIN, AgentCluster, start_agent
from tests.hub import helpers as h

pytestmark = pytest.mark.slow

CLUSTERS = 5
ROUNDS = 3
HUB_BUDGET = 2.0  # requests per cluster per round, in the cluster's namespace
# The job's own requests, whatever the clusters: per round, its start, the result's record
# and its publication (status) and two Events; per job, its set-up and end (finalizer,
# binding, Placement, first and last status, an Event); and, while reports come in, at most
# one status write per coalescing interval.
HUB_PER_ROUND = 5
HUB_PER_JOB = 6
AGENT_BUDGET = 3.0  # requests per round of each agent, to the hub and its cluster together
AGENT_PER_JOB = 1  # each agent's, per job: its round condition cleared when the job ends


async def test_requests_per_cluster_per_round_stay_in_budget(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=CLUSTERS, agents=True) as sb, h.manager(sb) as running:
        assert sb.hub is not None
        log = sb.hub.request_log
        await wait_for(
            lambda: len(sb.running_agents()) == CLUSTERS, timeout=30, message="agents running"
        )

        def granted() -> bool:  # the manager's per-cluster set-up is not a round's cost
            bindings = [
                rec
                for rec in log
                if rec.user == h.MANAGER_USER
                and rec.resource == "rolebindings"
                and rec.verb == "patch"
                and rec.status < 300
            ]
            return len(bindings) >= CLUSTERS

        await wait_for(granted, timeout=30, message="the agents' hub RBAC granted")
        spoke_start = {name: len(sb.spokes[name].request_log) for name in sb.cluster_names}
        start = len(log)
        started = time.monotonic()
        await h.create_job(
            sb,
            "budget",
            rounds=ROUNDS,
            min_available=CLUSTERS,
            timeout="60s",
            client={"command": ["python", "-c", TRAIN], "args": ["ok"], "dataset": "digits"},
        )
        status = await h.wait_status(
            sb, "budget", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=120
        )
        assert status["phase"] == "Completed", status
        elapsed = time.monotonic() - started
        uid = (await h.get_job(sb, "budget"))["metadata"]["uid"]

        async def withdrawn() -> bool:
            return not await h.works_of(sb, uid)

        await wait_for(withdrawn, timeout=30, message="round-spec ManifestWorks withdrawn")
        requests = [rec for rec in log[start:] if rec.verb != "watch"]
        manager = [rec for rec in requests if rec.user == h.MANAGER_USER]
        agents = [rec for rec in requests if ":addon:federated-learning:agent:" in rec.user]
        on_spokes = [
            rec
            for name in sb.cluster_names
            for rec in sb.spokes[name].request_log[spoke_start[name] :]
            if rec.user == AGENT_SPOKE_USER
        ]
        agent_watches = [
            rec
            for rec in log[start:]
            if rec.verb == "watch" and ":addon:federated-learning:agent:" in rec.user
        ]
        # What the manager asks per cluster (in the cluster namespaces), and per job.
        per_cluster = [rec for rec in manager if _namespace(rec.path) in sb.cluster_names]
        per_job = [rec for rec in manager if rec not in per_cluster]
        cluster_rounds = CLUSTERS * ROUNDS
        print(
            f"\nhub API requests: manager {len(per_cluster) / cluster_rounds:.2f} per cluster "
            f"per round {dict(_kinds(per_cluster))} and {len(per_job) / ROUNDS:.2f} per round "
            f"{dict(_kinds(per_job))} in {elapsed:.1f}s; agents {len(agents) / cluster_rounds:.2f} per cluster "
            f"per round {dict(_kinds(agents))}"
        )
        assert len(per_cluster) <= HUB_BUDGET * cluster_rounds, _kinds(per_cluster)
        # At most one round-spec write per participant per round, and no reads: what either
        # side needs to know comes from its watches.
        applies = [r for r in per_cluster if (r.verb, r.resource) == ("patch", "manifestworks")]
        assert len(applies) <= cluster_rounds, _kinds(per_cluster)
        assert [rec.path for rec in manager if rec.verb in ("get", "list")] == []
        # An agent reads its add-on only to redo a status write another writer beat (409).
        reads = [rec.path for rec in agents if rec.verb in ("get", "list")]
        conflicts = [rec for rec in agents if rec.verb == "patch" and rec.status == 409]
        assert len(reads) <= len(conflicts), (reads, len(conflicts))
        coalesce = coalesce_interval(running.settings.status_coalesce_seconds, CLUSTERS)
        assert len(per_job) <= HUB_PER_ROUND * ROUNDS + HUB_PER_JOB + elapsed / coalesce, (
            elapsed,
            _kinds(per_job),
        )
        # Each agent, to the hub and to its own cluster: the round's Job, its report and
        # the earlier round's Job deleted. The health Lease and the catalogue poll run on a
        # clock, not per round (test_timed_requests_ask_only_what_changed holds them).
        per_round = [rec for rec in on_spokes if not _timed(rec)] + agents + agent_watches
        print(
            f"agents, hub and own cluster: {len(per_round) / cluster_rounds:.2f} per cluster "
            f"per round {dict(_kinds(per_round))}"
        )
        budget = AGENT_BUDGET * cluster_rounds + AGENT_PER_JOB * CLUSTERS
        assert len(per_round) <= budget, _kinds(per_round)


async def test_timed_requests_ask_only_what_changed(
    sandbox: Sandbox, agent_cluster: AgentCluster
) -> None:
    """A Lease renewal is one write (no read before it), and a catalogue poll that finds
    the file unchanged asks the cluster nothing till the claims' recheck period."""
    spoke_log = sandbox.spokes[agent_cluster.name].request_log
    running = await start_agent(
        sandbox,
        agent_cluster.name,
        datasets=agent_cluster.datasets,
        kubeconfig=str(sandbox.agent_spoke_kubeconfig(agent_cluster.name)),
        lease_renew_seconds=0.05,
        catalogue_poll_seconds=0.02,
        resync_seconds=600.0,
    )
    try:
        agent = running.agent
        await wait_for(agent.claims.synced.is_set, timeout=30, message="claims published")
        await wait_for(lambda: agent.lease.renewals >= 2, timeout=30, message="lease created")
        await wait_for(
            lambda: agent.claims.cleanup.has_synced, timeout=30, message="cleanup Job watched"
        )
        start, renewed = len(spoke_log), agent.lease.renewals
        await wait_for(
            lambda: agent.lease.renewals >= renewed + 10, timeout=30, message="10 renewals"
        )
        asked = [rec for rec in spoke_log[start:] if rec.user == AGENT_SPOKE_USER]
        leases = [rec.verb for rec in asked if rec.resource == "leases"]
        assert len(leases) >= 10, _kinds(asked)
        assert set(leases) == {"patch"}, _kinds(asked)
        assert [rec for rec in asked if rec.resource == "clusterclaims"] == [], _kinds(asked)
        # Whether the add-on is being removed (its cleanup Job) comes from a watch.
        assert [rec for rec in asked if rec.verb == "get"] == [], _kinds(asked)
    finally:
        await running.stop()


def _timed(rec: Any) -> bool:
    """The Lease's renewals and the catalogue poll's claims."""
    return bool(rec.resource in ("leases", "clusterclaims"))


def _namespace(path: str) -> str | None:
    parts = path.split("/")
    return parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-1] else None


def _kinds(records: list[Any]) -> Counter[str]:
    return Counter(f"{rec.verb} {rec.resource}" for rec in records)
