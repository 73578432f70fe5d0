"""Writing the agent's conditions into its own ManagedClusterAddOn status on the hub.

Each write changes one condition in the full list and sends the list back with the
resourceVersion it was read at. Someone else writing in between (the add-on manager, the hub
manager, another of our workers) makes the server answer 409; we then read again and re-apply
the same one change to the fresh list, so their conditions survive.

Reads come from a watch of that one object (a field selector on its name, which RBAC
authorizes by resource name), not from a GET per reconcile: the agent reads its add-on many
times a round and writes it twice. Our own writes are read back from their responses until
the watch delivers them, so a write right after a write does not meet a 409 of our own making.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from fl_kube import resources as r
from fl_kube.backoff import BackoffPolicy, retry
from fl_kube.client import KubeApi
from fl_kube.controller import TemporaryError
from fl_kube.errors import Conflict, NotFound
from fl_kube.informer import Informer, WatchSettings
from spoke_agent.conditions import Condition
from spoke_agent.metrics import AgentMetrics

log = logging.getLogger(__name__)

MutationResult = list[Condition] | None
# 429s and 5xx are retried here a few times, quickly (honouring Retry-After), before the
# reconcile gives up and the controller's per-key backoff takes over.
TRANSIENT_ATTEMPTS = 4
TRANSIENT_BACKOFF = BackoffPolicy(base=0.1, cap=2.0)
# resourceVersions of the add-on the watch delivered lately: enough to tell whether an object
# we got from a write or a GET is already in the cache (or older than what is there).
SEEN_VERSIONS = 64
# How long the first read waits for the watch to list before it asks with a GET (the watch
# may be forbidden by an older hub role, or the hub slow): once, at start.
FIRST_SYNC_WAIT_SECONDS = 3.0

Mutation = Callable[[list[Condition]], MutationResult | Awaitable[MutationResult]]


class StatusWriter:
    """Read-modify-write of the conditions of one ManagedClusterAddOn, conflict-safe."""

    def __init__(
        self,
        hub: KubeApi,
        *,
        cluster: str,
        addon: str,
        metrics: AgentMetrics,
        conflict_retries: int = 10,
        watch: WatchSettings | None = None,
    ) -> None:
        self._hub = hub
        self._cluster = cluster
        self._addon = addon
        self._metrics = metrics
        self._retries = conflict_retries
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self.conflicts = 0  # 409s met (and retried): tests and logs read it
        # Our own workers write the same object: taking turns saves them 409s with each other.
        self._lock = asyncio.Lock()
        self.informer = Informer(
            hub,
            r.MANAGED_CLUSTER_ADDON,
            namespace=cluster,
            field_selector=f"metadata.name={addon}",
            settings=watch,
        )
        self.informer.subscribe(self._on_event)
        self._newer: dict[str, Any] | None = None  # from a write or GET, not yet watched
        self._seen: deque[str] = deque(maxlen=SEEN_VERSIONS)
        self._waited_for_sync = False

    async def run(self) -> None:
        """Watch the add-on until cancelled."""
        await self.informer.run()

    async def conditions(self) -> list[Condition]:
        """The conditions as they are now on the hub."""
        return _conditions_of(await self._current())

    async def update(self, mutate: Mutation, *, what: str, result: str) -> bool:
        """Apply `mutate` to the current list and write it; False when nothing had to change.

        `mutate` gets the current conditions and returns (or resolves to) the new list or
        None. It may be called several times (once per conflict), each time with fresher
        conditions.
        """
        async with self._lock:
            return await self._update(mutate, what=what, result=result)

    async def _update(self, mutate: Mutation, *, what: str, result: str) -> bool:
        for attempt in range(self._retries):
            addon = await self._current()
            current = _conditions_of(addon)
            outcome = mutate([dict(c) for c in current])
            desired = await outcome if inspect.isawaitable(outcome) else outcome
            if desired is None:
                return False
            body: dict[str, Any] = {
                "metadata": {"resourceVersion": addon["metadata"]["resourceVersion"]},
                "status": {"conditions": desired},
            }
            try:
                written = await retry(
                    lambda body=body: self._hub.patch(  # type: ignore[misc]
                        r.MANAGED_CLUSTER_ADDON,
                        self._addon,
                        body,
                        namespace=self._cluster,
                        subresource="status",
                    ),
                    attempts=TRANSIENT_ATTEMPTS,
                    policy=TRANSIENT_BACKOFF,
                    what=f"status write for {what}",
                )
            except Conflict:
                self.conflicts += 1
                log.info(
                    "status write for %s met a conflict; re-reading (attempt %d)", what, attempt + 1
                )
                await asyncio.sleep(self._rng.uniform(0, 0.05 * (attempt + 1)))
                self._remember(await self._read())
                continue
            self._remember(written)
            self._metrics.reports_total.labels(result=result).inc()
            return True
        raise TemporaryError(
            f"status write for {what}: still conflicting after {self._retries} attempts"
        )

    async def _current(self) -> dict[str, Any]:
        """The add-on as last seen: from the watch, or newer from our own write or GET."""
        if self._newer is not None:
            return self._newer
        if not self.informer.has_synced and not self._waited_for_sync:
            self._waited_for_sync = True
            with contextlib.suppress(TimeoutError):
                await self.informer.wait_synced(FIRST_SYNC_WAIT_SECONDS)
        if not self.informer.has_synced:
            return await self._read()  # not listed (the watch may not be allowed): ask
        cached = self.informer.get(self._addon, self._cluster)
        if cached is None:
            raise self._not_found()
        return cached

    def _remember(self, obj: dict[str, Any]) -> None:
        """Read `obj` from now on, unless the watch has delivered it already (then the cache
        holds it or something newer). `obj` is never older than a `_newer` it replaces."""
        self._newer = None if _rv(obj) in self._seen else obj

    def _on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        rv = _rv(obj)
        self._seen.append(rv)
        if self._newer is not None and (event_type == "DELETED" or rv == _rv(self._newer)):
            self._newer = None  # the cache has caught up

    def _not_found(self) -> TemporaryError:
        return TemporaryError(
            f"ManagedClusterAddOn {self._cluster}/{self._addon} not found on the hub; "
            "is the add-on enabled for this cluster?",
            retry_after=2.0,
        )

    async def _read(self) -> dict[str, Any]:
        try:
            return await retry(
                lambda: self._hub.get(
                    r.MANAGED_CLUSTER_ADDON, self._addon, namespace=self._cluster
                ),
                attempts=TRANSIENT_ATTEMPTS,
                policy=TRANSIENT_BACKOFF,
                what="reading the ManagedClusterAddOn",
            )
        except NotFound:
            raise self._not_found() from None


def _conditions_of(addon: dict[str, Any]) -> list[Condition]:
    conditions = (addon.get("status") or {}).get("conditions") or []
    return [c for c in conditions if isinstance(c, dict)]


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
