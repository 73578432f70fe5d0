"""The hub manager's settings: one typed model, every default documented in one place."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fl_kube.process import BindAddress, Seconds, default_identity

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

DEFAULT_METRICS_BIND = ":8080"
DEFAULT_LEASE_NAMESPACE = "open-cluster-management"
LEASE_NAME = "federated-learning-hub-manager"


def default_addon_templates_dir() -> Path:
    """`addon_templates/` beside the package (the repository or the image's copy)."""
    return Path(__file__).resolve().parent.parent / "addon_templates"


class HubSettings(BaseModel):
    """How the hub manager runs: where the hub is, leader election, timings and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kubeconfig: str | None = None
    """Kubeconfig of the hub; None means in-cluster configuration."""
    metrics_bind_address: BindAddress = DEFAULT_METRICS_BIND
    """Where /metrics, /healthz and /readyz listen (`host:port`, `:port`, or `0` for off)."""
    leader_election: bool = True
    """Contend for a Lease so that only one replica drives jobs."""
    leader_election_namespace: str = DEFAULT_LEASE_NAMESPACE
    """Namespace of the leader-election Lease."""
    leader_election_name: str = LEASE_NAME
    """Name of the leader-election Lease."""
    identity: str = Field(default_factory=default_identity)
    """Holder identity written into the Lease."""
    addon_templates_dir: Path | None = Field(default_factory=default_addon_templates_dir)
    """YAML applied at start (ClusterManagementAddOn, AddOnTemplate, ...); None: skip."""
    file_store_root: Path | None = None
    """Folder holding the file:// model stores (one machine, the sandbox): store URIs name
    it. None: a job's file:// store is its storage.path (or `default_store_path`) as is."""
    default_store_path: str = "/models"
    """Folder of the file:// store of jobs without spec.server.storage."""

    lease_duration_seconds: Seconds = 15.0
    """Leader Lease duration: a standby takes over this long after the leader vanished."""
    renew_deadline_seconds: Seconds = 10.0
    """The leader steps down when it could not renew for this long."""
    retry_period_seconds: Seconds = 2.0
    """How often the Lease is tried and renewed."""
    workers: Annotated[int, Field(ge=1, le=64)] = 4
    """FederatedLearning objects reconciled in parallel (one worker per object at a time)."""
    rbac_workers: Annotated[int, Field(ge=1, le=64)] = 2
    """Cluster namespaces whose agent RBAC is reconciled in parallel."""
    resync_seconds: Seconds = 30.0
    """Every job is reconciled at least this often (level-based safety net)."""
    waiting_recheck_seconds: Seconds = 10.0
    """Re-check interval of a Waiting job besides the events that wake it."""
    status_coalesce_seconds: Annotated[float, Field(ge=0)] = 1.0
    """Per-cluster progress of a round is written at most this often, times the round's
    participants / 100 when there are more (0: on every report)."""
    report_batch_seconds: Annotated[float, Field(ge=0)] = 1.0
    """The agents' reports (and round-spec ManifestWork changes) that arrive within this
    long of the first are handled in one pass, for a round of 100 participants;
    proportionally shorter for smaller rounds, longer for larger ones (at most 5 times
    this). 0: a pass per report."""
    sync_timeout_seconds: Seconds = 60.0
    """How long the informers may take to list before the manager gives up starting."""

    @field_validator("leader_election_namespace", "leader_election_name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value) or len(value) > 63:
            raise ValueError("must be a DNS label: lower case letters, digits and '-'")
        return value

    @model_validator(mode="after")
    def _lease_timings(self) -> HubSettings:
        if not (
            self.lease_duration_seconds > self.renew_deadline_seconds > self.retry_period_seconds
        ):
            raise ValueError("leader election needs lease duration > renew deadline > retry period")
        return self

    @property
    def metrics_enabled(self) -> bool:
        return self.metrics_bind_address != "0"
