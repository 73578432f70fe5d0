"""The resource types the server knows: built-in Kubernetes kinds and the OCM kinds' names.

The OCM rows let the server serve those kinds (unvalidated) when no CRD folder is given; CRDs
loaded from files or POSTed replace them with validated versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass
class ResourceType:
    """One served group/version/plural, with what the handlers need to treat it right."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    builtin: bool = False  # strategic merge allowed, Status answered on delete
    tracks_generation: bool = True
    schema: dict[str, Any] | None = None  # openAPIV3Schema, applied when validate is set
    validate: bool = False
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    crd_name: str = ""  # the CustomResourceDefinition that serves it, if any
    create_only: bool = False  # reviews: POST answers, nothing is stored

    def __post_init__(self) -> None:
        if not self.singular:
            self.singular = self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


def _b(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    generation: bool = False,
    categories: tuple[str, ...] = (),
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        status_subresource=status,
        builtin=True,
        tracks_generation=generation,
        categories=categories,
    )


def _review(plural: str, kind: str) -> ResourceType:
    return ResourceType(
        group="authorization.k8s.io",
        version="v1",
        plural=plural,
        kind=kind,
        namespaced=False,
        builtin=True,
        tracks_generation=False,
        create_only=True,
    )


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _b("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",), status=True),
    _b("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _b("", "v1", "secrets", "Secret"),
    _b("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _b("", "v1", "pods", "Pod", short=("po",), status=True, categories=("all",)),
    _b("", "v1", "events", "Event", short=("ev",)),
    _b("", "v1", "services", "Service", short=("svc",), status=True, categories=("all",)),
    _b("batch", "v1", "jobs", "Job", status=True, generation=True, categories=("all",)),
    _b(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short=("deploy",),
        status=True,
        generation=True,
        categories=("all",),
    ),
    _b("coordination.k8s.io", "v1", "leases", "Lease"),
    _b("events.k8s.io", "v1", "events", "Event", short=("ev",)),
    _b("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
    ),
    _b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        status=True,
        generation=True,
    ),
    _review("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    _review("subjectaccessreviews", "SubjectAccessReview"),
)


def _ocm(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool,
    short: tuple[str, ...] = (),
    status: bool = True,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        status_subresource=status,
        crd_name=f"{plural}.{group}",
    )


_CLUSTER = "cluster.open-cluster-management.io"
_WORK = "work.open-cluster-management.io"
_ADDON = "addon.open-cluster-management.io"

# Names and scopes as in open-cluster-management-io/api; schemas come only from CRD files.
OCM_TYPES: tuple[ResourceType, ...] = (
    _ocm(
        _CLUSTER, "v1", "managedclusters", "ManagedCluster", namespaced=False, short=("mcl", "mcls")
    ),
    _ocm(
        _CLUSTER,
        "v1beta2",
        "managedclustersets",
        "ManagedClusterSet",
        namespaced=False,
        short=("mclset", "mclsets"),
    ),
    _ocm(
        _CLUSTER,
        "v1beta2",
        "managedclustersetbindings",
        "ManagedClusterSetBinding",
        namespaced=True,
        short=("mclsetbinding", "mclsetbindings"),
    ),
    _ocm(_CLUSTER, "v1beta1", "placements", "Placement", namespaced=True),
    _ocm(_CLUSTER, "v1beta1", "placementdecisions", "PlacementDecision", namespaced=True),
    _ocm(_CLUSTER, "v1alpha1", "clusterclaims", "ClusterClaim", namespaced=False, status=False),
    _ocm(_WORK, "v1", "manifestworks", "ManifestWork", namespaced=True),
    _ocm(_WORK, "v1", "appliedmanifestworks", "AppliedManifestWork", namespaced=False),
    _ocm(
        _ADDON,
        "v1alpha1",
        "clustermanagementaddons",
        "ClusterManagementAddOn",
        namespaced=False,
        short=("cma", "cmas"),
    ),
    _ocm(
        _ADDON,
        "v1alpha1",
        "managedclusteraddons",
        "ManagedClusterAddOn",
        namespaced=True,
        short=("mca", "mcas"),
    ),
    _ocm(_ADDON, "v1alpha1", "addontemplates", "AddOnTemplate", namespaced=False, status=False),
    _ocm(
        _ADDON,
        "v1alpha1",
        "addondeploymentconfigs",
        "AddOnDeploymentConfig",
        namespaced=True,
        status=False,
    ),
)

# patchMergeKey of the built-in types' lists that strategic merge and apply merge by key.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "secrets": "name",
}
# Lists of primitives merged as sets by strategic merge.
MERGE_SETS: frozenset[str] = frozenset({"finalizers"})
