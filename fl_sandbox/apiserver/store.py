"""The object store: current objects per group/resource, a global resourceVersion, a bounded
event history for watch resume, and the live watcher fan-out.

Stored objects are never mutated after they are stored: every write stores a new dict, so
readers and watch events can share them without copying.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .registry import GroupResource

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class Event:
    rv: int
    gr: GroupResource
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


@dataclass(eq=False)
class Watcher:
    """One open watch: receives the events of its group/resource (of its namespace, when it
    has one: a thousand namespaced watches then cost one queue each event, not a thousand);
    the handler filters the rest."""

    gr: GroupResource
    namespace: str | None = None
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    dropped: bool = False

    def drop(self) -> None:
        self.dropped = True
        self.queue.put_nowait(None)


def obj_key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


class Store:
    def __init__(self, *, history_limit: int) -> None:
        self._objects: dict[GroupResource, dict[Key, Obj]] = {}
        self._uids: dict[str, tuple[GroupResource, Key]] = {}
        self._rv = 0
        self._history: deque[Event] = deque(maxlen=max(1, history_limit))
        self._floor = 0  # every event with rv > floor is still in history
        self._watchers: dict[GroupResource, set[Watcher]] = {}

    # ---- reads ----
    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def history_floor(self) -> int:
        return self._floor

    def get(self, gr: GroupResource, namespace: str, name: str) -> Obj | None:
        return self._objects.get(gr, {}).get((namespace, name))

    def items(self, gr: GroupResource, namespace: str | None = None) -> list[Obj]:
        objs = self._objects.get(gr, {})
        if namespace is None:
            return [objs[k] for k in sorted(objs)]
        return [objs[k] for k in sorted(objs) if k[0] == namespace]

    def count_in_namespace(self, namespace: str) -> int:
        return sum(1 for objs in self._objects.values() for k in objs if k[0] == namespace)

    def all_in_namespace(self, namespace: str) -> Iterator[tuple[GroupResource, Obj]]:
        for gr, objs in list(self._objects.items()):
            for key, obj in list(objs.items()):
                if key[0] == namespace:
                    yield gr, obj

    def all_objects(self) -> Iterator[tuple[GroupResource, Obj]]:
        for gr, objs in list(self._objects.items()):
            for obj in list(objs.values()):
                yield gr, obj

    def by_uid(self, uid: str) -> tuple[GroupResource, Obj] | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        obj = self._objects.get(where[0], {}).get(where[1])
        return None if obj is None else (where[0], obj)

    def history_after(self, gr: GroupResource, rv: int) -> list[Event]:
        return [e for e in self._history if e.rv > rv and e.gr == gr]

    # ---- writes ----
    def next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def put(self, gr: GroupResource, obj: Obj, *, event: str, old: Obj | None) -> None:
        """Store obj (its metadata.resourceVersion already set from next_rv)."""
        key = obj_key(obj)
        self._objects.setdefault(gr, {})[key] = obj
        uid = obj["metadata"].get("uid")
        if uid:
            self._uids[uid] = (gr, key)
        self._record(Event(int(obj["metadata"]["resourceVersion"]), gr, event, obj, old))

    def replace_quietly(self, gr: GroupResource, obj: Obj) -> None:
        """Swap in a same-version view of an object (read-time defaults): no event, no bump."""
        self._objects.setdefault(gr, {})[obj_key(obj)] = obj

    def remove(self, gr: GroupResource, obj: Obj) -> Obj:
        """Delete obj; the DELETED event carries it with a fresh resourceVersion."""
        key = obj_key(obj)
        old = self._objects.get(gr, {}).pop(key)
        self._uids.pop(old["metadata"].get("uid", ""), None)
        gone = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self.next_rv())}}
        self._record(Event(self._rv, gr, "DELETED", gone, old))
        return gone

    def drop_group_resource(self, gr: GroupResource) -> list[Obj]:
        removed = [self.remove(gr, o) for o in self.items(gr)]
        self._objects.pop(gr, None)
        return removed

    def _record(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rv
        self._history.append(event)
        namespace = event.obj["metadata"].get("namespace")
        for watcher in self._watchers.get(event.gr, ()):
            if watcher.namespace is None or watcher.namespace == namespace:
                watcher.queue.put_nowait(event)

    def compact(self) -> None:
        """Forget the whole history: any resume from an older resourceVersion gets 410."""
        self._history.clear()
        self._floor = self._rv

    # ---- watchers ----
    def subscribe(self, gr: GroupResource, namespace: str | None = None) -> Watcher:
        watcher = Watcher(gr, namespace)
        self._watchers.setdefault(gr, set()).add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.gr, set()).discard(watcher)

    def watchers(self) -> list[Watcher]:
        return [w for ws in self._watchers.values() for w in ws]
