"""Kubernetes Events about an object, recorded the way client-go's EventRecorder does.

`kubectl describe` lists the core/v1 Events whose involvedObject is the object. Like
client-go, a repeated event (same object, type, reason and message) updates the count and
lastTimestamp of the Event already written instead of creating another, and a token bucket
per object (a burst, then one event per refill interval) keeps a fault from becoming an
event storm. Recording never fails the caller: an event is a courtesy, the status is the
record.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.errors import ApiError, NotFound
from fl_kube.timestamps import format_time

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
MAX_MESSAGE = 1024


@dataclass
class _Seen:
    name: str
    count: int


class EventRecorder:
    """Creates (or counts up) Events whose involvedObject is the given object."""

    def __init__(
        self,
        api: KubeApi,
        *,
        component: str,
        instance: str = "",
        burst: int = 25,
        refill_seconds: float = 300.0,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._component = component
        self._instance = instance
        self._burst = burst
        self._refill = refill_seconds
        self._cache_size = cache_size
        self._clock = clock
        self._wall_clock = wall_clock
        self._seen: OrderedDict[tuple[str, str, str, str], _Seen] = OrderedDict()
        self._buckets: dict[str, tuple[float, float]] = {}  # uid -> (tokens, at)
        self.dropped = 0

    async def record(
        self,
        obj: dict[str, Any],
        *,
        type_: EventType,
        reason: str,
        message: str,
        namespace: str | None = None,
    ) -> None:
        """Record an event about `obj`, in its namespace (or `namespace`: where events about a
        cluster-scoped object, or one that could not be created, are listed)."""
        metadata = obj.get("metadata") or {}
        uid = str(metadata.get("uid") or "")
        namespace = namespace or str(metadata.get("namespace") or "default")
        message = message[:MAX_MESSAGE]
        if not self._take_token(uid):
            self.dropped += 1
            log.debug("event %s on %s dropped (rate limit)", reason, metadata.get("name"))
            return
        now = format_time(self._wall_clock())
        slot = (uid, type_, reason, message)
        seen = self._seen.get(slot)
        try:
            if seen is not None:
                try:
                    await self._api.patch(
                        r.EVENT,
                        seen.name,
                        {"count": seen.count + 1, "lastTimestamp": now},
                        namespace=namespace,
                    )
                    seen.count += 1
                    self._seen.move_to_end(slot)
                    return
                except NotFound:
                    self._seen.pop(slot, None)  # expired (events have a TTL): write it anew
            name = f"{str(metadata.get('name'))[:200]}.{time.time_ns():x}"  # at most 253
            body = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {
                    "apiVersion": obj.get("apiVersion"),
                    "kind": obj.get("kind"),
                    "name": metadata.get("name"),
                    "namespace": metadata.get("namespace"),
                    "uid": uid,
                    "resourceVersion": metadata.get("resourceVersion"),
                },
                "type": type_,
                "reason": reason,
                "message": message,
                "count": 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "source": {"component": self._component},
                "reportingComponent": self._component,
                "reportingInstance": self._instance or self._component,
            }
            await self._api.create(r.EVENT, body, namespace=namespace)
        except ApiError as exc:
            log.debug("event %s on %s not recorded: %s", reason, metadata.get("name"), exc)
            return
        self._seen[slot] = _Seen(name=name, count=1)
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)

    def forget(self, uid: str) -> None:
        """Drop what is remembered of one object (it was deleted)."""
        self._buckets.pop(uid, None)
        for slot in [s for s in self._seen if s[0] == uid]:
            del self._seen[slot]

    def _take_token(self, uid: str) -> bool:
        now = self._clock()
        tokens, at = self._buckets.get(uid, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - at) / self._refill)
        if tokens < 1.0:
            self._buckets[uid] = (tokens, now)
            return False
        self._buckets[uid] = (tokens - 1.0, now)
        return True
