"""The hub manager with the real spoke agents, Job runner and training runtime: the digits
job end to end in the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

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
        writes = [
            rec
            for rec in sb.hub.request_log
            if rec.user == h.MANAGER_USER and rec.method in ("POST", "PUT", "PATCH", "DELETE")
        ]
        # From the first round spec sent to the last one withdrawn.
        first = next(i for i, rec in enumerate(writes) if "/manifestworks/" in rec.path)
        last = max(i for i, rec in enumerate(writes) if "/manifestworks/" in rec.path)
        per_cluster_round = (last - first + 1) / (2 * 2)
        print(f"\nmanager writes with real agents: {per_cluster_round:.2f} per cluster per round")
        assert per_cluster_round <= 3
