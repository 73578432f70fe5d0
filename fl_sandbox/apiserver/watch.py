"""Watch streams: newline-delimited JSON events over a chunked response.

From a resourceVersion the stream replays exactly the kept events after it (410 Expired as an
ERROR event when it is older than the kept history); without one it starts with synthetic
ADDED events. With a selector, an object that stops matching is sent as DELETED and one that
starts matching as ADDED, as kube-apiserver's watch cache does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .errors import gone
from .resources import Target, as_version
from .selectors import FieldRequirement, Requirement, fields_match, labels_match
from .store import Event, Obj, Store, Watcher

DEFAULT_TIMEOUT = 1800.0


@dataclass
class WatchRequest:
    target: Target
    resource_version: str | None
    timeout: float
    bookmarks: bool
    labels: list[Requirement]
    fields: list[FieldRequirement]
    initial_events: bool = False  # sendInitialEvents: state as ADDED, then an end bookmark


def _matches(w: WatchRequest, obj: Obj | None) -> bool:
    if obj is None:
        return False
    if w.target.namespace is not None and obj["metadata"].get("namespace") != w.target.namespace:
        return False
    return labels_match(w.labels, obj) and fields_match(w.fields, obj)


def translate(w: WatchRequest, event: Event) -> tuple[str, Obj] | None:
    """The event this watcher should see for a store event, if any."""
    now_ok = _matches(w, event.obj) if event.type != "DELETED" else False
    was_ok = _matches(w, event.old) if event.old is not None else False
    if event.type == "ADDED":
        return ("ADDED", event.obj) if now_ok else None
    if event.type == "DELETED":
        return ("DELETED", event.obj) if _matches(w, event.old) else None
    if now_ok and was_ok:
        return ("MODIFIED", event.obj)
    if now_ok:
        return ("ADDED", event.obj)
    if was_ok:
        return ("DELETED", event.obj)
    return None


class WatchStream:
    """One client's watch; `drop()` ends it early (fault injection)."""

    def __init__(
        self,
        *,
        store: Store,
        request: WatchRequest,
        render: Callable[[str, Obj], Any],
        bookmark_interval: float,
    ) -> None:
        self._store = store
        self._w = request
        self._render = render
        self._bookmark_interval = bookmark_interval
        self._watcher: Watcher | None = None

    def drop(self) -> None:
        if self._watcher is not None:
            self._watcher.drop()

    async def serve(self, http: web.Request) -> web.StreamResponse:
        w = self._w
        store = self._store
        rtype = w.target.rtype
        backlog: list[tuple[str, Obj]] = []
        expired: str | None = None
        rv = w.resource_version
        if rv in (None, "", "0") or w.initial_events:
            start = store.resource_version
            for obj in store.items(rtype.group_resource, w.target.namespace):
                if _matches(w, obj):
                    backlog.append(("ADDED", obj))
        else:
            start = int(rv)
            if start < store.history_floor:
                expired = f"too old resource version: {start} ({store.history_floor + 1})"
            else:
                for event in store.history_after(rtype.group_resource, start):
                    seen = translate(w, event)
                    if seen is not None:
                        backlog.append(seen)
        self._watcher = (
            store.subscribe(rtype.group_resource, namespace=w.target.namespace)
            if expired is None
            else None
        )
        last_rv = max([start, *(int(o["metadata"]["resourceVersion"]) for _, o in backlog)])
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(http)
            if expired is not None:
                await self._send(response, "ERROR", gone(expired).status())
                return response
            for kind, obj in backlog:
                await self._send(response, kind, self._render(kind, as_version(obj, rtype)))
            if w.initial_events:
                await self._bookmark(response, last_rv, initial_events_end=True)
            await self._pump(response, last_rv)
        except ConnectionResetError:
            pass
        finally:
            if self._watcher is not None:
                store.unsubscribe(self._watcher)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    async def _pump(self, response: web.StreamResponse, last_rv: int) -> None:
        assert self._watcher is not None
        w = self._w
        rtype = w.target.rtype
        deadline = time.monotonic() + w.timeout
        next_bookmark = time.monotonic() + self._bookmark_interval
        queue = self._watcher.queue
        while True:
            now = time.monotonic()
            if now >= deadline:
                if w.bookmarks:
                    current = self._store.resource_version if queue.empty() else last_rv
                    await self._bookmark(response, max(last_rv, current))
                return
            wait = deadline - now
            if w.bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            if not queue.empty():
                # Take a queued event at once: wait_for(timeout=0), which an overdue bookmark
                # produces, never lets queue.get() run, so the stream would spin, not send.
                event = queue.get_nowait()
            else:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=wait)
                except TimeoutError:
                    if w.bookmarks and time.monotonic() >= next_bookmark and queue.empty():
                        await self._bookmark(response, max(last_rv, self._store.resource_version))
                        next_bookmark = time.monotonic() + self._bookmark_interval
                    continue
            if event is None:  # dropped
                return
            if event.rv <= last_rv:
                continue
            last_rv = event.rv
            seen = translate(w, event)
            if seen is not None:
                await self._send(
                    response, seen[0], self._render(seen[0], as_version(seen[1], rtype))
                )

    async def _bookmark(
        self, response: web.StreamResponse, rv: int, *, initial_events_end: bool = False
    ) -> None:
        rtype = self._w.target.rtype
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta}
        await self._send(response, "BOOKMARK", obj)

    async def _send(self, response: web.StreamResponse, kind: str, obj: Any) -> None:
        line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"
        await response.write(line.encode())
