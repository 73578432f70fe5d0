"""The health Lease OCM add-on agents renew in their namespace.

The add-on manager (and the sandbox's emulation of it) reads the Lease's renewTime to decide
whether the add-on is Available; the agent renews only while it is healthy, so a stuck agent
turns the add-on unavailable on the hub.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.errors import Conflict, NotFound

log = logging.getLogger(__name__)

UNHEALTHY_RECHECK_SECONDS = 0.2


def micro_time(when: datetime) -> str:
    """metav1.MicroTime as the API serialises it."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseRenewer:
    """Creates the Lease if needed, then renews its renewTime every period while healthy."""

    def __init__(
        self,
        spoke: KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: int,
        renew_seconds: float,
        healthy: Callable[[], bool],
    ) -> None:
        self._spoke = spoke
        self._namespace = namespace
        self._name = name
        self._identity = identity
        self._duration = duration_seconds
        self._period = renew_seconds
        self._healthy = healthy
        self.renewals = 0
        self.last_renewed: datetime | None = None

    async def run(self) -> None:
        """Renew every period while healthy; while not, look again soon, so the add-on turns
        Available as soon as the agent can work."""
        while True:
            if not self._healthy():
                await asyncio.sleep(min(self._period, UNHEALTHY_RECHECK_SECONDS))
                continue
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "health lease %s/%s: renewal failed: %s", self._namespace, self._name, exc
                )
            await asyncio.sleep(self._period)

    async def renew(self) -> None:
        now = datetime.now(UTC)
        spec: dict[str, Any] = {
            "holderIdentity": self._identity,
            "leaseDurationSeconds": self._duration,
            "renewTime": micro_time(now),
        }
        # One write per renewal, with no read before it and no precondition: the agent is
        # the Lease's only writer. Only a missing Lease (the first start, or deleted) costs
        # a create.
        try:
            await self._spoke.patch(r.LEASE, self._name, {"spec": spec}, namespace=self._namespace)
        except NotFound:
            body = {
                "apiVersion": r.LEASE.api_version,
                "kind": r.LEASE.kind,
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": {**spec, "acquireTime": micro_time(now)},
            }
            try:
                await self._spoke.create(r.LEASE, body, namespace=self._namespace)
            except Conflict:
                return  # created meanwhile (another replica); renew next period
        self.renewals += 1
        self.last_renewed = now
