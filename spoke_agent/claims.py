"""Dataset ClusterClaims: one per catalogue entry, kept in line with the catalogue file.

The klusterlet copies ClusterClaims into the hub's ManagedCluster status, where a Placement's
`claimSelector` can pick the clusters that hold a dataset. Claims the agent owns carry
`keys.LABEL_CLAIM_OWNER`; claims without it belong to someone else and are never touched.
While the add-on's cleanup Job runs (the add-on is being disabled) nothing is published:
the Job withdraws the claims (spoke_agent/cleanup.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import DatasetCatalogue
from fl_kube import resources as r
from fl_kube.backoff import Backoff, BackoffPolicy
from fl_kube.client import KubeApi
from fl_kube.controller import TemporaryError
from fl_kube.errors import Conflict, is_temporary
from fl_kube.informer import Informer, WatchSettings
from spoke_agent import conditions as cond
from spoke_agent.catalogue import CatalogueSnapshot, read_catalogue
from spoke_agent.cleanup import uninstalling
from spoke_agent.metrics import AgentMetrics
from spoke_agent.reporting import StatusWriter

log = logging.getLogger(__name__)

CLAIM_OWNER = keys.ADDON_NAME
MAX_SYNCED_CLAIMS = 20  # the klusterlet copies only the first 20 custom claims by default
MAX_RETRY_SECONDS = 60.0  # longest wait between attempts while the hub or spoke API fails
_UNSET = object()


def desired_claims(catalogue: DatasetCatalogue) -> dict[str, str]:
    """Claim name -> value for every dataset in the catalogue."""
    return {naming.dataset_claim_name(d.name): d.claim_value() for d in catalogue.datasets}


def claim_manifest(name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": r.CLUSTER_CLAIM.api_version,
        "kind": r.CLUSTER_CLAIM.kind,
        "metadata": {
            "name": name,
            "labels": {
                keys.LABEL_CLAIM_OWNER: CLAIM_OWNER,
                keys.LABEL_MANAGED_BY: keys.AGENT_FIELD_MANAGER,
                keys.LABEL_PART_OF: keys.ADDON_NAME,
            },
        },
        "spec": {"value": value},
    }


def is_owned(claim: dict[str, Any]) -> bool:
    labels = (claim.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(keys.LABEL_CLAIM_OWNER) == CLAIM_OWNER)


@dataclass
class ClaimPlan:
    """The writes that bring the cluster's claims to the desired set."""

    create: dict[str, str] = field(default_factory=dict)
    update: dict[str, str] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # wanted names held by someone else

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def plan_claims(desired: dict[str, str], existing: list[dict[str, Any]]) -> ClaimPlan:
    """Compare desired claims with all claims on the cluster; only owned ones may change."""
    by_name = {str(c["metadata"]["name"]): c for c in existing}
    plan = ClaimPlan()
    for name, value in sorted(desired.items()):
        claim = by_name.get(name)
        if claim is None:
            plan.create[name] = value
        elif not is_owned(claim):
            plan.foreign.append(name)
        elif (claim.get("spec") or {}).get("value") != value:
            plan.update[name] = value
    for name, claim in sorted(by_name.items()):
        if is_owned(claim) and name not in desired:
            plan.delete.append(name)
    return plan


class ClaimPublisher:
    """Polls the catalogue file; keeps the claims and the add-on's Degraded condition in line."""

    def __init__(
        self,
        spoke: KubeApi,
        *,
        namespace: str,
        catalogue_path: Path | None,
        status: StatusWriter,
        metrics: AgentMetrics,
        poll_seconds: float,
        recheck_seconds: float = 60.0,
        watch: WatchSettings | None = None,
    ) -> None:
        self._spoke = spoke
        self._namespace = namespace
        self._path = catalogue_path
        self._status = status
        self._metrics = metrics
        self._poll = poll_seconds
        self._last_digest: str | None = None
        # The add-on's cleanup Job (its one name): a watch, not a GET at every poll.
        self.cleanup = Informer(
            spoke,
            r.JOB,
            namespace=namespace,
            field_selector=f"metadata.name={keys.CLEANUP_JOB_NAME}",
            settings=watch,
        )
        # The claims last written, and when to list them again anyway (someone else may
        # have changed or deleted one): an unchanged catalogue costs no request till then.
        self._recheck = recheck_seconds
        self._published: dict[str, str] | None = None
        self._recheck_at = 0.0
        self.catalogue: DatasetCatalogue | None = None if catalogue_path else DatasetCatalogue()
        """The last valid catalogue (the Job builder reads datasets from it)."""
        self.error: str | None = None
        self.loaded = asyncio.Event()  # set once the file was read (valid or not)
        self.synced = asyncio.Event()  # set once claims and Degraded were written once
        # The error text last written (None: healthy); unset until the first write, so a
        # stale Degraded condition from before a restart is cleared too.
        self._degraded_written: str | object | None = _UNSET
        self._warned_foreign: set[str] = set()
        self.withdrawn = False
        """True while the add-on is being disabled: no claims, no health Lease."""

    async def run(self) -> None:
        """Until cancelled: re-read the file and re-check the claims every poll period; after
        a failure (an API out of reach), wait longer each time, up to MAX_RETRY_SECONDS."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.cleanup.run(), name="cleanup-job-informer")
            group.create_task(self._poll_loop(), name="catalogue-poll")

    async def _poll_loop(self) -> None:
        backoff = Backoff(BackoffPolicy(base=self._poll, cap=max(self._poll, MAX_RETRY_SECONDS)))
        while True:
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff.next()
                if is_temporary(exc) or isinstance(exc, Conflict | TemporaryError):
                    log.warning("dataset claims: will retry in %.3gs: %s", delay, exc)
                else:
                    log.exception("dataset claims: sync failed; will retry in %.3gs", delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            await asyncio.sleep(self._poll)

    async def sync_once(self) -> None:
        snapshot = self._read()
        if snapshot.digest != self._last_digest:
            self._last_digest = snapshot.digest
            if snapshot.error:
                log.error("%s; the published dataset claims stay as they are", snapshot.error)
            elif self._path is not None:
                assert snapshot.catalogue is not None
                log.info(
                    "dataset catalogue %s: %d dataset(s)",
                    self._path,
                    len(snapshot.catalogue.datasets),
                )
        self.error = snapshot.error
        if snapshot.catalogue is not None:
            self.catalogue = snapshot.catalogue
        self.loaded.set()
        withdrawn = await self._uninstalling()
        if withdrawn != self.withdrawn:
            self.withdrawn = withdrawn
            self._published = None  # the cleanup removed them: list again
            log.info(
                "the add-on is being disabled: dataset claims are withdrawn"
                if withdrawn
                else "the add-on's cleanup is gone: publishing dataset claims again"
            )
        if withdrawn:
            return
        if snapshot.catalogue is not None:
            await self._publish(snapshot.catalogue)
        await self._write_degraded(snapshot.error)
        self.synced.set()

    async def _uninstalling(self) -> bool:
        """Whether the cleanup Job exists: from the watch of it once that has listed."""
        if not self.cleanup.has_synced:
            return await uninstalling(self._spoke, self._namespace)
        return self.cleanup.get(keys.CLEANUP_JOB_NAME, self._namespace) is not None

    def _read(self) -> CatalogueSnapshot:
        if self._path is None:
            return CatalogueSnapshot("none", DatasetCatalogue(), None)
        return read_catalogue(self._path)

    async def _publish(self, catalogue: DatasetCatalogue) -> None:
        desired = desired_claims(catalogue)
        if len(desired) > MAX_SYNCED_CLAIMS:
            log.warning(
                "%d datasets: the hub sees only the first %d claims by name",
                len(desired),
                MAX_SYNCED_CLAIMS,
            )
        now = time.monotonic()
        if desired == self._published and now < self._recheck_at:
            return  # as last written: the cluster is asked again only every recheck period
        existing = (await self._spoke.list(r.CLUSTER_CLAIM)).items
        plan = plan_claims(desired, existing)
        for name in plan.foreign:
            if name not in self._warned_foreign:
                self._warned_foreign.add(name)
                log.warning("ClusterClaim %s exists and is not ours; leaving it alone", name)
        for name, value in plan.create.items():
            try:
                await self._spoke.create(r.CLUSTER_CLAIM, claim_manifest(name, value))
                log.info("published ClusterClaim %s=%s", name, value)
            except Conflict:
                log.info("ClusterClaim %s appeared meanwhile; checking again next time", name)
        for name, value in plan.update.items():
            await self._spoke.patch(r.CLUSTER_CLAIM, name, {"spec": {"value": value}})
            log.info("updated ClusterClaim %s=%s", name, value)
        for name in plan.delete:
            await self._spoke.delete(r.CLUSTER_CLAIM, name)
            log.info("removed ClusterClaim %s (dataset no longer in the catalogue)", name)
        self._metrics.claims_published.set(len(desired) - len(plan.foreign))
        self._published = desired
        self._recheck_at = now + self._recheck

    async def _write_degraded(self, error: str | None) -> None:
        if error == self._degraded_written:
            return

        def mutate(conditions: list[cond.Condition]) -> list[cond.Condition] | None:
            if error is not None:
                new = cond.make_condition(
                    type_=cond.DEGRADED,
                    status="True",
                    reason=cond.REASON_CATALOGUE_INVALID,
                    message=error,
                    now=cond.now_utc(),
                )
                return cond.set_condition(conditions, new)
            old = cond.find(conditions, cond.DEGRADED)
            if old is None or old.get("reason") != cond.REASON_CATALOGUE_INVALID:
                return None  # not ours to clear
            healthy = cond.make_condition(
                type_=cond.DEGRADED,
                status="False",
                reason=cond.REASON_CATALOGUE_VALID,
                message="the dataset catalogue is valid",
                now=cond.now_utc(),
            )
            return cond.set_condition(conditions, healthy)

        await self._status.update(mutate, what="Degraded condition", result="Health")
        self._degraded_written = error
