"""Leader election over a coordination.k8s.io/v1 Lease, as client-go does it.

A candidate takes the Lease when it is free or its holder has not renewed it for
``lease_duration`` (measured on the candidate's own clock, from when it last saw the record
change, so clock skew between replicas does not matter). Every write carries the Lease's
resourceVersion, so two candidates can never both win. The leader renews every
``retry_period``; if it cannot renew for ``renew_deadline`` it cancels its work and contends
again. On a clean stop it releases the Lease so a successor need not wait.

A candidate that cannot reach the API (or is refused) retries with exponential backoff from
``retry_period`` up to ``max_retry_backoff``, with one WARNING per attempt; one that finds the
Lease held by a live leader simply checks again every ``retry_period``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fl_kube.backoff import Backoff, BackoffPolicy
from fl_kube.client import KubeApi
from fl_kube.errors import Conflict, NotFound
from fl_kube.resources import LEASE

log = logging.getLogger(__name__)


def micro_time(when: dt.datetime | None = None) -> str:
    """A Kubernetes MicroTime string (RFC 3339 with microseconds, UTC)."""
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Run a coroutine only while this process holds the Lease."""

    def __init__(
        self,
        api: KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15,
        renew_deadline: float = 10,
        retry_period: float = 2,
        max_retry_backoff: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity")
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._is_leader = False
        self._observed: dict[str, Any] | None = None  # last lease spec seen
        self._observed_at = 0.0
        self._lease_rv: str | None = None
        self._backoff = Backoff(
            BackoffPolicy(base=retry_period, cap=max(retry_period, max_retry_backoff))
        )
        self.error: Exception | None = None  # why the last attempt failed, if it was an error
        self.transitions = 0  # times this elector became leader

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    @property
    def observed_holder(self) -> str:
        return str((self._observed or {}).get("holderIdentity") or "")

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        """Contend, lead while the Lease is held, contend again after losing it.

        Returns when ``lead()`` returns (after releasing the Lease); re-raises what it raises.
        Cancellation cancels ``lead()`` and releases the Lease.
        """
        while True:
            await self._acquire()
            self._is_leader = True
            self.transitions += 1
            log.info("%s: became leader of lease %s/%s", self.identity, self.namespace, self.name)
            lead_task = asyncio.create_task(_await(lead), name=f"lead-{self.name}")
            renew_task = asyncio.create_task(self._keep_renewing(), name=f"renew-{self.name}")
            try:
                done, _ = await asyncio.wait(
                    {lead_task, renew_task}, return_when=asyncio.FIRST_COMPLETED
                )
            except asyncio.CancelledError:
                await _cancel(lead_task, renew_task)
                self._is_leader = False
                await self._release()
                raise
            if lead_task in done:
                await _cancel(renew_task)
                self._is_leader = False
                await self._release()
                lead_task.result()  # re-raise a failure of lead()
                return
            # Renewal failed: stop leading before anyone else can start.
            self._is_leader = False
            log.warning("%s: lost lease %s/%s", self.identity, self.namespace, self.name)
            await _cancel(lead_task)

    async def _acquire(self) -> None:
        while True:
            if await self._try_acquire_or_renew():
                self._backoff.reset()
                return
            if self.error is None:  # held by a live leader: look again next period
                self._backoff.reset()
                await asyncio.sleep(self.retry_period)
                continue
            delay = self._backoff.next()
            log.warning(
                "%s: cannot acquire lease %s/%s: %s; retrying in %.3gs",
                self.identity,
                self.namespace,
                self.name,
                self.error,
                delay,
            )
            await asyncio.sleep(delay)

    async def _keep_renewing(self) -> None:
        """Returns when leadership is lost."""
        last_renew = self._clock()
        while True:
            await asyncio.sleep(self.retry_period)
            if await self._try_acquire_or_renew():
                last_renew = self._clock()
                continue
            if self.observed_holder not in ("", self.identity):
                return  # someone else holds it now
            if self.error is not None:
                log.warning(
                    "%s: cannot renew lease %s/%s: %s",
                    self.identity,
                    self.namespace,
                    self.name,
                    self.error,
                )
            if self._clock() - last_renew >= self.renew_deadline:
                return

    async def _try_acquire_or_renew(self) -> bool:
        """True when this process holds the Lease now; ``error`` says why not, if it failed."""
        self.error = None
        now = dt.datetime.now(dt.UTC)
        try:
            lease = await self._api.get(LEASE, self.name, namespace=self.namespace)
        except NotFound:
            return await self._create(now)
        except Exception as exc:  # any failure to read is a failure to renew
            self.error = exc
            return False
        spec = dict(lease.get("spec") or {})
        self._observe(spec)
        holder = str(spec.get("holderIdentity") or "")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = self._clock() >= self._observed_at + duration
        if holder and holder != self.identity and not expired:
            return False
        new_spec = dict(spec)
        if holder != self.identity:
            new_spec["acquireTime"] = micro_time(now)
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if holder else 0
            )
        new_spec["holderIdentity"] = self.identity
        new_spec["leaseDurationSeconds"] = max(1, round(self.lease_duration))
        new_spec["renewTime"] = micro_time(now)
        lease["spec"] = new_spec
        try:
            updated = await self._api.replace(LEASE, lease, namespace=self.namespace)
        except Conflict:
            return False
        except Exception as exc:
            self.error = exc
            return False
        self._observe(dict(updated.get("spec") or {}))
        return True

    async def _create(self, now: dt.datetime) -> bool:
        body = {
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_duration)),
                "acquireTime": micro_time(now),
                "renewTime": micro_time(now),
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._api.create(LEASE, body, namespace=self.namespace)
        except Conflict:  # someone else created it first
            return False
        except Exception as exc:
            self.error = exc
            return False
        self._observe(dict(created.get("spec") or {}))
        return True

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self._observed:
            self._observed = spec
            self._observed_at = self._clock()

    async def _release(self) -> None:
        """Hand the Lease back (only if we still hold it), so a successor starts at once."""
        try:
            lease = await self._api.get(LEASE, self.name, namespace=self.namespace)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.identity:
                return
            spec["holderIdentity"] = ""
            spec["leaseDurationSeconds"] = 1
            spec["renewTime"] = micro_time()
            lease["spec"] = spec
            await self._api.replace(LEASE, lease, namespace=self.namespace)
            log.info("%s: released lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as exc:  # best effort: the lease expires anyway
            log.info("%s: could not release lease %s: %s", self.identity, self.name, exc)


async def _await(lead: Callable[[], Awaitable[None]]) -> None:
    await lead()


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
