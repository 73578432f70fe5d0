"""Withdrawing the agent from a cluster when its add-on is disabled.

OCM runs the AddOnTemplate's pre-delete hook Job (`fl-spoke-agent --cleanup`) when a
ManagedClusterAddOn is deleted, before it removes the agent. While that Job exists the
running agent stops publishing dataset claims and renewing its Lease (`uninstalling`);
the Job deletes both and waits until they stay gone, so the hub's ManagedCluster status
loses the claims and Placements stop selecting the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from fl_contract import keys
from fl_kube import resources as r
from fl_kube.client import KubeApi

log = logging.getLogger(__name__)

CLAIM_SELECTOR = f"{keys.LABEL_CLAIM_OWNER}={keys.ADDON_NAME}"


async def uninstalling(spoke: KubeApi, namespace: str) -> bool:
    """Whether the add-on's pre-delete cleanup Job exists in the agent namespace."""
    job = await spoke.get_or_none(r.JOB, keys.CLEANUP_JOB_NAME, namespace=namespace)
    return job is not None


@dataclass
class Withdrawal:
    """What the cleanup removed, for its log line."""

    claims: set[str] = field(default_factory=set)
    lease: bool = False


async def _remove_once(spoke: KubeApi, namespace: str, done: Withdrawal) -> bool:
    """Delete our claims and the Lease; True when there was nothing left to delete."""
    claims = (await spoke.list(r.CLUSTER_CLAIM, label_selector=CLAIM_SELECTOR)).items
    for claim in claims:
        name = str(claim["metadata"]["name"])
        if await spoke.delete(r.CLUSTER_CLAIM, name):
            done.claims.add(name)
    lease_deleted = await spoke.delete(r.LEASE, keys.AGENT_LEASE_NAME, namespace=namespace)
    done.lease = done.lease or lease_deleted
    return not claims and not lease_deleted


async def withdraw(
    spoke: KubeApi,
    *,
    namespace: str,
    quiet_seconds: float = 6.0,
    poll_seconds: float = 1.0,
    timeout_seconds: float = 240.0,
) -> Withdrawal:
    """Delete the agent's claims and Lease until none came back for `quiet_seconds`
    (the running agent may write once more before it notices the cleanup Job).

    Raises TimeoutError naming what keeps coming back after `timeout_seconds`.
    """
    done = Withdrawal()
    deadline = time.monotonic() + timeout_seconds
    quiet_since: float | None = None
    while True:
        now = time.monotonic()
        if await _remove_once(spoke, namespace, done):
            quiet_since = quiet_since if quiet_since is not None else now
            if now - quiet_since >= quiet_seconds:
                return done
        else:
            quiet_since = None
        if now >= deadline:
            raise TimeoutError(
                f"dataset claims or the Lease {namespace}/{keys.AGENT_LEASE_NAME} keep coming "
                f"back after {timeout_seconds:.0f}s: is an agent of another install running?"
            )
        await asyncio.sleep(poll_seconds)


async def run_cleanup(kubeconfig: str | None, namespace: str) -> None:
    """`fl-spoke-agent --cleanup`: withdraw and log what was removed."""
    async with await KubeApi.from_kubeconfig(kubeconfig) as spoke:
        done = await withdraw(spoke, namespace=namespace)
    log.info(
        "withdrawn: %d dataset claim(s)%s%s",
        len(done.claims),
        f" ({', '.join(sorted(done.claims))})" if done.claims else "",
        "; health Lease deleted" if done.lease else "",
    )
