"""Background garbage collection: dependents of deleted owners, and namespace contents.

Like kube-controller-manager's collector it runs apart from the request that caused it, so
clients observe dependents disappearing shortly after the owner, not within the same call.
Foreground deletion: the owner keeps its `foregroundDeletion` finalizer until every dependent
is gone (every dependent blocks, whatever its blockOwnerDeletion).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from .builtin_types import ResourceType
from .registry import GroupResource
from .store import Obj, Store

log = logging.getLogger(__name__)


class GarbageCollector:
    def __init__(
        self,
        *,
        store: Store,
        type_of: Callable[[GroupResource], ResourceType | None],
        delete: Callable[[ResourceType, Obj], None],
        remove: Callable[[ResourceType, Obj], object],
        drop_finalizer: Callable[[ResourceType, Obj, str], None],
    ) -> None:
        self._store = store
        self._type_of = type_of
        self._delete = delete
        self._remove = remove
        self._drop_finalizer = drop_finalizer
        self._foreground: set[str] = set()
        self._pending = asyncio.Event()
        self._owners: set[str] = set()
        self._namespaces: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="apiserver-gc")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def owner_gone(self, uid: str) -> None:
        self._owners.add(uid)
        self._pending.set()

    def check_owners_of(self, obj: Obj) -> None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("uid") and self._store.by_uid(ref["uid"]) is None:
                self.owner_gone(ref["uid"])

    def foreground(self, uid: str) -> None:
        self._foreground.add(uid)
        self._pending.set()

    def something_removed(self) -> None:
        if self._foreground:
            self._pending.set()

    def namespace_changed(self, name: str) -> None:
        self._namespaces.add(name)
        self._pending.set()

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                self._collect()
            except Exception:  # keep collecting; a failure here must not stop the server
                log.exception("garbage collection pass failed")

    def _collect(self) -> None:
        owners, self._owners = self._owners, set()
        if owners:
            for gr, obj in self._store.all_objects():
                refs = obj["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") in owners for r in refs):
                    continue
                if obj["metadata"].get("deletionTimestamp"):
                    continue
                if all(self._store.by_uid(r.get("uid", "")) is None for r in refs):
                    rtype = self._type_of(gr)
                    if rtype is not None:
                        self._delete(rtype, obj)
        namespaces, self._namespaces = self._namespaces, set()
        for name in namespaces:
            self._finish_namespace(name)
        for uid in list(self._foreground):
            self._advance_foreground(uid)

    def _advance_foreground(self, uid: str) -> None:
        found = self._store.by_uid(uid)
        if found is None or "foregroundDeletion" not in (
            found[1]["metadata"].get("finalizers") or []
        ):
            self._foreground.discard(uid)
            return
        dependents = [
            (gr, obj)
            for gr, obj in self._store.all_objects()
            if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])
        ]
        for gr, obj in dependents:
            rtype = self._type_of(gr)
            if rtype is not None and not obj["metadata"].get("deletionTimestamp"):
                self._delete(rtype, obj)
        if not dependents:
            rtype = self._type_of(found[0])
            self._foreground.discard(uid)
            if rtype is not None:
                self._drop_finalizer(rtype, found[1], "foregroundDeletion")

    def _finish_namespace(self, name: str) -> None:
        ns = self._store.get(("", "namespaces"), "", name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        for gr, obj in list(self._store.all_in_namespace(name)):
            if obj["metadata"].get("deletionTimestamp"):
                continue
            rtype = self._type_of(gr)
            if rtype is not None:
                self._delete(rtype, obj)
        if self._store.count_in_namespace(name) == 0 and not ns["metadata"].get("finalizers"):
            ns_type = self._type_of(("", "namespaces"))
            if ns_type is not None:
                self._remove(ns_type, ns)
