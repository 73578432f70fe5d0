"""The agent's settings: one typed model, every default documented in one place."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fl_contract import keys
from fl_kube.process import BindAddress, Seconds, default_identity

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

DEFAULT_HUB_KUBECONFIG = "/managed/hub-kubeconfig/kubeconfig"
DEFAULT_METRICS_BIND = ":8081"


class AgentSettings(BaseModel):
    """How one agent runs: which cluster it speaks for, where its APIs are, its timings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cluster_name: str
    """The managed cluster's name on the hub (also the hub namespace of its add-on)."""
    hub_kubeconfig: str = DEFAULT_HUB_KUBECONFIG
    """Kubeconfig of the add-on's hub identity, issued by the add-on manager."""
    kubeconfig: str | None = None
    """Kubeconfig of the managed cluster; None means in-cluster configuration."""
    namespace: str
    """The add-on install namespace on the managed cluster (round specs, Jobs, Lease)."""
    datasets: Path | None = None
    """The dataset catalogue (YAML); None publishes no dataset claims."""
    metrics_bind_address: BindAddress = DEFAULT_METRICS_BIND
    """Where /metrics, /healthz and /readyz listen (`host:port`, `:port`, or `0` for off)."""
    identity: str = Field(default_factory=default_identity)
    """Holder identity written into the health Lease."""
    file_store_root: Path | None = None
    """Where a `file://` model store's folder is on this machine (default: the URI's path)."""
    addon_name: str = keys.ADDON_NAME
    """The ManagedClusterAddOn (on the hub) whose status carries the reports."""

    lease_duration_seconds: Annotated[int, Field(ge=1)] = 60
    """leaseDurationSeconds of the health Lease (OCM's add-on lease default)."""
    lease_renew_seconds: Seconds = 10.0
    """How often the health Lease is renewed while the agent is healthy."""
    catalogue_poll_seconds: Seconds = 5.0
    """How often the catalogue file is re-read and the claims re-checked."""
    resync_seconds: Seconds = 60.0
    """Every round spec is reconciled again at least this often (level-based safety net)."""
    workers: Annotated[int, Field(ge=1, le=64)] = 4
    """Round specs reconciled in parallel."""
    report_conflict_retries: Annotated[int, Field(ge=1)] = 10
    """Attempts at one status write when the add-on changes under it (409)."""
    training_report_delay_seconds: Annotated[float, Field(ge=0)] = 5.0
    """How long a Job runs before the hub is told the round is Training: a Job that is done
    sooner reports its update in one write, without the Training one before it."""
    job_backoff_limit: Annotated[int, Field(ge=0, le=10)] = 1
    """backoffLimit of training Jobs: a retry for a transient node failure, no more."""
    job_ttl_seconds: Annotated[int, Field(ge=0)] = 86400
    """ttlSecondsAfterFinished of training Jobs: long enough to report after a long outage."""
    min_active_deadline_seconds: Annotated[int, Field(ge=1)] = 1
    """activeDeadlineSeconds never goes below this, even for a deadline about to pass."""
    sync_timeout_seconds: Seconds = 60.0
    """How long the watches may take to list before the agent reports not ready."""

    @field_validator("cluster_name", "namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value) or len(value) > 63:
            raise ValueError(
                "must be a DNS label: lower case letters, digits and '-', at most 63 characters"
            )
        return value

    @field_validator("hub_kubeconfig")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @property
    def metrics_enabled(self) -> bool:
        return self.metrics_bind_address != "0"
