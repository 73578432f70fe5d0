"""Level-based controllers: a reconcile function driven by a work queue of keys.

In the style of controller-runtime: ``workers`` keys are reconciled in parallel, one key is
never reconciled twice at once, failures requeue the key with per-key exponential backoff
and jitter, ``TerminalError`` is recorded and not retried until the key is enqueued again,
and ``Result(requeue_after=...)`` schedules the next look.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fl_kube.backoff import RateLimiter
from fl_kube.errors import ApiError, is_temporary
from fl_kube.metrics import ControllerMetrics
from fl_kube.workqueue import ShutDown, WorkQueue

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass
class Result:
    """What a reconcile asks for next: nothing, a look after a delay, or a backoff retry."""

    requeue_after: float | None = None
    requeue: bool = False


class TemporaryError(Exception):
    """Requeue the key with its per-key backoff (at least ``retry_after`` when given)."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TerminalError(Exception):
    """Record and stop retrying the key until it is enqueued again (e.g. its spec changes)."""

    def __init__(self, message: str = "", *, reason: str = "TerminalError") -> None:
        super().__init__(message)
        self.reason = reason


class Controller(Generic[K]):
    """Runs ``reconcile(key)`` for enqueued keys until cancelled."""

    def __init__(
        self,
        name: str,
        reconcile: Callable[[K], Awaitable[Result | None]],
        *,
        workers: int = 4,
        metrics: ControllerMetrics,
        rate_limiter: RateLimiter[K] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.name = name
        self._reconcile = reconcile
        self._workers = workers
        self._metrics = metrics
        self._clock = clock
        metrics.register_controller(name, max_concurrent=workers)
        self.queue: WorkQueue[K] = WorkQueue(
            name=name, rate_limiter=rate_limiter, metrics=metrics, clock=clock
        )
        self.terminal_errors: dict[K, TerminalError] = {}
        self.reconcile_count = 0
        self._active = 0

    def enqueue(self, key: K, *, respect_backoff: bool = False) -> None:
        """Reconcile ``key`` soon (de-duplicated with any pending request); with
        ``respect_backoff``, not before a failing key's backoff has passed."""
        self.queue.add(key, respect_backoff=respect_backoff)

    def enqueue_after(self, key: K, delay: float) -> None:
        """Reconcile ``key`` after ``delay`` seconds."""
        self.queue.add_after(key, delay)

    def is_idle(self) -> bool:
        """Nothing queued, delayed or running (tests wait on this)."""
        return self.queue.is_idle()

    async def run(self) -> None:
        """Run the workers until cancelled; then stop taking keys and wait for them."""
        log.info("controller %s starting %d workers", self.name, self._workers)
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self._workers):
                    group.create_task(self._worker(), name=f"{self.name}-worker-{index}")
        finally:
            self.queue.shutdown()
            self._metrics.release_controller(self.name)
            log.info("controller %s stopped", self.name)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: K) -> None:
        label = {"controller": self.name}
        self._active += 1
        self._metrics.active_workers.labels(**label).set(self._active)
        started = self._clock()
        outcome = "success"
        try:
            result = await self._reconcile(key)
        except asyncio.CancelledError:
            raise
        except TerminalError as exc:
            outcome = "error"
            self.terminal_errors[key] = exc
            self.queue.forget(key)
            self._metrics.reconcile_errors_total.labels(**label).inc()
            self._metrics.terminal_reconcile_errors_total.labels(**label).inc()
            log.warning("%s: %r failed terminally (%s): %s", self.name, key, exc.reason, exc)
        except Exception as exc:
            outcome = "error"
            self._metrics.reconcile_errors_total.labels(**label).inc()
            self._requeue_failed(key, exc)
        else:
            self.terminal_errors.pop(key, None)
            if result is not None and result.requeue_after is not None:
                outcome = "requeue_after"
                self.queue.forget(key)
                self.queue.add_after(key, max(result.requeue_after, 0.0))
            elif result is not None and result.requeue:
                outcome = "requeue"
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
        finally:
            self.reconcile_count += 1
            self._active -= 1
            self._metrics.active_workers.labels(**label).set(self._active)
            self._metrics.reconcile_time_seconds.labels(**label).observe(
                max(self._clock() - started, 0.0)
            )
            self._metrics.reconcile_total.labels(controller=self.name, result=outcome).inc()

    def _requeue_failed(self, key: K, exc: Exception) -> None:
        retry_after = None
        if isinstance(exc, TemporaryError | ApiError):
            retry_after = exc.retry_after
        if retry_after:
            self._metrics.workqueue_retries_total.labels(name=self.name).inc()
            delay = max(retry_after, self.queue.rate_limiter.when(key))
            self.queue.add_after(key, delay)
        else:
            delay = self.queue.add_rate_limited(key)
        # Expected faults are one line without a traceback: WARNING when something is wrong
        # (an API out of reach or failing), INFO for the API's ordinary answers (409, 404...).
        if isinstance(exc, TemporaryError) or is_temporary(exc):
            log.warning("%s: %r will be retried in %.3gs: %s", self.name, key, delay, exc)
        elif isinstance(exc, ApiError):
            log.info("%s: %r will be retried in %.3gs: %s", self.name, key, delay, exc)
        else:
            log.exception("%s: reconcile of %r failed; retrying with backoff", self.name, key)
