"""The reference task (issue 6) reproduced with the example's functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fl_contract.weights import decode_weights, encode_weights
from fl_core.evaluation import get_evaluator
from fl_core.examples import digits
from fl_core.strategies import make_strategy

FEDERATED_ACCURACY = 0.9556
CENTRALISED_ACCURACY = 0.9667
TOLERANCE = 0.005


def _load(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "train.npz", allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def test_plain_numpy_fedavg_loop_reaches_the_reference_accuracy() -> None:
    history = digits.fedavg_reference(clusters=3)
    assert len(history) == digits.ROUNDS
    assert history[-1] == pytest.approx(FEDERATED_ACCURACY, abs=TOLERANCE)


def test_trainer_and_streaming_fedavg_give_the_same_accuracy(tmp_path: Path) -> None:
    """The path the Job and the hub take: DigitsTrainer, safetensors bytes, FedAvg."""
    folders = digits.prepare_cluster_datasets(tmp_path, clusters=3)
    trainer = digits.DigitsTrainer()
    data = [trainer.load_data(f) for f in folders]
    strategy = make_strategy("FedAvg", {})
    weights = trainer.init_weights(0)
    history = []
    for r in range(1, digits.ROUNDS + 1):
        agg = strategy.begin_round(weights, round_number=r)
        for i, part in enumerate(data):
            new, n, metrics = trainer.train(weights, {"round": r}, part)
            assert metrics["train_loss"] > 0
            agg.add(decode_weights(encode_weights(new)), num_examples=n, client=f"cluster{i + 1}")
        weights = agg.result()
        history.append(get_evaluator("digits")(weights)["accuracy"])
    assert history[-1] == pytest.approx(FEDERATED_ACCURACY, abs=TOLERANCE)
    assert history[0] < history[-1]


def test_centralised_baseline() -> None:
    assert digits.centralised_baseline() == pytest.approx(CENTRALISED_ACCURACY, abs=TOLERANCE)


def test_dirichlet_partition_is_the_reference_split() -> None:
    _, y_train, _, _ = digits.load_split()
    parts = digits.partition(y_train, clusters=3, alpha=0.5, seed=0)
    assert [len(p) for p in parts] == [407, 359, 671]
    joined = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(joined, np.arange(len(y_train)))
    again = digits.partition(y_train, clusters=3, alpha=0.5, seed=0)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # non-IID: label distributions differ markedly between clusters
    hist = np.array([np.bincount(y_train[p], minlength=10) / len(p) for p in parts])
    assert np.abs(hist[0] - hist[2]).sum() > 0.5


def test_iid_partition_and_written_files(tmp_path: Path) -> None:
    folders = digits.prepare_cluster_datasets(tmp_path, clusters=4, partition="iid", seed=3)
    assert folders == [tmp_path / f"cluster{i}" for i in range(1, 5)]
    sizes = []
    for i, folder in enumerate(folders):
        part = _load(folder)
        assert part["x"].shape[1] == 64
        assert part["y"].dtype == np.int64
        assert int(part["client_index"]) == i
        sizes.append(len(part["y"]))
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == len(digits.load_split()[1])


def test_bad_partition_arguments() -> None:
    _, y_train, _, _ = digits.load_split()
    with pytest.raises(ValueError, match="clusters"):
        digits.partition(y_train, clusters=0)
    with pytest.raises(ValueError, match="alpha"):
        digits.partition(y_train, clusters=2, alpha=0)
    with pytest.raises(ValueError, match="no evaluator named 'mnist'"):
        get_evaluator("mnist")


def test_fedprox_term_pulls_towards_the_start() -> None:
    x, y, _, _ = digits.load_split()
    start = digits.init_weights()
    free, _ = digits.local_train(start, x[:200], y[:200], rng=digits.client_rng(1, 0))
    prox, _ = digits.local_train(
        start, x[:200], y[:200], rng=digits.client_rng(1, 0), proximal_mu=1.0
    )
    assert np.linalg.norm(prox["W"]) < np.linalg.norm(free["W"])
