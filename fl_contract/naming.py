"""Names of Kubernetes objects, computed here and nowhere else.

Names derive from the job's uid (not its name) so that a job deleted and re-created under
the same name never meets the objects of its predecessor.
"""

import hashlib
import re
from typing import Literal

from fl_contract import keys

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONDITION_NAME = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
MAX_CONDITION_TYPE = 316
MAX_DNS_LABEL = 63


def job_hash(job_uid: str) -> str:
    """16 hex characters from the job uid: short, stable, collision-safe for a fleet."""
    if not job_uid:
        raise ValueError("job uid must not be empty")
    return hashlib.sha256(job_uid.encode()).hexdigest()[:16]


def manifest_work_name(job_uid: str) -> str:
    """The ManifestWork that carries a job's round spec to one cluster (updated each round)."""
    return f"fl-{job_hash(job_uid)}"


def round_spec_configmap_name(job_uid: str) -> str:
    """The ConfigMap in the agent namespace that holds the round spec."""
    return f"fl-{job_hash(job_uid)}"


def training_job_name(
    job_uid: str, round_number: int, attempt: int = 1, *, secure: bool = False
) -> str:
    """The training Job of one round (and attempt): deterministic, so a restart finds it.
    A secure round's Job (it masks its update) has its own name, so a job whose secure
    aggregation is turned on or off mid-round never takes one Job's output for the other's."""
    if round_number < 1 or attempt < 1:
        raise ValueError("round and attempt start at 1")
    name = f"fl-{job_hash(job_uid)}-r{round_number}"
    if attempt > 1:
        name += f"-a{attempt}"
    return name + ("-s" if secure else "")


def secagg_secret_name(job_uid: str, round_number: int, attempt: int = 1) -> str:
    """The Secret in the agent namespace holding one secure round's client secrets."""
    return f"{training_job_name(job_uid, round_number, attempt)}-secagg"


def secagg_reveal_record_name(job_uid: str, round_number: int, attempt: int = 1) -> str:
    """The Secret recording which reveal a cluster agreed to for one secure round: created
    once (write-once by `create`), so no restart can reveal for another set of survivors."""
    return f"{secagg_secret_name(job_uid, round_number, attempt)}-reveal"


def placement_name(fl_name: str) -> str:
    """The Placement the hub manager creates for a job, in the job's namespace."""
    return _bounded(f"fl-{fl_name}", limit=MAX_DNS_LABEL)


def agent_role_binding_name() -> str:
    """The per-cluster RoleBinding (in the cluster namespace) granting the agent its status."""
    return f"{keys.ADDON_NAME}-agent-status"


def cluster_addon_group(cluster: str) -> str:
    """The hub group of one cluster's add-on agent (OCM KubeClient registration)."""
    return keys.CLUSTER_ADDON_GROUP_TEMPLATE.format(cluster=cluster)


def round_condition_type(fl_namespace: str, fl_name: str) -> str:
    """`round.federated-learning.io/<ns>.<name>`, hashed when it would exceed 316 characters."""
    suffix = f"{fl_namespace}.{fl_name}"
    if len(keys.ROUND_CONDITION_PREFIX) + len(suffix) > MAX_CONDITION_TYPE:
        digest = hashlib.sha256(suffix.encode()).hexdigest()[:16]
        room = MAX_CONDITION_TYPE - len(keys.ROUND_CONDITION_PREFIX) - len(digest) - 1
        suffix = f"{suffix[:room].rstrip('.-_')}-{digest}"
    if not _CONDITION_NAME.match(suffix):
        raise ValueError(f"cannot form a condition type from {fl_namespace}/{fl_name}")
    return keys.ROUND_CONDITION_PREFIX + suffix


def parse_round_condition_type(condition_type: str) -> str | None:
    """The `<ns>.<name>` suffix of a round condition type, or None for any other type."""
    if not condition_type.startswith(keys.ROUND_CONDITION_PREFIX):
        return None
    return condition_type[len(keys.ROUND_CONDITION_PREFIX) :]


def dataset_claim_name(dataset: str) -> str:
    """ClusterClaim name for a dataset: `<dataset>.dataset.federated-learning.io`."""
    if not _DNS_LABEL.match(dataset):
        raise ValueError(
            f"dataset name {dataset!r} must be a DNS label (lower case letters, digits, '-')"
        )
    return dataset + keys.DATASET_CLAIM_SUFFIX


def dataset_from_claim_name(claim_name: str) -> str | None:
    """The dataset a claim name stands for, or None if it is not a dataset claim."""
    if not claim_name.endswith(keys.DATASET_CLAIM_SUFFIX):
        return None
    return claim_name[: -len(keys.DATASET_CLAIM_SUFFIX)] or None


def job_key_prefix(*, namespace: str, job: str) -> str:
    """Store key prefix of everything a job's rounds write (models, updates, server state)."""
    return f"{namespace}/{job}/"


def round_key_prefix(*, namespace: str, job: str, round_number: int) -> str:
    """Store key prefix of one round: its global model, server state and `updates/`."""
    return f"{job_key_prefix(namespace=namespace, job=job)}rounds/{round_number}/"


def model_key(*, namespace: str, job: str, round_number: int) -> str:
    """Store key of the global model that round `round_number` produced (0: the initial one)."""
    prefix = round_key_prefix(namespace=namespace, job=job, round_number=round_number)
    return f"{prefix}global.safetensors"


def update_key(
    *, namespace: str, job: str, round_number: int, cluster: str, attempt: int = 1
) -> str:
    """Store key of one cluster's update in one round (and attempt), under `updates/`."""
    suffix = "" if attempt == 1 else f".a{attempt}"
    prefix = round_key_prefix(namespace=namespace, job=job, round_number=round_number)
    return f"{prefix}updates/{cluster}{suffix}.safetensors"


SecAggObject = Literal["shares", "inbox", "revealed"]


def secagg_key(
    *,
    namespace: str,
    job: str,
    round_number: int,
    cluster: str,
    attempt: int = 1,
    kind: SecAggObject,
) -> str:
    """Store key of one cluster's secure-aggregation object of a round attempt: the
    encrypted shares it sends, those addressed to it (written by the hub), its revealed
    shares. (Its masked input is at `update_key`.)"""
    prefix = round_key_prefix(namespace=namespace, job=job, round_number=round_number)
    return f"{prefix}secagg/a{attempt}/{kind}/{cluster}.json"


def _bounded(name: str, *, limit: int) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-.')}-{digest}"
