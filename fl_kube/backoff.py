"""Exponential backoff with jitter, per key, and a one-shot ``retry`` helper.

Controllers do not retry inline: they requeue the key and the work queue waits
``RateLimiter.when(key)``. ``retry`` is for the few one-shot calls outside a controller
(start-up registration, a CLI command) where giving up on the first 503 would be wrong.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fl_kube.errors import ApiError, is_temporary

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class BackoffPolicy:
    """Delay ``base * factor**n`` capped at ``cap``, each multiplied by ``1 ± jitter``."""

    base: float = 0.005
    cap: float = 300.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("backoff needs 0 < base <= cap")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter must be in [0, 1)")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait before attempt ``failures + 1`` (``failures`` >= 0)."""
        exponent = min(max(failures, 0), 64)
        raw = min(self.cap, self.base * self.factor**exponent)
        if not self.jitter:
            return raw
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return min(self.cap, max(0.0, raw * (1.0 + spread)))


class Backoff:
    """A single failure counter (a watch loop, a lease renewal)."""

    def __init__(self, policy: BackoffPolicy | None = None, *, rng: random.Random | None = None):
        self.policy = policy or BackoffPolicy(base=0.2, cap=30.0)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.failures = 0

    def next(self) -> float:
        delay = self.policy.delay(self.failures, self._rng)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


class RateLimiter(Generic[K]):
    """Per-key exponential backoff, as controller-runtime's default item rate limiter."""

    def __init__(self, policy: BackoffPolicy | None = None, *, rng: random.Random | None = None):
        self.policy = policy or BackoffPolicy()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._failures: dict[K, int] = {}

    def when(self, key: K) -> float:
        """Record one more failure of ``key`` and return how long to wait before retrying."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return self.policy.delay(failures, self._rng)

    def retries(self, key: K) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    policy: BackoffPolicy | None = None,
    retryable: Callable[[BaseException], bool] = is_temporary,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    what: str = "",
) -> T:
    """Await ``call()``, retrying temporary failures with backoff (honouring Retry-After)."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    policy = policy or BackoffPolicy(base=0.1, cap=10.0)
    rng = random.Random()  # noqa: S311 - jitter, not cryptography
    for attempt in range(attempts):
        try:
            return await call()
        except Exception as exc:
            if attempt + 1 >= attempts or not retryable(exc):
                raise
            delay = policy.delay(attempt, rng)
            if isinstance(exc, ApiError) and exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, policy.cap))
            log.debug("retrying %s in %.3fs after %s", what or "call", delay, exc)
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
