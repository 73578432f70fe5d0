"""The training Job one round spec asks for: a pure function of the spec, the dataset and time.

Everything the container needs comes in through files and environment variables named in the
contract, so the training image works the same on any cluster (and in the sandbox's runner).
The pod runs as a non-root user with a read-only root filesystem; it only writes to its
emptyDir work folder, its termination message and the model store (an s3:// store through
the presigned URLs in its round spec: the pod gets no store credentials).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import Dataset, RoundSpec, compact_json

CONTAINER_NAME = "train"
RUN_AS_USER = 65532  # the conventional "nonroot" user of distroless images
VOLUME_SPEC = "round-spec"
VOLUME_DATASET = "dataset"
VOLUME_WORK = "work"
VOLUME_SECAGG = "secagg-secrets"
WORK_DIR_SIZE_LIMIT = "1Gi"
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


class DeadlinePassed(ValueError):
    """The round's deadline is already over: a Job could not finish in time."""


def job_labels(spec: RoundSpec) -> dict[str, str]:
    """Labels on the Job (and its pods): what it belongs to, for selectors and humans."""
    labels = {
        keys.LABEL_COMPONENT: keys.COMPONENT_TRAINING,
        keys.LABEL_MANAGED_BY: keys.AGENT_FIELD_MANAGER,
        keys.LABEL_PART_OF: keys.ADDON_NAME,
        keys.LABEL_ROUND: str(spec.round),
        keys.LABEL_CLUSTER: spec.cluster,
    }
    for key, value in (
        (keys.LABEL_JOB_UID, spec.job.uid),
        (keys.LABEL_JOB_NAMESPACE, spec.job.namespace),
        (keys.LABEL_JOB_NAME, spec.job.name),
    ):
        if _is_label_value(value):
            labels[key] = value
    return labels


def active_deadline_seconds(spec: RoundSpec, *, now: datetime, minimum: int = 1) -> int:
    """Seconds left until the round deadline, rounded up; DeadlinePassed when none are left."""
    left = (spec.deadline - now).total_seconds()
    if left <= 0:
        raise DeadlinePassed(f"round {spec.round} deadline {spec.deadline.isoformat()} has passed")
    return max(minimum, math.ceil(left))


def build_training_job(
    spec: RoundSpec,
    *,
    namespace: str,
    spec_configmap: dict[str, Any],
    dataset: Dataset | None,
    now: datetime,
    backoff_limit: int = 1,
    ttl_seconds: int = 86400,
    min_deadline_seconds: int = 1,
    secagg_secret: str | None = None,
) -> dict[str, Any]:
    """The Job manifest for one round and attempt (raises DeadlinePassed). A secure round's
    Job also mounts `secagg_secret`, its client secrets, read-only."""
    if (spec.dataset is None) != (dataset is None) or (
        dataset is not None and dataset.name != spec.dataset
    ):
        raise ValueError("the dataset passed in must be the one the round spec names")
    name = naming.training_job_name(
        spec.job.uid, spec.round, spec.attempt, secure=spec.secure_aggregation is not None
    )
    labels = job_labels(spec)
    cm_meta = spec_configmap["metadata"]
    spec_path = f"{keys.ROUND_SPEC_MOUNT}/{keys.ROUND_SPEC_KEY}"
    env: list[dict[str, Any]] = [
        {"name": keys.ENV_ROUND_SPEC_PATH, "value": spec_path},
        {"name": keys.ENV_WORK_DIR, "value": keys.WORK_DIR_MOUNT},
        {"name": keys.ENV_RESULT_PATH, "value": keys.TERMINATION_MESSAGE_PATH},
        # A read-only root filesystem: anything that wants a scratch or home folder gets the
        # work folder instead.
        {"name": "TMPDIR", "value": keys.WORK_DIR_MOUNT},
        {"name": "HOME", "value": keys.WORK_DIR_MOUNT},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": VOLUME_SPEC, "mountPath": keys.ROUND_SPEC_MOUNT, "readOnly": True},
        {"name": VOLUME_WORK, "mountPath": keys.WORK_DIR_MOUNT},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": VOLUME_SPEC,
            "configMap": {
                "name": cm_meta["name"],
                "items": [{"key": keys.ROUND_SPEC_KEY, "path": keys.ROUND_SPEC_KEY}],
            },
        },
        {"name": VOLUME_WORK, "emptyDir": {"sizeLimit": WORK_DIR_SIZE_LIMIT}},
    ]
    if secagg_secret is not None:
        path = f"{keys.SECAGG_SECRETS_MOUNT}/{keys.SECAGG_SECRETS_KEY}"
        env.append({"name": keys.ENV_SECAGG_SECRETS_PATH, "value": path})
        mounts.append(
            {"name": VOLUME_SECAGG, "mountPath": keys.SECAGG_SECRETS_MOUNT, "readOnly": True}
        )
        volumes.append(
            {
                "name": VOLUME_SECAGG,
                "secret": {
                    "secretName": secagg_secret,
                    "items": [{"key": keys.SECAGG_SECRETS_KEY, "path": keys.SECAGG_SECRETS_KEY}],
                    "defaultMode": 0o400,
                },
            }
        )
    if dataset is not None:
        env.append({"name": keys.ENV_DATASET_PATH, "value": keys.DATASET_MOUNT})
        env.append({"name": keys.ENV_DATASET_NAME, "value": dataset.name})
        if dataset.node_config:
            # The cluster's own values (a Flower app's context.node_config).
            env.append({"name": keys.ENV_NODE_CONFIG, "value": compact_json(dataset.node_config)})
        mounts.append({"name": VOLUME_DATASET, "mountPath": keys.DATASET_MOUNT, "readOnly": True})
        volumes.append({"name": VOLUME_DATASET, **dataset_volume_source(dataset)})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": keys.TERMINATION_MESSAGE_PATH,
        # The result (or failure) record; a container that dies without writing one
        # leaves the tail of its log there instead, so the reason still reaches the hub.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    resources = {
        k: dict(v)
        for k, v in (("requests", spec.resources.requests), ("limits", spec.resources.limits))
        if v
    }
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": cm_meta["name"],
                    "uid": cm_meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": active_deadline_seconds(
                spec, now=now, minimum=min_deadline_seconds
            ),
            "ttlSecondsAfterFinished": ttl_seconds,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def dataset_volume_source(dataset: Dataset) -> dict[str, Any]:
    """The volume source for a catalogue entry: a PVC (read-only) or a folder on the node."""
    if dataset.pvc:
        return {"persistentVolumeClaim": {"claimName": dataset.pvc, "readOnly": True}}
    if dataset.host_path:
        return {"hostPath": {"path": dataset.host_path, "type": "Directory"}}
    assert dataset.path is not None  # the model guarantees exactly one source
    return {"hostPath": {"path": dataset.path}}


def _is_label_value(value: str) -> bool:
    return len(value) <= 63 and _LABEL_VALUE.fullmatch(value) is not None
