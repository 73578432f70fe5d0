"""The API resources the project reads and writes, described once.

Every URL the client builds comes from one of these descriptions, so a typo in a group or
plural shows up in one place rather than at a call site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Resource:
    """One served resource type: enough to build its URLs and to fill apiVersion/kind."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``group/version`` otherwise."""
        return self.version if not self.group else f"{self.group}/{self.version}"

    def base_path(self) -> str:
        """The API root of the group version: ``/api/v1`` or ``/apis/<group>/<version>``."""
        return f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"

    def path(
        self,
        *,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """The collection or object path, validating scope so mistakes fail loudly."""
        if self.namespaced and name is not None and not namespace:
            raise ValueError(f"{self.kind} is namespaced: pass namespace= to address {name!r}")
        if not self.namespaced and namespace:
            raise ValueError(f"{self.kind} is cluster-scoped: do not pass namespace=")
        if subresource is not None and name is None:
            raise ValueError("a subresource needs an object name")
        parts = [self.base_path()]
        if namespace:
            parts.append(f"namespaces/{_segment(namespace)}")
        parts.append(self.plural)
        if name is not None:
            parts.append(_segment(name))
        if subresource is not None:
            parts.append(_segment(subresource))
        return "/".join(parts)

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}/{self.version}"


def _segment(value: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"invalid path segment {value!r}: names cannot be empty or contain '/'")
    return value


_CLUSTER = "cluster.open-cluster-management.io"
_WORK = "work.open-cluster-management.io"
_ADDON = "addon.open-cluster-management.io"
_RBAC = "rbac.authorization.k8s.io"

NAMESPACE: Final = Resource("", "v1", "namespaces", "Namespace", False)
CONFIGMAP: Final = Resource("", "v1", "configmaps", "ConfigMap", True)
SECRET: Final = Resource("", "v1", "secrets", "Secret", True)
SERVICE_ACCOUNT: Final = Resource("", "v1", "serviceaccounts", "ServiceAccount", True)
POD: Final = Resource("", "v1", "pods", "Pod", True)
EVENT: Final = Resource("", "v1", "events", "Event", True)
JOB: Final = Resource("batch", "v1", "jobs", "Job", True)
LEASE: Final = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
ROLE: Final = Resource(_RBAC, "v1", "roles", "Role", True)
ROLE_BINDING: Final = Resource(_RBAC, "v1", "rolebindings", "RoleBinding", True)
CLUSTER_ROLE: Final = Resource(_RBAC, "v1", "clusterroles", "ClusterRole", False)
CLUSTER_ROLE_BINDING: Final = Resource(
    _RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False
)
CRD: Final = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
)
MANAGED_CLUSTER: Final = Resource(_CLUSTER, "v1", "managedclusters", "ManagedCluster", False)
MANAGED_CLUSTER_SET: Final = Resource(
    _CLUSTER, "v1beta2", "managedclustersets", "ManagedClusterSet", False
)
MANAGED_CLUSTER_SET_BINDING: Final = Resource(
    _CLUSTER, "v1beta2", "managedclustersetbindings", "ManagedClusterSetBinding", True
)
PLACEMENT: Final = Resource(_CLUSTER, "v1beta1", "placements", "Placement", True)
PLACEMENT_DECISION: Final = Resource(
    _CLUSTER, "v1beta1", "placementdecisions", "PlacementDecision", True
)
CLUSTER_CLAIM: Final = Resource(_CLUSTER, "v1alpha1", "clusterclaims", "ClusterClaim", False)
MANIFEST_WORK: Final = Resource(_WORK, "v1", "manifestworks", "ManifestWork", True)
APPLIED_MANIFEST_WORK: Final = Resource(
    _WORK, "v1", "appliedmanifestworks", "AppliedManifestWork", False
)
CLUSTER_MANAGEMENT_ADDON: Final = Resource(
    _ADDON, "v1alpha1", "clustermanagementaddons", "ClusterManagementAddOn", False
)
MANAGED_CLUSTER_ADDON: Final = Resource(
    _ADDON, "v1alpha1", "managedclusteraddons", "ManagedClusterAddOn", True
)
ADDON_TEMPLATE: Final = Resource(_ADDON, "v1alpha1", "addontemplates", "AddOnTemplate", False)
ADDON_DEPLOYMENT_CONFIG: Final = Resource(
    _ADDON, "v1alpha1", "addondeploymentconfigs", "AddOnDeploymentConfig", True
)
FEDERATED_LEARNING: Final = Resource(
    "federation-ai.open-cluster-management.io",
    "v1alpha1",
    "federatedlearnings",
    "FederatedLearning",
    True,
)

ALL: Final[tuple[Resource, ...]] = (
    NAMESPACE,
    CONFIGMAP,
    SECRET,
    SERVICE_ACCOUNT,
    POD,
    EVENT,
    JOB,
    LEASE,
    ROLE,
    ROLE_BINDING,
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    CRD,
    MANAGED_CLUSTER,
    MANAGED_CLUSTER_SET,
    MANAGED_CLUSTER_SET_BINDING,
    PLACEMENT,
    PLACEMENT_DECISION,
    CLUSTER_CLAIM,
    MANIFEST_WORK,
    APPLIED_MANIFEST_WORK,
    CLUSTER_MANAGEMENT_ADDON,
    MANAGED_CLUSTER_ADDON,
    ADDON_TEMPLATE,
    ADDON_DEPLOYMENT_CONFIG,
    FEDERATED_LEARNING,
)


def by_kind(api_version: str, kind: str) -> Resource:
    """The known resource for an object's apiVersion and kind (e.g. a manifest in a ManifestWork)."""
    for res in ALL:
        if res.api_version == api_version and res.kind == kind:
            return res
    raise KeyError(f"unknown resource apiVersion={api_version!r} kind={kind!r}")
