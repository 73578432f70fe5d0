"""The hub manager with a round of 60 clusters (add-ons registered on the hub only, as the
hub sees a fleet): a burst of reports costs a bounded number of status writes (per-cluster
progress is coalesced), the status lists 50 participants and names all 60, and the manager
lists and watches the fleet's add-ons once, its own only."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import RoundReport
from fl_kube import KubeApi
from fl_kube import resources as r
from fl_sandbox.sandbox import Sandbox
from hub_manager import status as st
from tests.hub import helpers as h

FLEET = 60
BURST = 50


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def register(hub: KubeApi, cluster: str) -> None:
    """A cluster as the hub knows it: accepted, with the add-on Available."""
    await hub.create(
        r.MANAGED_CLUSTER, {"metadata": {"name": cluster}, "spec": {"hubAcceptsClient": True}}
    )
    await hub.create(r.NAMESPACE, {"metadata": {"name": cluster}})
    addon = await hub.create(
        r.MANAGED_CLUSTER_ADDON,
        {"metadata": {"name": keys.ADDON_NAME, "namespace": cluster}, "spec": {}},
        namespace=cluster,
    )
    addon["status"] = {
        "namespace": "open-cluster-management-agent-addon",
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "ProbeAvailable",
                "message": "the agent renews its lease",
                "lastTransitionTime": _now(),
            }
        ],
    }
    await hub.replace(r.MANAGED_CLUSTER_ADDON, addon, subresource="status")


async def report_training(hub: KubeApi, cluster: str, job: dict[str, Any]) -> None:
    report = RoundReport(
        job_uid=job["metadata"]["uid"], cluster=cluster, round=1, attempt=1, state="Training"
    )
    addon = await hub.get(r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=cluster)
    addon["status"]["conditions"].append(
        {
            "type": naming.round_condition_type("team-a", "burst"),
            "status": "Unknown",
            "reason": "Training",
            "message": report.to_message(),
            "lastTransitionTime": _now(),
        }
    )
    await hub.replace(r.MANAGED_CLUSTER_ADDON, addon, subresource="status")


async def test_a_burst_of_50_reports_costs_a_bounded_number_of_status_writes(
    sandbox: Sandbox,
) -> None:
    fleet = [f"edge-{i:02d}" for i in range(FLEET)]
    hub = h.hub(sandbox)
    await asyncio.gather(*(register(hub, c) for c in fleet))
    assert sandbox.hub is not None
    log = sandbox.hub.request_log
    async with h.manager(sandbox) as running:
        job = await h.create_job(sandbox, "burst", rounds=1, min_available=FLEET, timeout="120s")
        status = await h.wait_status(sandbox, "burst", h.in_round(1), timeout=30)
        assert st.round_participants(status) == tuple(fleet)
        assert len(status["participants"]) == st.MAX_LISTED_PARTICIPANTS
        assert status["participantSummary"] == {
            "total": FLEET,
            "listed": st.MAX_LISTED_PARTICIPANTS,
            "states": {"Pending": FLEET},
        }

        def status_writes() -> int:
            return sum(
                1
                for rec in log
                if rec.user == h.MANAGER_USER
                and rec.resource == "federatedlearnings"
                and rec.path.endswith("/status")
                and rec.verb in ("update", "patch")
            )

        before = status_writes()
        started = time.monotonic()
        for cluster in fleet[:BURST]:  # one after another, as fast as the API takes them
            await report_training(hub, cluster, job)
        status = await h.wait_status(
            sandbox,
            "burst",
            lambda s: (
                (s.get("participantSummary") or {}).get("states", {}).get("Training") == BURST
            ),
            timeout=30,
            message="every report in the status",
        )
        writes = status_writes() - before
        elapsed = time.monotonic() - started
        print(f"\nstatus writes for {BURST} reports in {elapsed:.1f}s: {writes}")
        # One write at the first report, then at most one per coalescing interval.
        assert writes <= 2 + elapsed / running.settings.status_coalesce_seconds, writes
        # The manager lists and watches add-ons once for the fleet, only its own by name.
        addon_reads = [
            rec
            for rec in log
            if rec.user == h.MANAGER_USER
            and rec.resource == "managedclusteraddons"
            and rec.verb in ("list", "watch", "get")
        ]
        assert addon_reads
        for rec in addon_reads:
            assert rec.verb in ("list", "watch"), rec
            assert "/namespaces/" not in rec.path, rec
            assert f"fieldSelector=metadata.name%3D{keys.ADDON_NAME}" in rec.query, rec
        # The capped list shows those still going before those done; all 60 still named.
        assert status["participantSummary"]["states"] == {"Pending": 10, "Training": BURST}
        assert st.round_participants(status) == tuple(fleet)


async def test_each_published_round_leaves_its_record_in_the_store(sandbox: Sandbox) -> None:
    """The record keeps every participant's state and why (the status may list only some)."""
    async with h.manager(sandbox):
        cs = await h.clusters(sandbox)
        try:
            job = await h.create_job(sandbox, "recorded", rounds=1, min_available=2, min_fit=1)
            uid = job["metadata"]["uid"]
            spec1 = await cs["cluster1"].wait_spec(uid, round_number=1)
            spec2 = await cs["cluster2"].wait_spec(uid, round_number=1)
            await cs["cluster2"].fail(spec2, "no rows", reason="DatasetNotFound")
            await cs["cluster1"].train(spec1)
            status = await h.wait_status(sandbox, "recorded", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
    uri = status["roundRecord"]
    assert uri == (sandbox.model_store_dir / "team-a/recorded/records/round-1.json").as_uri()
    record = json.loads(
        (sandbox.model_store_dir / "team-a/recorded/records/round-1.json").read_text()
    )
    assert (record["round"], record["attempt"]) == (1, 1)
    assert [(p["cluster"], p["state"], p.get("reason")) for p in record["participants"]] == [
        ("cluster1", "Accepted", None),
        ("cluster2", "Failed", "DatasetNotFound"),
    ]
    assert record["participantSummary"]["states"] == {"Accepted": 1, "Failed": 1}
    assert status["history"][-1]["participants"] == 2
