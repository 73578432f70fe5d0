"""Backoff policy, per-key rate limiting and the one-shot retry helper."""

from __future__ import annotations

import random

import pytest

from fl_kube.backoff import Backoff, BackoffPolicy, RateLimiter, retry
from fl_kube.errors import Conflict, ServerError, TooManyRequests


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.005), (1, 0.01), (2, 0.02), (10, 5.12), (20, 300.0), (1000, 300.0)],
)
def test_policy_grows_exponentially_and_caps(failures: int, expected: float) -> None:
    policy = BackoffPolicy(base=0.005, cap=300.0, jitter=0.0)
    assert policy.delay(failures) == pytest.approx(expected)


def test_jitter_stays_within_bounds_and_varies() -> None:
    policy = BackoffPolicy(base=1.0, cap=100.0, jitter=0.2)
    rng = random.Random(7)
    delays = [policy.delay(3, rng) for _ in range(200)]
    assert all(6.4 <= d <= 9.6 for d in delays)
    assert len({round(d, 6) for d in delays}) > 50


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0}, {"base": 2, "cap": 1}, {"factor": 0.5}, {"jitter": 1.0}],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)


def test_rate_limiter_is_per_key_and_forget_resets() -> None:
    limiter: RateLimiter[str] = RateLimiter(BackoffPolicy(base=0.01, cap=1.0, jitter=0.0))
    assert [limiter.when("a") for _ in range(3)] == pytest.approx([0.01, 0.02, 0.04])
    assert limiter.when("b") == pytest.approx(0.01)
    assert limiter.retries("a") == 3
    limiter.forget("a")
    assert limiter.retries("a") == 0
    assert limiter.when("a") == pytest.approx(0.01)


def test_backoff_counter_resets() -> None:
    backoff = Backoff(BackoffPolicy(base=0.1, cap=1.0, jitter=0.0))
    assert [backoff.next() for _ in range(3)] == pytest.approx([0.1, 0.2, 0.4])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)


async def test_retry_retries_temporary_errors_and_honours_retry_after() -> None:
    calls = 0
    sleeps: list[float] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ServerError(503, "ServiceUnavailable", "down")
        if calls == 2:
            raise TooManyRequests(429, "TooManyRequests", "slow down", retry_after=2.0)
        return "ok"

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    policy = BackoffPolicy(base=0.1, cap=10.0, jitter=0.0)
    assert await retry(flaky, attempts=5, policy=policy, sleep=fake_sleep) == "ok"
    assert calls == 3
    assert sleeps == pytest.approx([0.1, 2.0])


async def test_retry_gives_up_on_permanent_errors_and_after_attempts() -> None:
    calls = 0

    async def conflict() -> None:
        nonlocal calls
        calls += 1
        raise Conflict(409, "Conflict", "stale")

    async def no_sleep(delay: float) -> None:
        return None

    with pytest.raises(Conflict):
        await retry(conflict, attempts=5, sleep=no_sleep)
    assert calls == 1

    async def always_down() -> None:
        nonlocal calls
        calls += 1
        raise ServerError(500, "InternalError", "boom")

    calls = 0
    with pytest.raises(ServerError):
        await retry(always_down, attempts=3, sleep=no_sleep)
    assert calls == 3
