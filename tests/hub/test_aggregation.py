"""A round session: which updates count, and that the model does not depend on arrival order."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from fl_contract import naming
from fl_contract.models import RoundReport, StoreConfig, UpdateRef
from fl_contract.weights import Weights, decode_weights, encode_weights
from fl_core.store import ModelStore, open_store
from fl_core.strategies import make_strategy
from hub_manager.aggregation import RoundSession, new_session
from hub_manager.metrics import HubMetrics
from hub_manager.reports import DatasetSize, published_size

CLUSTERS = ("cluster1", "cluster2", "cluster3")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ModelStore]:
    opened = open_store(StoreConfig(uri=f"file://{tmp_path}/models"))
    try:
        yield opened
    finally:
        await opened.close()


def _uri(store: ModelStore, cluster: str) -> str:
    key = naming.update_key(namespace="team-a", job="j", round_number=1, cluster=cluster)
    return store.uri_for(key)


def _session(
    store: ModelStore,
    *,
    strategy: str = "FedAvg",
    published: dict[str, int] | None = None,
) -> RoundSession:
    sizes = published or {}
    return new_session(
        strategy=make_strategy(strategy),
        global_weights=None,
        job_uid="uid-1",
        round_number=1,
        attempt=1,
        expected_uris={c: _uri(store, c) for c in CLUSTERS},
        store=store,
        metrics=HubMetrics(),
        published_samples=lambda c: (
            DatasetSize("digits", sizes[c], naming.dataset_claim_name("digits"))
            if c in sizes
            else None
        ),
    )


async def _publish(
    store: ModelStore, cluster: str, weights: Weights, *, examples: int = 10
) -> RoundReport:
    ref = await store.put_uri(_uri(store, cluster), encode_weights(weights))
    update = UpdateRef(uri=ref.uri, sha256=ref.sha256, num_examples=examples)
    return RoundReport(
        job_uid="uid-1", cluster=cluster, round=1, state="UpdateReady", update=update
    )


def _spread_updates() -> dict[str, Weights]:
    """Updates of very different magnitudes: float32 sums of them depend on the order."""
    rng = np.random.default_rng(7)
    return {
        c: {"w": (rng.standard_normal(4096) * scale).astype(np.float32)}
        for c, scale in zip(CLUSTERS, (1e6, 1.0, 3e-3), strict=True)
    }


async def test_equal_updates_from_different_clusters_all_count(store: ModelStore) -> None:
    """Identical data, or a trainer that changes nothing, gives identical bytes: each
    cluster still contributes; Duplicate is for one cluster reporting twice."""
    session = _session(store)
    same = {"w": np.arange(6, dtype=np.float32)}
    for cluster in CLUSTERS:
        outcome = await session.consider(cluster, await _publish(store, cluster, same))
        assert outcome is not None
        assert (outcome.kind, outcome.reason) == ("accepted", "")
    assert session.accepted() == frozenset(CLUSTERS)
    result, weights = await session.result(evaluate=None)
    assert result.accepted == CLUSTERS
    np.testing.assert_allclose(weights["w"], same["w"], rtol=1e-6)


async def test_a_second_different_update_from_one_cluster_is_a_duplicate(
    store: ModelStore,
) -> None:
    session = _session(store)
    first = await _publish(store, "cluster1", {"w": np.zeros(3, np.float32)})
    assert (await session.consider("cluster1", first)) is not None
    other = await _publish(store, "cluster1", {"w": np.ones(3, np.float32)})
    assert await session.consider("cluster1", other) is None
    duplicate = session.duplicate("cluster1", other)
    assert duplicate is not None
    assert duplicate.reason == "Duplicate"
    assert session.duplicate("cluster1", first) is None


async def test_the_global_model_does_not_depend_on_the_order_reports_arrive(
    store: ModelStore,
) -> None:
    updates = _spread_updates()
    examples = {"cluster1": 3, "cluster2": 5, "cluster3": 7}
    reports = {c: await _publish(store, c, updates[c], examples=examples[c]) for c in CLUSTERS}
    digests = set()
    for order in itertools.permutations(CLUSTERS):
        session = _session(store)
        for cluster in order:
            await session.consider(cluster, reports[cluster])
        result, _ = await session.result(evaluate=None)
        digests.add(result.sha256)
    assert len(digests) == 1
    # ... and it is the fold in cluster-name order
    reference = make_strategy("FedAvg").begin_round(None, round_number=1)
    for cluster in CLUSTERS:
        reference.add(updates[cluster], num_examples=examples[cluster], client=cluster)
    np.testing.assert_array_equal(decode_weights(result.data)["w"], reference.result()["w"])


async def test_updates_wait_in_the_store_for_their_turn_and_fold_when_the_round_closes(
    store: ModelStore,
) -> None:
    """cluster1 never reports: cluster2 and cluster3 wait verified, then fold in order when
    the round closes without it. cluster3's file is changed while it waits: re-read at its
    turn, it is refused after all."""
    updates = _spread_updates()
    session = _session(store)
    await session.consider("cluster3", await _publish(store, "cluster3", updates["cluster3"]))
    await session.consider("cluster2", await _publish(store, "cluster2", updates["cluster2"]))
    assert session.accepted() == {"cluster2", "cluster3"}
    result, weights = await session.result(evaluate=None)
    assert result.accepted == ("cluster2", "cluster3")
    reference = make_strategy("FedAvg").begin_round(None, round_number=1)
    for cluster in ("cluster2", "cluster3"):
        reference.add(updates[cluster], num_examples=10, client=cluster)
    np.testing.assert_array_equal(weights["w"], reference.result()["w"])

    changed = _session(store)
    await changed.consider("cluster3", await _publish(store, "cluster3", updates["cluster3"]))
    await store.put_uri(_uri(store, "cluster3"), encode_weights(updates["cluster1"]))
    await changed.consider("cluster1", await _publish(store, "cluster1", updates["cluster1"]))
    assert changed.take_fold_rejections() == []
    await changed.result(evaluate=None)
    (refused,) = changed.take_fold_rejections()
    assert (refused.cluster, refused.reason) == ("cluster3", "ChecksumMismatch")
    assert changed.accepted() == {"cluster1"}


async def test_examples_beyond_the_published_dataset_are_refused(store: ModelStore) -> None:
    session = _session(store, published={"cluster1": 407, "cluster2": 407})
    junk = {"w": np.full(3, 1e3, np.float32)}
    greedy = await _publish(store, "cluster1", junk, examples=10**15)
    outcome = await session.consider("cluster1", greedy)
    assert outcome is not None
    assert (outcome.kind, outcome.reason) == ("rejected", "ExamplesExceedDataset")
    assert "1000000000000000" in outcome.message
    assert "407" in outcome.message
    honest = await _publish(store, "cluster2", {"w": np.ones(3, np.float32)}, examples=407)
    assert (await session.consider("cluster2", honest)) is not None
    unbounded = await _publish(store, "cluster3", {"w": np.ones(3, np.float32)}, examples=9999)
    outcome = await session.consider("cluster3", unbounded)  # publishes no size: no bound
    assert outcome is not None
    assert outcome.kind == "accepted"
    _, weights = await session.result(evaluate=None)
    np.testing.assert_array_equal(weights["w"], np.ones(3, np.float32))


def test_the_published_size_is_the_dataset_claim_of_the_managed_cluster() -> None:
    claim = naming.dataset_claim_name("digits")
    cluster = {
        "metadata": {"name": "cluster1"},
        "status": {
            "clusterClaims": [
                {"name": "id.k8s.io", "value": "cluster1"},
                {"name": claim, "value": "samples=407,task=classification"},
                {"name": naming.dataset_claim_name("other"), "value": "present"},
            ]
        },
    }
    assert published_size(cluster, "digits") == DatasetSize("digits", 407, claim)
    assert published_size(cluster, "other") is None
    assert published_size(cluster, "absent") is None
    assert published_size(None, "digits") is None
