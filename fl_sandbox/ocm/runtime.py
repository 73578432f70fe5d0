"""The plumbing every emulated OCM controller shares: informers, controllers, their tasks.

Each emulated controller declares the informers it reads and the controllers it drives
here; ``start`` runs the informers, waits for their first list, then runs the controllers,
so no reconcile sees a half-filled cache. ``stop`` cancels everything and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from fl_kube import Controller, ControllerMetrics, Informer, KubeApi, Result, WatchSettings
from fl_kube.informer import Handler
from fl_kube.resources import Resource

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Runtime:
    """Owns the informers and controllers of the emulated OCM control plane."""

    def __init__(
        self,
        *,
        metrics: ControllerMetrics,
        watch_settings: WatchSettings | None = None,
        resync_period: float | None = None,
    ) -> None:
        self.metrics = metrics
        self._watch_settings = watch_settings
        self._resync_period = resync_period
        self._handlers: list[tuple[Informer, Handler]] = []
        self._inflight = 0
        self._informers: list[Informer] = []
        self._by_key: dict[tuple[Any, ...], Informer] = {}
        self._by_namespace: dict[int, dict[str, list[Handler]]] = {}
        self._controllers: list[Controller[Any]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._extra: list[Callable[[], Awaitable[None]]] = []

    def informer(
        self,
        api: KubeApi,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Informer:
        """An informer run by ``start``; one per (client, resource, scope), shared by callers."""
        key = (id(api), res, namespace, label_selector, field_selector)
        shared = self._by_key.get(key)
        if shared is not None:
            return shared
        informer = Informer(
            api,
            res,
            namespace=namespace,
            label_selector=label_selector,
            field_selector=field_selector,
            settings=self._watch_settings,
        )
        self._informers.append(informer)
        self._by_key[key] = informer
        return informer

    def on(self, informer: Informer, handler: Handler) -> None:
        """Call ``handler(event_type, obj)`` on the informer's changes (and on resync)."""
        self._handlers.append((informer, handler))
        informer.subscribe(handler)

    def on_namespace(self, informer: Informer, namespace: str, handler: Handler) -> None:
        """``on``, for the objects of one namespace: many per-cluster controllers share one
        fleet-wide informer (one watch, not one per cluster) and each event costs one lookup."""
        table = self._by_namespace.get(id(informer))
        if table is None:
            routes: dict[str, list[Handler]] = {}
            self._by_namespace[id(informer)] = table = routes

            def dispatch(event_type: str, obj: dict[str, Any]) -> None:
                namespace = str((obj.get("metadata") or {}).get("namespace") or "")
                for route in routes.get(namespace, ()):
                    route(event_type, obj)

            self.on(informer, dispatch)
        table.setdefault(namespace, []).append(handler)

    def resync(self) -> None:
        """Hand every cached object to its handlers again, so every key is reconciled.

        Level-based controllers then correct drift nobody told them about (an applied object
        deleted on a spoke, a status overwritten), as client-go's informer resync does.
        """
        for informer, handler in self._handlers:
            for obj in informer.list():
                handler("MODIFIED", obj)

    def controller(
        self,
        name: str,
        reconcile: Callable[[K], Awaitable[Result | None]],
        *,
        workers: int = 2,
    ) -> Controller[K]:
        """A new controller, run by ``start`` once every informer has synced."""

        async def counted(key: K) -> Result | None:
            self._inflight += 1
            try:
                return await reconcile(key)
            finally:
                self._inflight -= 1

        controller: Controller[K] = Controller(name, counted, workers=workers, metrics=self.metrics)
        self._controllers.append(controller)
        return controller

    def background(self, run: Callable[[], Awaitable[None]]) -> None:
        """Another long-running coroutine started with the controllers (e.g. a job runner)."""
        self._extra.append(run)

    def is_idle(self) -> bool:
        """Every controller has nothing queued or running (tests may wait on this)."""
        return all(c.is_idle() for c in self._controllers)

    def is_settled(self) -> bool:
        """Nothing queued or running now; looks scheduled for later (requeue_after) allowed."""
        return self._inflight == 0 and all(
            len(c.queue) == 0 and c.queue.longest_running() == 0.0 for c in self._controllers
        )

    async def start(self, *, sync_timeout: float = 30.0) -> None:
        """Run the informers, wait for their caches, then run the controllers."""
        for informer in self._informers:
            self._spawn(informer.run(), f"informer-{informer.resource}")
        await asyncio.gather(*(i.wait_synced(sync_timeout) for i in self._informers))
        for controller in self._controllers:
            self._spawn(controller.run(), f"controller-{controller.name}")
        for run in self._extra:
            self._spawn(run(), "background")
        if self._resync_period:
            self._spawn(self._resync_loop(self._resync_period), "resync")

    async def _resync_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            self.resync()

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s stopped with an error", name)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def stop(self) -> None:
        """Cancel every task and wait for them to finish."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
