"""What the hub sends a cluster each round: the round spec, carried by one ManifestWork per
(job, cluster) that is updated in place, and the model store the spec points at."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import (
    JobRef,
    ModelRef,
    ObjectGrant,
    Resources,
    RoundPrivacy,
    RoundSpec,
    StoreAccess,
    StoreConfig,
)
from fl_kube import resources as r
from hub_manager.crd_spec import FederatedLearningSpec
from hub_manager.placement import job_labels

MANIFESTS_LIMIT = 500 * 1024
"""OCM's work webhook refuses a ManifestWork whose manifests exceed 500 KiB in total."""


def store_config(
    spec: FederatedLearningSpec, *, default_path: str, file_store_root: Path | None = None
) -> StoreConfig:
    """The job's model store: s3:// for S3 storage, else file:// at storage.path.

    With `file_store_root` (a sandbox, one machine) file:// stores live under that folder
    and their URIs name it, so the hub, the agents and the training processes all open the
    same URI without any path mapping: no storage means the root itself, a storage.path
    the same path below it.
    """
    storage = spec.server.storage
    if storage is not None and storage.s3 is not None:
        s3 = storage.s3
        prefix = s3.prefix.strip("/")
        uri = f"s3://{s3.bucket_name}" + (f"/{prefix}" if prefix else "")
        return StoreConfig(uri=uri, endpoint=s3.endpoint, region=s3.region)
    path = storage.path if storage is not None else None
    if file_store_root is not None:
        folder = file_store_root.resolve() / path.strip("/") if path else file_store_root.resolve()
        return StoreConfig(uri=folder.as_uri())
    return StoreConfig(uri="file:///" + (path or default_path).strip("/"))


def build_round_spec(
    *,
    obj: dict[str, Any],
    spec: FederatedLearningSpec,
    cluster: str,
    round_number: int,
    attempt: int,
    global_model: ModelRef | None,
    update_uri: str,
    store: StoreConfig,
    deadline: datetime,
    client_config: dict[str, float | int | str | bool],
    privacy: RoundPrivacy | None = None,
) -> RoundSpec:
    metadata = obj["metadata"]
    config = dict(spec.client.training_config)
    proximal_mu = 0.0
    for key, value in client_config.items():
        if key == "proximal_mu" and isinstance(value, int | float) and not isinstance(value, bool):
            proximal_mu = float(value)
        else:
            config[key] = value
    return RoundSpec(
        job=JobRef(namespace=metadata["namespace"], name=metadata["name"], uid=metadata["uid"]),
        cluster=cluster,
        round=round_number,
        attempt=attempt,
        seed=spec.server.seed,
        global_model=global_model,
        update_uri=update_uri,
        store=store,
        image=spec.client.image or "",
        framework=spec.client_framework,
        command=list(spec.client.command),
        args=list(spec.client.args),
        dataset=spec.client.dataset,
        training_config=config,
        proximal_mu=proximal_mu,
        evaluate=True,
        deadline=deadline,
        resources=Resources(
            requests=dict(spec.client.resources.requests),
            limits=dict(spec.client.resources.limits),
        ),
        privacy=privacy,
    )


def desired_manifest_work(
    obj: dict[str, Any], *, cluster: str, agent_namespace: str, round_spec: RoundSpec
) -> dict[str, Any]:
    uid = str(obj["metadata"]["uid"])
    labels = {
        **job_labels(obj),
        keys.LABEL_COMPONENT: keys.COMPONENT_ROUND_SPEC,
        keys.LABEL_ROUND: str(round_spec.round),
        keys.LABEL_CLUSTER: cluster,
    }
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": naming.round_spec_configmap_name(uid),
            "namespace": agent_namespace,
            "labels": {k: v for k, v in labels.items() if k != keys.LABEL_MANAGED_BY},
        },
        "data": {keys.ROUND_SPEC_KEY: round_spec.to_json()},
    }
    return {
        "apiVersion": r.MANIFEST_WORK.api_version,
        "kind": r.MANIFEST_WORK.kind,
        "metadata": {
            "name": naming.manifest_work_name(uid),
            "namespace": cluster,
            "labels": labels,
        },
        "spec": {"workload": {"manifests": [configmap]}},
    }


# A presigned URL at most: endpoint, a 1024-character key and the signature's query.
PRESIGNED_URL_BOUND = 2048


def manifests_size(work: dict[str, Any]) -> int:
    """Bytes of a ManifestWork's manifests as OCM's work webhook counts them."""
    manifests = work["spec"]["workload"]["manifests"]
    return sum(len(json.dumps(m, separators=(",", ":"))) for m in manifests)


def oversized_round_spec(
    obj: dict[str, Any],
    spec: FederatedLearningSpec,
    *,
    store: StoreConfig,
    uri_for: Callable[[str], str],
) -> str | None:
    """A spec problem (field path, size, limit) when this job's round spec could not be
    delivered: the ManifestWork of its largest round (longest names and numbers) is
    rendered and measured against OCM's limit. None when it fits."""
    longest = "x" * 63  # a cluster or namespace name
    model = ModelRef(uri=uri_for(f"{longest}/round-100000/model.safetensors"), sha256="0" * 64)
    round_spec = build_round_spec(
        obj=obj,
        spec=spec,
        cluster=longest,
        round_number=spec.server.rounds,
        attempt=spec.server.max_round_retries + 1,
        global_model=model,
        update_uri=uri_for(f"{longest}/{longest}/round-100000/{longest}.a101.safetensors"),
        store=store,
        deadline=datetime(9999, 12, 30, tzinfo=UTC),
        client_config={"proximal_mu": 1.0},
    )
    if store.uri.startswith("s3://"):  # the per-round presigned URLs travel in the spec too
        url = "https://" + "x" * PRESIGNED_URL_BOUND
        update = round_spec.update_uri
        grants = [
            ObjectGrant(uri=model.uri, method="GET", url=url),
            ObjectGrant(uri=update, method="PUT", url=url),
            ObjectGrant(uri=update, method="GET", url=url),
        ]
        access = StoreAccess(expires=datetime(9999, 12, 31, tzinfo=UTC), grants=grants)
        round_spec = round_spec.model_copy(update={"access": access})
    work = desired_manifest_work(
        obj, cluster=longest, agent_namespace=longest, round_spec=round_spec
    )
    size = manifests_size(work)
    if size <= MANIFESTS_LIMIT:
        return None
    fields = {
        "spec.client.trainingConfig": spec.client.training_config,
        "spec.client.command": spec.client.command,
        "spec.client.args": spec.client.args,
    }
    largest = max(fields, key=lambda name: len(json.dumps(fields[name])))
    return (
        f"{largest}: makes each round's ManifestWork {size} bytes of manifests, over OCM's "
        f"limit of {MANIFESTS_LIMIT} bytes; keep it small (settings, not data: ship data in "
        "the dataset or the training image)"
    )


def work_matches(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """True when the cached ManifestWork already carries the desired manifests and labels."""
    if current is None or (current.get("metadata") or {}).get("deletionTimestamp"):
        return False
    labels = (current.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        return False
    current_manifests = ((current.get("spec") or {}).get("workload") or {}).get("manifests")
    return bool(current_manifests == desired["spec"]["workload"]["manifests"])
