"""The hub's ingest path: hashing overlapped with folding, nothing counted unless verified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fl_contract.models import StoreConfig
from fl_contract.weights import WeightsFormatError, encode_weights, sha256_hex
from fl_core.ingest import ingest_file, ingest_update
from fl_core.store import IntegrityError, ObjectNotFound, open_store
from fl_core.strategies import Rejected, make_strategy


def _model(seed: int, size: int = 300_000) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal(size).astype(np.float32),
        "b": rng.standard_normal(10).astype(np.float32),
    }


@pytest.mark.parametrize("name", ["FedAvg", "FedMedian"])
async def test_ingest_equals_add_and_refuses_bad_hashes(tmp_path: Path, name: str) -> None:
    store = open_store(StoreConfig(uri=f"file://{tmp_path}/models"))
    refs = [
        await store.put(f"ns/j/rounds/1/updates/c{i}.safetensors", encode_weights(_model(i)))
        for i in range(3)
    ]
    via_ingest = make_strategy(name).begin_round(None, round_number=1)
    via_add = make_strategy(name).begin_round(None, round_number=1)
    for i, ref in enumerate(refs[:2]):
        size = await ingest_update(
            store,
            uri=ref.uri,
            sha256=ref.sha256,
            aggregator=via_ingest,
            num_examples=i + 1,
            client=f"c{i}",
        )
        assert size > 1_200_000
        via_add.add(_model(i), num_examples=i + 1, client=f"c{i}")
    with pytest.raises(IntegrityError, match="expected"):
        await ingest_update(
            store,
            uri=refs[2].uri,
            sha256="f" * 64,
            aggregator=via_ingest,
            num_examples=3,
            client="c2",
        )
    with pytest.raises(ObjectNotFound):
        await ingest_update(
            store,
            uri=store.uri_for("ns/j/none.safetensors"),
            sha256="f" * 64,
            aggregator=via_ingest,
            num_examples=3,
            client="c3",
        )
    assert via_ingest.accepted == 2
    a, b = via_ingest.result(), via_add.result()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_integrity_is_reported_before_decoding_or_validation(tmp_path: Path) -> None:
    agg = make_strategy("FedAvg").begin_round(_model(0), round_number=1)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 100)
    with pytest.raises(IntegrityError):
        ingest_file(garbage, sha256="0" * 64, aggregator=agg, num_examples=1, client="a")
    with pytest.raises(WeightsFormatError):
        ingest_file(
            garbage,
            sha256=sha256_hex(garbage.read_bytes()),
            aggregator=agg,
            num_examples=1,
            client="a",
        )
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(encode_weights(_model(1, size=5)))
    with pytest.raises(IntegrityError):
        ingest_file(wrong, sha256="0" * 64, aggregator=agg, num_examples=1, client="a")
    with pytest.raises(Rejected, match="ShapeMismatch"):
        ingest_file(
            wrong, sha256=sha256_hex(wrong.read_bytes()), aggregator=agg, num_examples=1, client="a"
        )
    assert agg.accepted == 0


def test_a_failed_commit_leaves_the_streaming_mean_untouched(tmp_path: Path) -> None:
    agg = make_strategy("FedAvg").begin_round(None, round_number=1)
    agg.add(_model(0), num_examples=2, client="a")

    def refuse() -> None:
        raise IntegrityError("no")

    for _ in range(2):
        with pytest.raises(IntegrityError):
            agg.add(_model(1), num_examples=5, client="b", before_commit=refuse)
    agg.add(_model(2), num_examples=3, client="c", before_commit=lambda: None)
    got = agg.result()
    want = (2 * _model(0)["w"].astype(np.float64) + 3 * _model(2)["w"]) / 5
    np.testing.assert_allclose(got["w"], want, rtol=1e-5, atol=1e-6)
    assert agg.clients == {"a", "c"}
