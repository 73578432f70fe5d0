"""Fault injection for tests: failing a share of requests, dropping watches, compacting history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import ApiError
from .store import Store


@dataclass
class FailureRule:
    share: float
    status: int
    retry_after: int
    methods: frozenset[str]
    path_prefix: str
    remaining: int | None  # None: until cleared
    _credit: float = field(default=0.0)

    def applies(self, method: str, path: str) -> bool:
        if self.methods and method.upper() not in self.methods:
            return False
        return path.startswith(self.path_prefix)

    def fires(self) -> bool:
        """Deterministic share: fails exactly round(share * n) of n matching requests."""
        self._credit += self.share
        if self._credit >= 1.0 - 1e-9:
            self._credit -= 1.0
            if self.remaining is not None:
                self.remaining -= 1
            return True
        return False


class FaultInjector:
    """What `ApiServer.faults` offers; every method acts at once and is safe to call any time."""

    def __init__(self, *, store: Store, drop_watches: Callable[[], int]) -> None:
        self._store = store
        self._drop = drop_watches
        self._rules: list[FailureRule] = []
        self.injected = 0  # requests answered with an injected failure

    def fail(
        self,
        share: float = 1.0,
        *,
        status: int = 500,
        retry_after: int = 1,
        methods: Sequence[str] = (),
        path_prefix: str = "",
        count: int | None = None,
    ) -> None:
        """Answer `share` (0..1] of matching requests with `status` (500, 503 or 429 with
        Retry-After); `count` limits how many requests fail before the rule retires."""
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        if status not in (429, 500, 503, 504):
            raise ValueError(f"status must be 429, 500, 503 or 504, got {status}")
        self._rules.append(
            FailureRule(
                share,
                status,
                retry_after,
                frozenset(m.upper() for m in methods),
                path_prefix,
                count,
            )
        )

    def clear(self) -> None:
        self._rules.clear()

    def drop_watches(self) -> int:
        """End every open watch stream now; returns how many were open."""
        return self._drop()

    def compact(self) -> None:
        """Forget the event history: watches from any older resourceVersion get 410 Expired."""
        self._store.compact()

    def check(self, method: str, path: str) -> None:
        for rule in list(self._rules):
            if rule.applies(method, path) and rule.fires():
                if rule.remaining == 0:
                    self._rules.remove(rule)
                self.injected += 1
                if rule.status == 429:
                    raise ApiError(
                        429,
                        "TooManyRequests",
                        "the server has received too many requests and has asked us to try again later",
                        details={"retryAfterSeconds": rule.retry_after},
                        retry_after=rule.retry_after,
                    )
                if rule.status == 503:
                    raise ApiError(
                        503,
                        "ServiceUnavailable",
                        "the server is currently unable to handle the request",
                        retry_after=rule.retry_after,
                    )
                if rule.status == 504:
                    raise ApiError(
                        504,
                        "Timeout",
                        "the server was unable to return a response in the time allotted",
                    )
                raise ApiError(500, "InternalError", "Internal error occurred: injected fault")
