"""WorkQueue semantics: de-duplication, one worker per key, delays, rate limiting."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from fl_kube.backoff import BackoffPolicy, RateLimiter
from fl_kube.metrics import ControllerMetrics
from fl_kube.waiting import wait_for
from fl_kube.workqueue import ShutDown, WorkQueue


async def test_duplicate_adds_are_collapsed_while_queued() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ["a", "b", "a", "a", "c", "b"]:
        queue.add(key)
    assert len(queue) == 3
    got = [await queue.get() for _ in range(3)]
    assert got == ["a", "b", "c"]


async def test_key_added_while_processing_is_requeued_on_done_not_handed_out() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # arrives while a worker holds "a"
    assert len(queue) == 0  # not handed to a second worker
    assert queue.is_processing("a")
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert queue.is_idle()


async def test_get_waits_for_an_add() -> None:
    queue: WorkQueue[int] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.add(7)
    assert await asyncio.wait_for(getter, 1) == 7


async def test_add_after_delays_and_the_earliest_wins() -> None:
    queue: WorkQueue[str] = WorkQueue()
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.add_after("a", 5.0)
    queue.add_after("a", 0.05)  # earlier: replaces the 5 s timer
    queue.add_after("a", 1.0)  # later: ignored
    assert len(queue) == 0
    assert await asyncio.wait_for(queue.get(), 2) == "a"
    assert 0.04 <= loop.time() - start < 1.0
    queue.done("a")
    assert queue.is_idle()


async def test_add_cancels_a_pending_delayed_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 10)
    queue.add("a")
    assert queue.pending_delayed() == 0
    assert await queue.get() == "a"


async def test_rate_limited_adds_back_off_per_key_until_forgotten() -> None:
    limiter: RateLimiter[str] = RateLimiter(BackoffPolicy(base=0.01, cap=1.0, jitter=0.0))
    queue: WorkQueue[str] = WorkQueue(rate_limiter=limiter)
    for _ in range(3):
        queue.add_rate_limited("a")
        key = await asyncio.wait_for(queue.get(), 2)
        queue.done(key)
    assert queue.num_requeues("a") == 3
    queue.forget("a")
    assert queue.num_requeues("a") == 0


async def test_events_about_other_objects_do_not_cut_a_failing_keys_backoff_short() -> None:
    limiter: RateLimiter[str] = RateLimiter(BackoffPolicy(base=30.0, cap=60.0, jitter=0.0))
    queue: WorkQueue[str] = WorkQueue(rate_limiter=limiter)
    queue.add_rate_limited("failing")  # a reconcile failed: retry in 30 s
    queue.add("failing", respect_backoff=True)  # a report about another object arrives
    assert len(queue) == 0
    assert queue.pending_delayed() == 1
    queue.add("fresh", respect_backoff=True)  # a key with no failures runs at once
    assert await queue.get() == "fresh"
    queue.add("failing")  # the key's own change (a spec edit) runs at once
    assert await queue.get() == "failing"
    assert queue.pending_delayed() == 0


async def test_shutdown_wakes_getters() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.shutdown()
    for getter in getters:
        with pytest.raises(ShutDown):
            await asyncio.wait_for(getter, 1)
    queue.add("late")
    assert len(queue) == 0


async def test_cancelled_getter_passes_the_wakeup_on() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    first.cancel()
    queue.add("a")
    assert await asyncio.wait_for(second, 1) == "a"


async def test_metrics_follow_the_queue() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    metrics.register_queue("q")
    now = [100.0]
    queue: WorkQueue[str] = WorkQueue(name="q", metrics=metrics, clock=lambda: now[0])

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"name": "q"})

    queue.add("a")
    queue.add("b")
    queue.add("a")
    assert sample("workqueue_depth") == 2
    assert sample("workqueue_adds_total") == 2
    now[0] = 101.5
    key = await queue.get()
    assert sample("workqueue_depth") == 1
    assert sample("workqueue_queue_duration_seconds_sum") == pytest.approx(1.5)
    now[0] = 104.0
    assert sample("workqueue_longest_running_processor_seconds") == pytest.approx(2.5)
    assert sample("workqueue_unfinished_work_seconds") == pytest.approx(2.5)
    queue.done(key)
    assert sample("workqueue_work_duration_seconds_count") == 1
    assert sample("workqueue_longest_running_processor_seconds") == 0
    queue.add_rate_limited("c")
    assert sample("workqueue_retries_total") == 1
    await wait_for(lambda: len(queue) == 2, timeout=2)
