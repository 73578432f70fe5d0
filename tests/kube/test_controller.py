"""Controller behaviour without a server: concurrency, retries, terminal errors, requeues."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from fl_kube.backoff import BackoffPolicy, RateLimiter
from fl_kube.controller import Controller, Result, TemporaryError, TerminalError
from fl_kube.errors import Conflict, ServerError
from fl_kube.metrics import RECONCILE_RESULTS, ControllerMetrics
from fl_kube.waiting import wait_for

FAST = BackoffPolicy(base=0.001, cap=0.05, jitter=0.1)


@contextlib.asynccontextmanager
async def running(controller: Controller[str]) -> AsyncIterator[None]:
    task = asyncio.create_task(controller.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(
    reconcile: object, *, workers: int = 4, registry: CollectorRegistry | None = None
) -> Controller[str]:
    metrics = ControllerMetrics(registry or CollectorRegistry())
    return Controller(
        "test",
        reconcile,  # type: ignore[arg-type]
        workers=workers,
        metrics=metrics,
        rate_limiter=RateLimiter(FAST),
    )


async def test_one_worker_per_key_many_keys_in_parallel() -> None:
    active: Counter[str] = Counter()
    max_per_key: Counter[str] = Counter()
    max_total = 0
    calls: Counter[str] = Counter()
    release = asyncio.Event()

    async def reconcile(key: str) -> None:
        nonlocal max_total
        active[key] += 1
        calls[key] += 1
        max_per_key[key] = max(max_per_key[key], active[key])
        max_total = max(max_total, sum(active.values()))
        await release.wait()
        active[key] -= 1

    controller = make(reconcile, workers=4)
    async with running(controller):
        for key in ["a", "b", "c"]:
            controller.enqueue(key)
        await wait_for(lambda: sum(active.values()) == 3, timeout=2)
        for _ in range(5):
            controller.enqueue("a")  # while "a" is running: one more run, later
        assert controller.queue.is_processing("a")
        assert len(controller.queue) == 0  # held back, not given to an idle worker
        assert active["a"] == 1
        release.set()
        await wait_for(controller.is_idle, timeout=2)
    assert max_total == 3
    assert max(max_per_key.values()) == 1
    assert calls == {"a": 2, "b": 1, "c": 1}


async def test_temporary_errors_retry_with_backoff_until_success() -> None:
    attempts: Counter[str] = Counter()

    async def reconcile(key: str) -> None:
        attempts[key] += 1
        if attempts[key] == 1:
            raise TemporaryError("not yet")
        if attempts[key] == 2:
            raise ServerError(503, "ServiceUnavailable", "busy")
        if attempts[key] == 3:
            raise Conflict(409, "Conflict", "stale")
        if attempts[key] == 4:
            raise RuntimeError("unexpected bug, still retried")

    registry = CollectorRegistry()
    controller = make(reconcile, registry=registry)
    async with running(controller):
        controller.enqueue("k")
        await wait_for(lambda: attempts["k"] == 5 and controller.is_idle(), timeout=5)
    assert controller.queue.num_requeues("k") == 0  # forgotten after the success
    labels = {"controller": "test"}
    assert registry.get_sample_value("controller_runtime_reconcile_errors_total", labels) == 4
    assert (
        registry.get_sample_value(
            "controller_runtime_reconcile_total", {**labels, "result": "success"}
        )
        == 1
    )


async def test_terminal_error_is_recorded_and_not_retried() -> None:
    attempts: Counter[str] = Counter()

    async def reconcile(key: str) -> None:
        attempts[key] += 1
        raise TerminalError("spec.rounds must be >= 1", reason="InvalidSpec")

    registry = CollectorRegistry()
    controller = make(reconcile, registry=registry)
    async with running(controller):
        controller.enqueue("bad")
        await wait_for(lambda: "bad" in controller.terminal_errors, timeout=2)
        await wait_for(controller.is_idle, timeout=2)
        assert attempts["bad"] == 1
        assert controller.terminal_errors["bad"].reason == "InvalidSpec"
        controller.enqueue("bad")  # the spec changed: try again
        await wait_for(lambda: attempts["bad"] == 2, timeout=2)
    assert (
        registry.get_sample_value(
            "controller_runtime_terminal_reconcile_errors_total", {"controller": "test"}
        )
        == 2
    )


async def test_requeue_after_schedules_another_look() -> None:
    seen: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> Result | None:
        seen.append(loop.time())
        return Result(requeue_after=0.1) if len(seen) < 3 else None

    controller = make(reconcile)
    async with running(controller):
        controller.enqueue("k")
        await wait_for(lambda: len(seen) == 3 and controller.is_idle(), timeout=3)
    assert seen[1] - seen[0] >= 0.09
    assert seen[2] - seen[1] >= 0.09


async def test_retry_after_of_a_temporary_error_is_a_minimum_delay() -> None:
    seen: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> None:
        seen.append(loop.time())
        if len(seen) == 1:
            raise TemporaryError("throttled", retry_after=0.2)

    controller = make(reconcile)
    async with running(controller):
        controller.enqueue("k")
        await wait_for(lambda: len(seen) == 2, timeout=3)
    assert seen[1] - seen[0] >= 0.19


async def test_series_are_pre_registered_and_names_are_unique() -> None:
    registry = CollectorRegistry()

    async def reconcile(key: str) -> None:
        return None

    metrics = ControllerMetrics(registry)
    Controller("alpha", reconcile, workers=3, metrics=metrics)
    for result in RECONCILE_RESULTS:
        labels = {"controller": "alpha", "result": result}
        assert registry.get_sample_value("controller_runtime_reconcile_total", labels) == 0
    assert (
        registry.get_sample_value(
            "controller_runtime_max_concurrent_reconciles", {"controller": "alpha"}
        )
        == 3
    )
    assert registry.get_sample_value("workqueue_depth", {"name": "alpha"}) == 0
    with pytest.raises(ValueError, match="already registered"):
        Controller("alpha", reconcile, metrics=metrics)


async def test_cancelling_run_stops_workers_mid_reconcile() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def reconcile(key: str) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    controller = make(reconcile)
    task = asyncio.create_task(controller.run())
    controller.enqueue("k")
    await asyncio.wait_for(started.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    assert controller.queue.shutting_down


async def test_a_stopped_controller_frees_its_name_for_the_next_term() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    done = asyncio.Event()

    async def reconcile(key: str) -> None:
        done.set()

    first = Controller("term", reconcile, metrics=metrics)
    task = asyncio.create_task(first.run())
    first.enqueue("a")
    await asyncio.wait_for(done.wait(), timeout=5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    second = Controller("term", reconcile, metrics=metrics)
    labels = {"controller": "term", "result": "success"}
    assert registry.get_sample_value("controller_runtime_reconcile_total", labels) == 1
    assert second.name == "term"
