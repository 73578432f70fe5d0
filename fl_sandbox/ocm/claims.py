"""Which ClusterClaims the klusterlet exposes in ``ManagedCluster.status.clusterClaims``.

Upstream (pkg/registration/spoke/managedcluster/claim_reconcile.go): claims labelled
``open-cluster-management.io/spoke-only`` stay on the spoke; reserved claims come first,
sorted by name; then custom claims sorted by name, truncated to the first 20.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

MAX_CUSTOM_CLAIMS: Final = 20
SPOKE_ONLY_LABEL: Final = "open-cluster-management.io/spoke-only"
RESERVED_CLAIM_NAMES: Final = frozenset(
    {
        "id.k8s.io",
        "kubeversion.open-cluster-management.io",
        "platform.open-cluster-management.io",
        "product.open-cluster-management.io",
    }
)


def exposed_claims(
    claims: Iterable[Mapping[str, Any]], *, max_custom: int = MAX_CUSTOM_CLAIMS
) -> list[dict[str, str]]:
    """The ``status.clusterClaims`` list for a set of spoke ClusterClaim objects."""
    reserved: list[dict[str, str]] = []
    custom: list[dict[str, str]] = []
    for claim in claims:
        meta = claim.get("metadata") or {}
        if SPOKE_ONLY_LABEL in (meta.get("labels") or {}) or meta.get("deletionTimestamp"):
            continue
        name = str(meta.get("name", ""))
        entry = {"name": name, "value": str((claim.get("spec") or {}).get("value", ""))}
        (reserved if name in RESERVED_CLAIM_NAMES else custom).append(entry)
    reserved.sort(key=lambda c: c["name"])
    custom.sort(key=lambda c: c["name"])
    return reserved + custom[:max_custom]
