"""`run_hub_manager`: wires the client, informers, controllers, leader election and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from fl_contract import keys
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.controller import Controller
from fl_kube.errors import ApiError
from fl_kube.events import EventRecorder
from fl_kube.health import HealthServer
from fl_kube.informer import Informer
from fl_kube.leader import LeaderElector
from hub_manager import agent_rbac
from hub_manager.addon import AddonRegistration, ensure_namespace
from hub_manager.agent_rbac import AgentRbacReconciler
from hub_manager.metrics import HubMetrics
from hub_manager.placement import PLACEMENT_LABEL
from hub_manager.round_driver import COMPONENT, FederatedLearningReconciler
from hub_manager.settings import HubSettings

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class HubManager:
    """One manager process: serves metrics always, drives jobs only while leading."""

    def __init__(self, settings: HubSettings, *, metrics: HubMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or HubMetrics()
        self.leading = False
        self.synced = False
        self.fl_controller: Controller[tuple[str, str]] | None = None
        self.metrics_port: int | None = None
        self.registration: AddonRegistration | None = None

    def ready(self) -> bool:
        """Leading: caches synced and the add-on registered. Standing by: always."""
        if self.settings.leader_election and not self.leading:
            return True
        registered = self.registration is None or self.registration.done
        return self.synced and registered

    async def run(self) -> None:
        api = await KubeApi.from_kubeconfig(self.settings.kubeconfig)
        health: HealthServer | None = None
        try:
            if self.settings.metrics_enabled:
                health = HealthServer(
                    bind=self.settings.metrics_bind_address,
                    registry=self.metrics.registry,
                    ready=self.ready,
                )
                self.metrics_port = await health.start()
                log.info("metrics and probes on port %d", self.metrics_port)
            if self.settings.leader_election:
                with contextlib.suppress(ApiError):
                    await ensure_namespace(api, self.settings.leader_election_namespace)
                elector = LeaderElector(
                    api,
                    namespace=self.settings.leader_election_namespace,
                    name=self.settings.leader_election_name,
                    identity=self.settings.identity,
                    lease_duration=self.settings.lease_duration_seconds,
                    renew_deadline=self.settings.renew_deadline_seconds,
                    retry_period=self.settings.retry_period_seconds,
                )
                await elector.run(lambda: self._lead(api))
            else:
                await self._lead(api)
        finally:
            if health is not None:
                await health.stop()
            await api.close()

    async def _lead(self, api: KubeApi) -> None:
        """Everything that writes: only one replica runs this at a time."""
        self.leading = True
        self.registration = AddonRegistration(
            api,
            self.settings.addon_templates_dir,
            events=EventRecorder(api, component=COMPONENT, instance=self.settings.identity),
            event_namespace=self.settings.leader_election_namespace,
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.registration.run(), name="addon-registration")
                group.create_task(self._run_controllers(api), name="controllers")
        finally:
            self.leading = False
            self.synced = False

    async def _run_controllers(self, api: KubeApi) -> None:
        settings = self.settings
        jobs = Informer(api, r.FEDERATED_LEARNING)
        # One cluster-wide list and watch each, selected on the server: only our add-on of
        # every cluster namespace (not the fleet's other add-ons), and only decisions a
        # Placement owns (paged at 100 clusters per object; every page carries the label).
        addons = Informer(
            api, r.MANAGED_CLUSTER_ADDON, field_selector=f"metadata.name={keys.ADDON_NAME}"
        )
        placements = Informer(api, r.PLACEMENT)
        decisions = Informer(api, r.PLACEMENT_DECISION, label_selector=PLACEMENT_LABEL)
        works = Informer(
            api,
            r.MANIFEST_WORK,
            label_selector=f"{keys.LABEL_COMPONENT}={keys.COMPONENT_ROUND_SPEC}",
        )
        roles = Informer(api, r.ROLE, label_selector=agent_rbac.SELECTOR)
        role_bindings = Informer(api, r.ROLE_BINDING, label_selector=agent_rbac.SELECTOR)
        clusters = Informer(api, r.MANAGED_CLUSTER)
        informers = [jobs, addons, placements, decisions, works, roles, role_bindings, clusters]

        driver = FederatedLearningReconciler(
            api,
            settings=settings,
            jobs=jobs,
            addons=addons,
            placements=placements,
            decisions=decisions,
            works=works,
            metrics=self.metrics,
            clusters=clusters,
        )
        rbac = AgentRbacReconciler(api, addons=addons, roles=roles, role_bindings=role_bindings)
        fl_controller: Controller[tuple[str, str]] = Controller(
            "federatedlearning",
            driver.reconcile,
            workers=settings.workers,
            metrics=self.metrics.controllers,
        )
        rbac_controller: Controller[str] = Controller(
            "agent-rbac",
            rbac.reconcile,
            workers=settings.rbac_workers,
            metrics=self.metrics.controllers,
        )
        self.fl_controller = fl_controller
        # A job's own changes reconcile it at once; events about the objects around it
        # (reports, placements, works) wait out the backoff of a job that keeps failing.
        _route(jobs, fl_controller, driver.keys_for_job_event)
        # Reports and round-spec progress come in bursts (each participant several times a
        # round): a burst is handled in one pass, not one pass per report.
        batch = driver.report_batch_delay
        _route(addons, fl_controller, driver.keys_for_addon, respect_backoff=True, delay=batch)
        _route(placements, fl_controller, driver.keys_for_placement_object, respect_backoff=True)
        _route(decisions, fl_controller, driver.keys_for_placement_object, respect_backoff=True)
        _route(works, fl_controller, driver.keys_for_work, respect_backoff=True, delay=batch)
        _route(addons, rbac_controller, rbac.keys_for_event)
        _route(roles, rbac_controller, rbac.keys_for_event)
        _route(role_bindings, rbac_controller, rbac.keys_for_event)

        async with asyncio.TaskGroup() as group:
            for informer in informers:
                group.create_task(informer.run(), name=f"informer-{informer.resource.plural}")
            for informer in informers:
                await informer.wait_synced(settings.sync_timeout_seconds)
            self.synced = True
            log.info("caches synced; driving jobs")
            group.create_task(fl_controller.run(), name="controller-federatedlearning")
            group.create_task(rbac_controller.run(), name="controller-agent-rbac")
            group.create_task(self._resync(jobs, fl_controller), name="resync")

    async def _resync(self, jobs: Informer, controller: Controller[tuple[str, str]]) -> None:
        """Level-based safety net: every job is looked at again now and then."""
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for job in jobs.list():
                metadata = job.get("metadata") or {}
                key = (str(metadata.get("namespace")), str(metadata.get("name")))
                controller.enqueue(key, respect_backoff=True)


def _route(
    informer: Informer,
    controller: Controller[K],
    keys_of: Callable[[dict[str, Any]], list[K]],
    *,
    respect_backoff: bool = False,
    delay: Callable[[K], float] | None = None,
) -> None:
    """Reconcile the keys of each event of `informer`; after `delay(key)` seconds when
    given (the events of that wait are then handled in one pass)."""

    def handler(event_type: str, obj: dict[str, Any]) -> None:
        del event_type
        for key in keys_of(obj):
            wait = delay(key) if delay is not None else 0.0
            controller.queue.add_after(key, wait, respect_backoff=respect_backoff)

    informer.subscribe(handler)


async def run_hub_manager(settings: HubSettings, *, metrics: HubMetrics | None = None) -> None:
    """Run until cancelled; on cancel, stop the controllers and close connections."""
    log.info("hub manager %s starting", settings.identity)
    await HubManager(settings, metrics=metrics).run()
