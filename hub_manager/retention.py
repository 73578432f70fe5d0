"""Deleting from the model store what a job's retention policy does not keep.

`spec.server.storage.retention`: a round's cluster updates go once its global model is
published (unless `keepUpdates` rounds are kept), global models older than the latest
`keepRounds` go when a newer one is published, and the job's objects go with the job
(`onDelete: Delete`, the default). The job's initial model is never deleted: it is the
user's. Deleting is best effort while the job runs (a failure is logged and the same
objects are tried again at the next publication, and at deletion).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fl_contract import naming
from fl_core.store import ModelStore, StoreError
from hub_manager.crd_spec import FederatedLearningSpec, RetentionSpec, SpecError, parse_spec
from hub_manager.job_runtime import open_job_store
from hub_manager.work import store_config

log = logging.getLogger(__name__)


def _initial_keys(spec: FederatedLearningSpec, store: ModelStore) -> list[str]:
    initial = spec.server.initial_model
    if initial is None:
        return []
    try:
        return [store.key_for(initial.uri)]
    except StoreError:
        return []  # not in this store: nothing of ours could delete it


def _rounds_leaving(published: int, keep: int) -> list[int]:
    """The rounds that fall out of a window of `keep` rounds when `published` is published:
    the one that just left, and the one before it (in case a manager stopped between a
    publication and its clean-up, or a late writer came back)."""
    return [r for r in (published - keep - 1, published - keep) if r >= 1]


async def apply_after_publication(
    store: ModelStore,
    spec: FederatedLearningSpec,
    *,
    namespace: str,
    job: str,
    published: int,
) -> None:
    """Delete what the policy no longer keeps now that round `published` is published."""
    policy: RetentionSpec = spec.server.retention
    keep = _initial_keys(spec, store)
    prefixes = [  # the updates, and a secure round's shares and masked inputs' companions
        naming.round_key_prefix(namespace=namespace, job=job, round_number=r) + folder
        for r in _rounds_leaving(published, policy.keep_updates)
        for folder in ("updates/", "secagg/")
    ]
    if policy.keep_rounds is not None:
        prefixes += [
            naming.round_key_prefix(namespace=namespace, job=job, round_number=r)
            for r in _rounds_leaving(published, policy.keep_rounds)
        ]
    for prefix in prefixes:
        try:
            await store.delete_prefix(prefix, keep=keep)
        except StoreError as exc:
            log.warning("%s/%s: retention: %s (tried again later)", namespace, job, exc)


async def delete_job_objects(
    obj: dict[str, Any], *, default_path: str, file_store_root: Path | None
) -> None:
    """Delete the job's objects from its store unless it asked to retain them. StoreError
    when the store cannot do it now; nothing to do when the spec cannot be read."""
    metadata = obj["metadata"]
    namespace, job = str(metadata["namespace"]), str(metadata["name"])
    try:
        spec = parse_spec(obj.get("spec"))
    except SpecError:
        return  # an invalid spec never ran a round: it wrote nothing
    if spec.server.retention.on_delete == "Retain":
        return
    config = store_config(spec, default_path=default_path, file_store_root=file_store_root)
    store = open_job_store(config, file_root=None)
    try:
        prefix = naming.job_key_prefix(namespace=namespace, job=job)
        await store.delete_prefix(prefix, keep=_initial_keys(spec, store))
    finally:
        await store.close()
    log.info("%s/%s: deleted its objects under %s/", namespace, job, store.uri_for(prefix[:-1]))
