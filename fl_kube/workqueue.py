"""A work queue with client-go semantics, for asyncio.

- A key queued twice is processed once (de-duplicated while it waits).
- A key is never handed to two workers at once: adding a key that is being processed marks
  it dirty, and it is queued again when the worker calls ``done``.
- ``add_after`` delays a key (the earliest pending time wins); ``add_rate_limited`` delays
  it by its own exponential backoff; ``forget`` resets that backoff.
- ``add(key, respect_backoff=True)`` leaves a failing key waiting out its backoff: events
  about other objects (a report, a placement) would otherwise retry a persistent fault once
  per event. The key's own changes (a spec edit) use a plain ``add``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from fl_kube.backoff import RateLimiter
from fl_kube.metrics import ControllerMetrics

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """The queue was shut down; workers should return."""


class WorkQueue(Generic[K]):
    """De-duplicating, delaying, rate-limited queue of keys."""

    def __init__(
        self,
        *,
        name: str = "",
        rate_limiter: RateLimiter[K] | None = None,
        metrics: ControllerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.rate_limiter: RateLimiter[K] = rate_limiter or RateLimiter()
        self._clock = clock
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: dict[K, float] = {}  # key -> start time
        self._added_at: dict[K, float] = {}
        self._waiting: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False
        self._metrics = metrics
        if metrics is not None and name:
            metrics.track_in_progress(
                name, unfinished=self.unfinished_work_seconds, longest=self.longest_running
            )

    # -- producers ---------------------------------------------------------------------

    def add(self, key: K, *, respect_backoff: bool = False) -> None:
        """Queue ``key`` now (no-op when it is already queued). With ``respect_backoff``, a
        key waiting for a retry after failures keeps waiting (it runs then anyway)."""
        if self._shutting_down:
            return
        if respect_backoff and key in self._waiting and self.rate_limiter.retries(key) > 0:
            return
        pending = self._waiting.pop(key, None)
        if pending is not None:
            pending[1].cancel()
        if key in self._dirty:
            return
        if self._metrics is not None and self.name:
            self._metrics.workqueue_adds_total.labels(name=self.name).inc()
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key in self._processing:
            return  # re-queued by done()
        self._queue.append(key)
        self._update_depth()
        self._wake_one()

    def add_after(self, key: K, delay: float, *, respect_backoff: bool = False) -> None:
        """Queue ``key`` after ``delay`` seconds; an earlier pending add wins. With
        ``respect_backoff``, as for ``add``."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key, respect_backoff=respect_backoff)
            return
        if respect_backoff and key in self._waiting and self.rate_limiter.retries(key) > 0:
            return
        if key in self._dirty:
            return  # already queued (or re-queued after processing) to run sooner
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        handle = loop.call_at(due, self._fire, key)
        self._waiting[key] = (due, handle)

    def add_rate_limited(self, key: K) -> float:
        """Queue ``key`` after its per-key backoff (which grows until ``forget``); returns
        that backoff in seconds."""
        if self._metrics is not None and self.name:
            self._metrics.workqueue_retries_total.labels(name=self.name).inc()
        delay = self.rate_limiter.when(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset the backoff of ``key`` (after a success)."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return self.rate_limiter.retries(key)

    # -- consumers ---------------------------------------------------------------------

    async def get(self) -> K:
        """The next key; the caller must call ``done(key)`` when finished with it."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake_one()  # pass the wake-up on
                raise
        key = self._queue.popleft()
        self._dirty.discard(key)
        now = self._clock()
        added = self._added_at.pop(key, now)
        self._processing[key] = now
        if self._metrics is not None and self.name:
            self._metrics.workqueue_queue_duration_seconds.labels(name=self.name).observe(
                max(now - added, 0.0)
            )
        self._update_depth()
        return key

    def done(self, key: K) -> None:
        """Finish processing ``key``; re-queue it if it was added meanwhile."""
        started = self._processing.pop(key, None)
        if started is not None and self._metrics is not None and self.name:
            self._metrics.workqueue_work_duration_seconds.labels(name=self.name).observe(
                max(self._clock() - started, 0.0)
            )
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._update_depth()
            self._wake_one()

    def shutdown(self) -> None:
        """Stop handing out keys; pending delayed adds are dropped."""
        self._shutting_down = True
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        self._queue.clear()
        self._dirty.clear()
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
        self._update_depth()

    # -- inspection --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def is_processing(self, key: K) -> bool:
        return key in self._processing

    def is_idle(self) -> bool:
        """Nothing queued, delayed or in progress."""
        return not self._queue and not self._processing and not self._waiting

    def pending_delayed(self) -> int:
        return len(self._waiting)

    def unfinished_work_seconds(self) -> float:
        now = self._clock()
        return sum(now - start for start in self._processing.values())

    def longest_running(self) -> float:
        now = self._clock()
        return max((now - start for start in self._processing.values()), default=0.0)

    # -- internals ---------------------------------------------------------------------

    def _fire(self, key: K) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _update_depth(self) -> None:
        if self._metrics is not None and self.name:
            self._metrics.workqueue_depth.labels(name=self.name).set(len(self._queue))
