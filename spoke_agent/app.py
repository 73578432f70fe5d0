"""Wires the agent together and runs it until cancelled."""

from __future__ import annotations

import asyncio
import logging

from fl_contract import keys
from fl_kube.client import KubeApi
from fl_kube.health import HealthServer
from fl_kube.informer import WatchSettings
from spoke_agent.claims import ClaimPublisher
from spoke_agent.lease import LeaseRenewer
from spoke_agent.metrics import AgentMetrics
from spoke_agent.reporting import StatusWriter
from spoke_agent.rounds import RoundController
from spoke_agent.settings import AgentSettings

log = logging.getLogger(__name__)


class Agent:
    """One cluster's agent: claims, rounds, health lease and the metrics/probe server."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        hub: KubeApi,
        spoke: KubeApi,
        watch: WatchSettings | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = AgentMetrics()
        self.status = StatusWriter(
            hub,
            cluster=settings.cluster_name,
            addon=settings.addon_name,
            metrics=self.metrics,
            conflict_retries=settings.report_conflict_retries,
            watch=watch,
        )
        self.claims = ClaimPublisher(
            spoke,
            namespace=settings.namespace,
            catalogue_path=settings.datasets,
            status=self.status,
            metrics=self.metrics,
            poll_seconds=settings.catalogue_poll_seconds,
            recheck_seconds=settings.resync_seconds,
            watch=watch,
        )
        self.rounds = RoundController(
            spoke,
            settings=settings,
            status=self.status,
            claims=self.claims,
            metrics=self.metrics,
            watch=watch,
        )
        self.lease = LeaseRenewer(
            spoke,
            namespace=settings.namespace,
            name=keys.AGENT_LEASE_NAME,
            identity=settings.identity,
            duration_seconds=settings.lease_duration_seconds,
            renew_seconds=settings.lease_renew_seconds,
            healthy=lambda: self.healthy() and not self.claims.withdrawn,
        )
        self.health: HealthServer | None = None
        if settings.metrics_enabled:
            self.health = HealthServer(
                bind=settings.metrics_bind_address,
                registry=self.metrics.registry,
                ready=self.ready,
                healthy=self.healthy,
            )
        self._tasks_alive = False

    def ready(self) -> bool:
        """Ready once both watches have listed: rounds can be acted on."""
        return self.rounds.ready

    def healthy(self) -> bool:
        """Healthy while every loop is running and the watches have listed."""
        return self._tasks_alive and self.rounds.ready

    @property
    def metrics_port(self) -> int | None:
        return self.health.port if self.health else None

    async def run(self) -> None:
        """Until cancelled. A loop that dies takes the agent down (the pod restarts it)."""
        s = self.settings
        if self.health is not None:
            port = await self.health.start()
            log.info("metrics and probes on %s (port %d)", s.metrics_bind_address, port)
        log.info(
            "agent for cluster %s running in namespace %s (datasets: %s)",
            s.cluster_name,
            s.namespace,
            s.datasets or "none",
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.claims.run(), name="dataset-claims")
                group.create_task(self.rounds.run(), name="rounds")
                group.create_task(self.lease.run(), name="health-lease")
                group.create_task(self.status.run(), name="addon-informer")
                self._tasks_alive = True
        finally:
            self._tasks_alive = False
            if self.health is not None:
                await self.health.stop()


async def run_agent(settings: AgentSettings) -> None:
    """Run the agent for one managed cluster until cancelled; close its clients on the way out."""
    hub = await KubeApi.from_kubeconfig(settings.hub_kubeconfig)
    try:
        spoke = await KubeApi.from_kubeconfig(settings.kubeconfig)
    except BaseException:
        await hub.close()
        raise
    try:
        await Agent(settings, hub=hub, spoke=spoke).run()
    finally:
        await spoke.close()
        await hub.close()
