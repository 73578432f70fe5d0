"""The hub manager with the real spoke agents, Job runner and training runtime: the digits
job end to end in the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from fl_kube.waiting import wait_for
from tests.hub import helpers as h

pytestmark = pytest.mark.slow


async def test_digits_with_real_agents(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=2, agents=True) as sb, h.manager(sb):
        await h.create_job(
            sb,
            "digits",
            rounds=2,
            min_available=2,
            timeout="60s",
            server={"evaluation": {"evaluator": "digits"}},
            client={
                "command": ["fl-train"],
                "args": ["--example", "digits"],
                "dataset": "digits",
                "trainingConfig": {"epochs": 1},
            },
            placement={
                "predicates": [
                    {
                        "requiredClusterSelector": {
                            "claimSelector": {
                                "matchExpressions": [
                                    {
                                        "key": "digits.dataset.federated-learning.io",
                                        "operator": "Exists",
                                    }
                                ]
                            }
                        }
                    }
                ]
            },
        )
        status = await h.wait_status(
            sb, "digits", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=90
        )
        assert status["phase"] == "Completed", status
        assert [e["round"] for e in status["history"]] == [1, 2]
        assert all(e["accepted"] == 2 for e in status["history"])
        assert status["history"][-1]["accuracy"] > 0.5
        uid = (await h.get_job(sb, "digits"))["metadata"]["uid"]

        async def withdrawn() -> bool:
            return not await h.works_of(sb, uid)

        await wait_for(withdrawn, timeout=30, message="round-spec ManifestWorks withdrawn")
        writes = [
            rec
            for rec in sb.hub.request_log
            if rec.user == h.MANAGER_USER and rec.method in ("POST", "PUT", "PATCH", "DELETE")
        ]
        # Exactly one round-spec apply per cluster per round and one withdrawal per cluster;
        # status writes are coalesced (their number depends on timing, so only bounded).
        works = [rec for rec in writes if "/manifestworks/" in rec.path]
        assert sum(rec.method == "PATCH" for rec in works) == 2 * 2, works
        assert {rec.path for rec in works if rec.method == "DELETE"} == {
            rec.path for rec in works if rec.method == "PATCH"
        }, works
        status_writes = [rec for rec in writes if rec.path.endswith("/status")]
        # Per round: start, at most one per report, aggregate, publish; plus set-up and end.
        assert len(status_writes) <= 2 * (2 + 3) + 3, status_writes
        per_cluster_round = (len(works) + len(status_writes)) / (2 * 2)
        print(f"\nmanager writes with real agents: {per_cluster_round:.2f} per cluster per round")
        assert_reads_come_from_caches(sb)


WATCHED_BY_MANAGER = {
    "federatedlearnings",
    "managedclusteraddons",
    "manifestworks",
    "placements",
    "placementdecisions",
    "roles",
    "rolebindings",
}


def assert_reads_come_from_caches(sb: Any) -> None:
    """Neither side GETs what it watches: the manager its jobs, works, add-ons and the agents'
    Roles and RoleBindings; an agent its ManagedClusterAddOn (but once after a 409)."""
    log = [rec for rec in sb.hub.request_log if rec.verb != "watch"]
    manager = [rec for rec in log if rec.user == h.MANAGER_USER]
    assert [
        rec.path for rec in manager if rec.verb == "get" and rec.resource in WATCHED_BY_MANAGER
    ] == []
    agents = [rec for rec in log if ":addon:federated-learning:agent:" in rec.user]
    addon_gets = [rec for rec in agents if rec.verb == "get"]
    conflicts = [rec for rec in agents if rec.status == 409]
    assert len(addon_gets) <= len(conflicts), [rec.path for rec in addon_gets]
    per = 2 * 2
    print(
        f"hub API requests per cluster per round: manager {len(manager) / per:.2f}, "
        f"agents {len(agents) / per:.2f}"
    )
