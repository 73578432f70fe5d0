"""List-then-watch cache of one resource type, with resume and 410 recovery.

The informer lists once, then watches from the list's resourceVersion. Bookmarks only
advance the resourceVersion. When a watch ends (server timeout, dropped connection,
client inactivity timeout) it resumes from the last resourceVersion seen, so no event is
lost; when the server answers 410 Gone it re-lists and emits the differences against its
cache (ADDED / MODIFIED / DELETED), so handlers still see every change in state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fl_kube.backoff import Backoff, BackoffPolicy
from fl_kube.client import KubeApi, WatchEvent
from fl_kube.errors import Gone
from fl_kube.resources import Resource

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]
ObjectKey = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class WatchSettings:
    """Timeouts and backoff of an informer's watches (defaults suit a real cluster)."""

    server_timeout: int = 300  # timeoutSeconds sent to the server
    inactivity_timeout: float = 330.0  # no line for this long: presume the connection dead
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(base=0.2, cap=30.0))


def object_key(obj: dict[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


class Informer:
    """An always-current cache of the objects matching the selectors, with change callbacks."""

    def __init__(
        self,
        api: KubeApi,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        settings: WatchSettings | None = None,
    ) -> None:
        self._api = api
        self.resource = res
        self._namespace = namespace
        self._label_selector = label_selector
        self._field_selector = field_selector
        self.settings = settings or WatchSettings()
        self._cache: dict[ObjectKey, dict[str, Any]] = {}
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self.resource_version: str | None = None
        self.relists = 0
        self.watches = 0

    def subscribe(self, handler: Handler) -> None:
        """Call ``handler(event_type, obj)`` after each cache change; keep it quick."""
        self._handlers.append(handler)
        if self._synced.is_set():
            for obj in list(self._cache.values()):
                self._call(handler, "ADDED", obj)

    def get(self, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The cached object (shared with the cache: copy it before changing it)."""
        return self._cache.get((namespace or "", name))

    def list(self) -> list[dict[str, Any]]:
        """Every cached object (shared with the cache: copy before changing)."""
        return list(self._cache.values())

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self, timeout: float) -> None:  # noqa: ASYNC109 - a deadline, not a cancel scope
        """Wait for the first list to land in the cache; ``TimeoutError`` otherwise."""
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            raise TimeoutError(
                f"informer for {self.resource} did not sync within {timeout}s"
            ) from None

    async def run(self) -> None:
        """List and watch until cancelled, reconnecting with backoff after failures."""
        backoff = Backoff(self.settings.backoff)
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                started = asyncio.get_running_loop().time()
                seen = await self._watch_once(backoff)
                if not seen and asyncio.get_running_loop().time() - started < 1.0:
                    # An empty watch that ended at once: do not spin against the server.
                    await asyncio.sleep(backoff.next())
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info(
                    "%s: resourceVersion %s expired; re-listing",
                    self.resource,
                    self.resource_version,
                )
                self.resource_version = None
            except Exception as exc:
                delay = backoff.next()
                log.warning("%s: watch failed (%s); retrying in %.2fs", self.resource, exc, delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        listed = await self._api.list(
            self.resource,
            namespace=self._namespace,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
        )
        first = not self._synced.is_set()
        self.relists += 0 if first else 1
        fresh = {object_key(obj): obj for obj in listed.items}
        old = self._cache
        self._cache = dict(fresh)
        self.resource_version = listed.resource_version
        self._synced.set()
        for key, obj in fresh.items():
            previous = old.get(key)
            if previous is None:
                self._emit("ADDED", obj)
            elif _rv(previous) != _rv(obj):
                self._emit("MODIFIED", obj)
        for key, obj in old.items():
            if key not in fresh:
                self._emit("DELETED", obj)

    async def _watch_once(self, backoff: Backoff) -> int:
        """One watch from the current resourceVersion; returns the number of events seen."""
        self.watches += 1
        seen = 0
        stream = self._api.watch(
            self.resource,
            namespace=self._namespace,
            resource_version=self.resource_version,
            label_selector=self._label_selector,
            field_selector=self._field_selector,
            timeout_seconds=self.settings.server_timeout,
            allow_bookmarks=True,
            inactivity_timeout=self.settings.inactivity_timeout,
        )
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                seen += 1
                backoff.reset()
                self._apply(event)
        return seen

    def _apply(self, event: WatchEvent) -> None:
        rv = event.resource_version
        if event.type == "BOOKMARK":
            if rv:
                self.resource_version = rv
            return
        key = object_key(event.object)
        if event.type == "DELETED":
            self._cache.pop(key, None)
        else:
            self._cache[key] = event.object
        if rv:
            self.resource_version = rv
        self._emit(event.type, event.object)

    def _emit(self, event_type: str, obj: dict[str, Any]) -> None:
        for handler in list(self._handlers):
            self._call(handler, event_type, obj)

    def _call(self, handler: Handler, event_type: str, obj: dict[str, Any]) -> None:
        try:
            handler(event_type, obj)
        except Exception:
            log.exception("%s: event handler failed on %s", self.resource, event_type)


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
