"""Polling until a condition holds, for tests and the demo (controllers use watches)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from fl_kube.errors import ApiError

T = TypeVar("T")


@overload
async def wait_for(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,  # noqa: ASYNC109 - the shared signature
    interval: float = 0.05,
    message: str = "",
) -> T: ...


@overload
async def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float,  # noqa: ASYNC109 - the shared signature
    interval: float = 0.05,
    message: str = "",
) -> T: ...


async def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float,  # noqa: ASYNC109 - the shared signature
    interval: float = 0.05,
    message: str = "",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return it.

    Raises ``TimeoutError`` with ``message`` and the last value seen (or the last exception
    the predicate raised) after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            last, last_error = value, None
            if value:
                return value
        except (AssertionError, LookupError, ValueError, OSError, ApiError) as exc:
            last_error = exc
        if loop.time() >= deadline:
            detail = f"last error: {last_error!r}" if last_error else f"last value: {last!r}"
            prefix = f"{message}: " if message else ""
            raise TimeoutError(f"{prefix}condition not met within {timeout}s ({detail})")
        await asyncio.sleep(interval)
