"""Every API group, label, annotation, condition-type and field-manager string, in one place."""

from typing import Final

ADDON_NAME: Final = "federated-learning"

# Our custom resource.
FL_GROUP: Final = "federation-ai.open-cluster-management.io"
FL_VERSION: Final = "v1alpha1"
FL_PLURAL: Final = "federatedlearnings"
FL_KIND: Final = "FederatedLearning"

# Labels on everything the hub manager or the agent creates for a job.
LABEL_PREFIX: Final = "federated-learning.io/"
LABEL_JOB_UID: Final = LABEL_PREFIX + "job-uid"
LABEL_JOB_NAME: Final = LABEL_PREFIX + "job-name"
LABEL_JOB_NAMESPACE: Final = LABEL_PREFIX + "job-namespace"
LABEL_ROUND: Final = LABEL_PREFIX + "round"
LABEL_CLUSTER: Final = LABEL_PREFIX + "cluster"
LABEL_COMPONENT: Final = LABEL_PREFIX + "component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"

COMPONENT_ROUND_SPEC: Final = "round-spec"
COMPONENT_TRAINING: Final = "training"
COMPONENT_AGENT_RBAC: Final = "agent-rbac"
COMPONENT_SECAGG: Final = "secagg-secrets"

# The hub manager's finalizer on FederatedLearning objects (ManifestWorks live in other
# namespaces, so owner references cannot clean them).
FINALIZER: Final = "federated-learning.io/cleanup"

# Condition types on the ManagedClusterAddOn: one per job, keyed by type.
ROUND_CONDITION_PREFIX: Final = "round.federated-learning.io/"

# Dataset ClusterClaims published by the agent: "<dataset>.dataset.federated-learning.io".
DATASET_CLAIM_SUFFIX: Final = ".dataset.federated-learning.io"
LABEL_CLAIM_OWNER: Final = LABEL_PREFIX + "claim-owner"

# Round spec ConfigMap: the key holding the JSON document.
ROUND_SPEC_KEY: Final = "round-spec.json"

# Field managers for server-side apply and managedFields.
HUB_FIELD_MANAGER: Final = "federated-learning-hub-manager"
AGENT_FIELD_MANAGER: Final = "federated-learning-agent"

# Health lease that the agent renews in its namespace, as OCM add-on agents do.
AGENT_LEASE_NAME: Final = ADDON_NAME

# The add-on's pre-delete hook Job (addon_templates/addontemplate.yaml) in the agent
# namespace: while it exists the add-on is being disabled, and the agent withdraws.
CLEANUP_JOB_NAME: Final = ADDON_NAME + "-cleanup"

# The per-cluster hub group of the add-on's agent (OCM KubeClient registration).
CLUSTER_ADDON_GROUP_TEMPLATE: Final = (
    "system:open-cluster-management:cluster:{cluster}:addon:" + ADDON_NAME
)
ADDON_WIDE_GROUP: Final = "system:open-cluster-management:addon:" + ADDON_NAME

# Inside the training Job (set by the agent, read by the training runtime).
ENV_ROUND_SPEC_PATH: Final = "FL_ROUND_SPEC_PATH"
ENV_DATASET_PATH: Final = "FL_DATASET_PATH"
ENV_DATASET_NAME: Final = "FL_DATASET_NAME"
ENV_RESULT_PATH: Final = "FL_RESULT_PATH"
ENV_WORK_DIR: Final = "FL_WORK_DIR"
# The dataset catalogue entry's nodeConfig as a JSON object (a Flower app's node_config).
ENV_NODE_CONFIG: Final = "FL_NODE_CONFIG"
ROUND_SPEC_MOUNT: Final = "/etc/federated-learning"
# A secure round's client secrets: the per-round Secret's key, mounted into the Job.
ENV_SECAGG_SECRETS_PATH: Final = "FL_SECAGG_SECRETS_PATH"
SECAGG_SECRETS_KEY: Final = "client-secrets"
SECAGG_REVEALED_KEY: Final = "revealed"
SECAGG_SECRETS_MOUNT: Final = "/var/run/secrets/federated-learning"
DATASET_MOUNT: Final = "/data"
WORK_DIR_MOUNT: Final = "/tmp/fl"  # noqa: S108 - an emptyDir in the Job, not a shared /tmp
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
