"""Leader election over a Lease on the emulated API server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypedDict

import pytest

from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.leader import LeaderElector, micro_time
from fl_kube.waiting import wait_for
from fl_sandbox.apiserver import ApiServer

from .conftest import ApiFactory


class Timing(TypedDict):
    lease_duration: float
    renew_deadline: float
    retry_period: float


TIMING = Timing(lease_duration=1.0, renew_deadline=0.6, retry_period=0.1)


class Leadership:
    """Records who leads, and fails the test if two ever lead at once."""

    def __init__(self) -> None:
        self.current: set[str] = set()
        self.max_concurrent = 0
        self.history: list[str] = []
        self.cancelled: list[str] = []

    def lead(self, identity: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            self.current.add(identity)
            self.history.append(identity)
            self.max_concurrent = max(self.max_concurrent, len(self.current))
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(identity)
                raise
            finally:
                self.current.discard(identity)

        return run


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_one_leader_and_clean_handover(api_factory: ApiFactory) -> None:
    leadership = Leadership()
    reader = await api_factory()
    # A long lease: a successor that starts well before it could expire proves the release.
    slow = Timing(lease_duration=6.0, renew_deadline=4.0, retry_period=0.1)
    electors = {
        name: LeaderElector(
            await api_factory(), namespace="default", name="hub", identity=name, **slow
        )
        for name in ("a", "b", "c")
    }
    tasks = {
        name: asyncio.create_task(elector.run(leadership.lead(name)))
        for name, elector in electors.items()
    }
    try:
        await wait_for(lambda: len(leadership.history) == 1, timeout=5)
        first = leadership.history[0]
        assert electors[first].is_leader
        assert sum(e.is_leader for e in electors.values()) == 1
        lease = await reader.get(r.LEASE, "hub", namespace="default")
        assert lease["spec"]["holderIdentity"] == first

        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        await _stop(tasks.pop(first))  # a clean stop releases the lease at once
        await wait_for(lambda: len(leadership.history) == 2, timeout=5)
        # Released, so the successor did not wait for the 6 s lease to expire.
        assert loop.time() - stopped_at < 4.0
        assert leadership.history[1] != first
        assert leadership.max_concurrent == 1
    finally:
        for task in tasks.values():
            await _stop(task)
    assert leadership.max_concurrent == 1


async def test_leader_that_cannot_renew_steps_down_before_successor_starts(
    api_factory: ApiFactory,
) -> None:
    leadership = Leadership()
    first_api = await api_factory()
    first = LeaderElector(first_api, namespace="default", name="hub", identity="first", **TIMING)
    second = LeaderElector(
        await api_factory(), namespace="default", name="hub", identity="second", **TIMING
    )
    first_task = asyncio.create_task(first.run(leadership.lead("first")))
    await wait_for(lambda: first.is_leader, timeout=5)
    second_task = asyncio.create_task(second.run(leadership.lead("second")))
    try:
        await first_api.close()  # the leader loses its connection: renewals fail
        await wait_for(lambda: "first" in leadership.cancelled, timeout=5)
        assert not first.is_leader
        await wait_for(lambda: second.is_leader, timeout=5)
        assert leadership.history == ["first", "second"]
        assert leadership.max_concurrent == 1
    finally:
        await _stop(first_task)
        await _stop(second_task)


async def test_takes_over_an_expired_lease_and_counts_the_transition(
    api_factory: ApiFactory,
) -> None:
    api = await api_factory()
    await api.create(
        r.LEASE,
        {
            "metadata": {"name": "hub"},
            "spec": {
                "holderIdentity": "ghost",
                "leaseDurationSeconds": 1,
                "renewTime": micro_time(),
                "leaseTransitions": 3,
            },
        },
        namespace="default",
    )
    leadership = Leadership()
    elector = LeaderElector(api, namespace="default", name="hub", identity="me", **TIMING)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(elector.run(leadership.lead("me")))
    try:
        await wait_for(lambda: elector.is_leader, timeout=5)
        # The ghost's lease had to expire first (1 s after it was first seen).
        assert loop.time() - started >= 0.9
        lease = await api.get(r.LEASE, "hub", namespace="default")
        assert lease["spec"]["holderIdentity"] == "me"
        assert lease["spec"]["leaseTransitions"] == 4
    finally:
        await _stop(task)
    released = await api.get(r.LEASE, "hub", namespace="default")
    assert released["spec"]["holderIdentity"] in ("", None)
    assert released["spec"]["leaseDurationSeconds"] == 1


async def test_concurrent_candidates_race_on_create_and_update(
    api_factory: ApiFactory, server: ApiServer
) -> None:
    """Many simultaneous candidates: 409s decide the races, never two winners."""
    leadership = Leadership()
    electors = [
        LeaderElector(
            await api_factory(), namespace="default", name="race", identity=f"c{i}", **TIMING
        )
        for i in range(6)
    ]
    tasks = [asyncio.create_task(e.run(leadership.lead(e.identity))) for e in electors]
    try:
        await wait_for(lambda: leadership.history, timeout=5)
        await wait_for(
            lambda: any(
                rec.status == 409 and rec.resource == "leases" for rec in server.request_log
            ),
            timeout=5,
        )
        assert leadership.max_concurrent == 1
        assert sum(e.is_leader for e in electors) == 1
    finally:
        for task in tasks:
            await _stop(task)
    assert leadership.max_concurrent == 1


async def test_lead_returning_releases_and_returns(api_factory: ApiFactory) -> None:
    api = await api_factory()
    elector = LeaderElector(api, namespace="default", name="once", identity="me", **TIMING)
    ran = asyncio.Event()

    async def lead() -> None:
        ran.set()

    await asyncio.wait_for(elector.run(lead), 5)
    assert ran.is_set()
    assert not elector.is_leader
    lease = await api.get(r.LEASE, "once", namespace="default")
    assert not lease["spec"].get("holderIdentity")


def test_rejects_inconsistent_timings() -> None:
    with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
        LeaderElector(
            None,  # type: ignore[arg-type]
            namespace="x",
            name="y",
            identity="z",
            lease_duration=1,
            renew_deadline=2,
        )


async def test_an_unreachable_api_is_retried_with_backoff_and_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No API server on the port: attempts space out exponentially, each one WARNING line;
    once a server answers there again, the candidate takes the Lease."""
    down = ApiServer(name="down")
    await down.start()
    port = int(down.url.rsplit(":", 1)[1])
    kubeconfig = down.write_kubeconfig(tmp_path / "kubeconfig")
    await down.stop()
    api = await KubeApi.from_kubeconfig(kubeconfig, request_timeout=5)
    elector = LeaderElector(
        api,
        namespace="default",
        name="unreachable",
        identity="me",
        lease_duration=1.0,
        renew_deadline=0.6,
        retry_period=0.05,
    )
    leadership = Leadership()
    caplog.set_level(logging.INFO, logger="fl_kube.leader")
    task = asyncio.create_task(elector.run(leadership.lead("me")))
    up: ApiServer | None = None
    try:

        def retries() -> list[float]:
            return [
                float(m.group(1))
                for rec in caplog.records
                if (
                    m := re.search(
                        r"cannot acquire lease default/unreachable: .*; retrying in ([0-9.e+-]+)s$",
                        rec.getMessage(),
                    )
                )
            ]

        await wait_for(lambda: len(retries()) >= 4, timeout=10)
        delays = retries()
        assert all(later > earlier * 1.3 for earlier, later in itertools.pairwise(delays[:4]))
        leader_logs = [rec for rec in caplog.records if rec.name == "fl_kube.leader"]
        assert {rec.levelname for rec in leader_logs} == {"WARNING"}

        up = ApiServer(name="back")
        await up.start(port=port)
        up.write_kubeconfig(tmp_path / "unused.kubeconfig")
        await wait_for(lambda: leadership.history == ["me"], timeout=10)
    finally:
        await _stop(task)
        await api.close()
        if up is not None:
            await up.stop()
