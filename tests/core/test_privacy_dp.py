"""Differential privacy: the accountant against dp_accounting itself, DP-SGD's clipping and
noise, cluster-level clipping and noise (on the hub and spread over clusters), the
runtime's DP rounds and the spec's DP fields."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from hypothesis import given, settings
from hypothesis import strategies as hs
from hypothesis.extra.numpy import arrays

from fl_contract.models import JobRef, RoundPrivacy, RoundSpec, StoreConfig
from fl_core.examples import digits
from fl_core.privacy.dp import accountant
from fl_core.privacy.dp.central import ClusterDPStrategy
from fl_core.privacy.dp.dpsgd import DPSGD, DPSGDParameters, clip_per_example, per_example_norms
from fl_core.privacy.dp.noise import (
    clip_and_noise_update,
    clip_update,
    distributed_noise_stddev,
    update_norm,
)
from fl_core.runtime import TrainerBase, run_round
from fl_core.runtime.runner import DPNotSupported
from fl_core.strategies import FedAvg
from hub_manager.crd_spec import SpecError, parse_spec


@pytest.mark.parametrize(
    ("sigma", "rate", "steps", "delta"),
    [(1.1, 32 / 719, 115, 1e-5), (0.8, 0.01, 1000, 1e-6), (2.0, 1.0, 10, 1e-5)],
)
def test_rdp_epsilon_is_dp_accountings_own(
    sigma: float, rate: float, steps: int, delta: float
) -> None:
    direct = rdp.RdpAccountant()
    direct.compose(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    ours = accountant.epsilon(noise_multiplier=sigma, sampling_rate=rate, steps=steps, delta=delta)
    assert ours == direct.get_epsilon(delta)


def test_pld_epsilon_is_dp_accountings_own() -> None:
    direct = pld.PLDAccountant(value_discretization_interval=accountant.PLD_DISCRETIZATION)
    direct.compose(
        dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(1.0)), 50
    )
    ours = accountant.epsilon(
        noise_multiplier=1.0, sampling_rate=0.05, steps=50, delta=1e-5, accountant="PLD"
    )
    assert ours == pytest.approx(direct.get_epsilon(1e-5), rel=1e-12)
    # PLD is tighter than RDP for the same mechanism.
    assert ours < accountant.epsilon(noise_multiplier=1.0, sampling_rate=0.05, steps=50, delta=1e-5)


def test_spending_composes_at_the_largest_rate() -> None:
    spent = accountant.Spent(0.0, 0).then(0.04, 23).then(0.05, 20)
    assert spent == accountant.Spent(0.05, 43)
    assert accountant.record_level_steps(samples=719, batch_size=32, epochs=5) == (
        32 / 719,
        5 * 23,
    )
    assert accountant.epsilon(noise_multiplier=1.0, sampling_rate=0.1, steps=0, delta=1e-5) == 0


_GRADS = arrays(
    np.float64,
    hs.tuples(hs.integers(1, 6), hs.integers(1, 4)),
    elements=hs.floats(-1e3, 1e3, allow_nan=False),
)


@settings(max_examples=60, deadline=None)
@given(w=_GRADS, clip=hs.floats(0.01, 10.0))
def test_no_example_contributes_more_than_the_clip_norm(w: np.ndarray, clip: float) -> None:
    per_example = {"W": w, "b": w[:, :1] * 0.5}
    clipped = clip_per_example(per_example, clip)
    norms = per_example_norms(clipped)
    assert (norms <= clip * (1 + 1e-9)).all()
    before = per_example_norms(per_example)
    small = before <= clip
    assert np.allclose(norms[small], before[small])  # below the bound: unchanged
    assert np.allclose(norms[~small], clip)


def test_dpsgd_noise_has_the_right_scale() -> None:
    params = DPSGDParameters(clip_norm=2.0, noise_multiplier=1.5, batch_size=16, epochs=1)
    sgd = DPSGD(params, samples=320, rng=np.random.default_rng(7))
    steps = [sgd.privatize({"g": np.zeros((0, 50_000))})["g"] for _ in range(4)]
    noise = np.concatenate(steps)
    expected = 1.5 * 2.0 / 16  # noise_multiplier * clip / expected batch
    assert noise.mean() == pytest.approx(0.0, abs=3 * expected / math.sqrt(noise.size) * 3)
    assert noise.std() == pytest.approx(expected, rel=0.01)


def test_dpsgd_takes_poisson_batches_of_the_expected_size() -> None:
    params = DPSGDParameters(clip_norm=1.0, noise_multiplier=1.0, batch_size=32, epochs=3)
    sgd = DPSGD(params, samples=640, rng=np.random.default_rng(3))
    sizes = [len(batch) for batch in sgd.batches()]
    assert len(sizes) == sgd.planned_steps == sgd.steps_taken == 60
    assert np.mean(sizes) == pytest.approx(32, rel=0.1)
    assert len(set(sizes)) > 1  # Poisson, not fixed-size batches


def test_cluster_level_clipping_and_hub_noise() -> None:
    global_weights = {"w": np.zeros(4)}
    strategy = ClusterDPStrategy(
        FedAvg(), clip=1.0, noise_multiplier=0.0, rng=np.random.default_rng(0)
    )
    agg = strategy.begin_round(global_weights, round_number=1)
    agg.add({"w": np.array([10.0, 0, 0, 0])}, num_examples=1000, client="big")
    agg.add({"w": np.array([0, 0.5, 0, 0])}, num_examples=1, client="small")
    # The big update is clipped to norm 1 and counts once, like the small one.
    assert np.allclose(agg.result()["w"], [0.5, 0.25, 0, 0])

    noisy = ClusterDPStrategy(
        FedAvg(), clip=1.0, noise_multiplier=2.0, rng=np.random.default_rng(1)
    )
    agg = noisy.begin_round({"w": np.zeros(200_000)}, round_number=1)
    for i in range(4):
        agg.add({"w": np.zeros(200_000)}, num_examples=1, client=f"c{i}")
    assert agg.result()["w"].std() == pytest.approx(2.0 * 1.0 / 4, rel=0.01)


def test_distributed_noise_sums_to_the_central_noise() -> None:
    sigma, clip, minimum = 1.2, 0.5, 4
    share = distributed_noise_stddev(sigma, clip, minimum)
    assert share == pytest.approx(sigma * clip / 2)
    rng = np.random.default_rng(5)
    start = {"w": np.zeros(100_000)}
    total = np.zeros(100_000)
    total += sum(
        clip_and_noise_update({"w": np.zeros(100_000)}, start, clip=clip, stddev=share, rng=rng)[
            "w"
        ]
        for _ in range(minimum)
    )
    assert total.std() == pytest.approx(sigma * clip, rel=0.02)
    with pytest.raises(ValueError, match="min_participants"):
        distributed_noise_stddev(sigma, clip, 0)


def test_clip_update_bounds_the_change_from_the_global_model() -> None:
    reference = {"w": np.array([1.0, 1.0]), "b": np.array([2.0], dtype=np.float32)}
    update = {"w": np.array([4.0, 5.0]), "b": np.array([2.0], dtype=np.float32)}
    clipped = clip_update(update, reference, 1.0)
    assert update_norm(clipped, reference) == pytest.approx(1.0)
    assert clipped["b"].dtype == np.float32


def _round_spec(tmp_path: Path, privacy: RoundPrivacy) -> RoundSpec:
    store = StoreConfig(uri=f"file://{tmp_path}/models")
    return RoundSpec(
        job=JobRef(namespace="team-a", name="digits", uid="uid-1"),
        cluster="cluster1",
        round=2,
        update_uri=f"{store.uri}/team-a/digits/update.safetensors",
        store=store,
        image="trainer:dev",
        dataset="digits",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        privacy=privacy,
    )


async def test_the_digits_trainer_runs_dp_sgd_and_reports_its_epsilon(tmp_path: Path) -> None:
    (folder,) = digits.prepare_cluster_datasets(tmp_path / "data", clusters=1)
    privacy = RoundPrivacy(
        level="Record",
        clip_norm=1.0,
        noise_multiplier=1.1,
        delta=1e-5,
        batch_size=32,
        epochs=2,
        spent_steps=90,
        spent_sampling_rate=0.02,
    )
    result = await run_round(
        _round_spec(tmp_path, privacy), digits.DigitsTrainer(), dataset_path=folder
    )
    samples = result.num_examples
    rate, steps = 32 / samples, 2 * math.ceil(samples / 32)
    assert result.privacy is not None
    assert (result.privacy.sampling_rate, result.privacy.steps) == (rate, steps)
    direct = rdp.RdpAccountant()
    direct.compose(
        dp_accounting.PoissonSampledDpEvent(max(rate, 0.02), dp_accounting.GaussianDpEvent(1.1)),
        steps + 90,
    )
    assert result.privacy.epsilon == direct.get_epsilon(1e-5)
    assert result.metrics["accuracy"] > 0.5  # it still learns


class _PlainTrainer(TrainerBase):
    def init_weights(self, seed: int) -> dict[str, Any]:
        return {"w": np.zeros(2)}

    def load_data(self, path: Path | None) -> Any:
        return None

    def train(self, weights: Any, config: Any, data: Any) -> Any:
        return {"w": np.ones(2)}, 10, {}


async def test_a_trainer_without_train_dp_fails_a_record_level_round(tmp_path: Path) -> None:
    privacy = RoundPrivacy(level="Record", clip_norm=1.0, noise_multiplier=1.0, delta=1e-5)
    with pytest.raises(DPNotSupported, match="train_dp"):
        await run_round(_round_spec(tmp_path, privacy), _PlainTrainer(), dataset_path=None)


async def test_a_cluster_adds_its_noise_share_when_the_round_says_so(tmp_path: Path) -> None:
    privacy = RoundPrivacy(
        level="Cluster", clip_norm=0.5, noise_multiplier=1.0, delta=1e-5, noise_stddev=1e-9
    )
    result = await run_round(_round_spec(tmp_path, privacy), _PlainTrainer(), dataset_path=None)
    from fl_contract.weights import decode_weights
    from fl_core.store import open_store

    store = open_store(StoreConfig(uri=f"file://{tmp_path}/models"), file_root=None)
    try:
        update = decode_weights(await store.get_buffer(result.update_uri, sha256=result.sha256))
    finally:
        await store.close()
    assert np.linalg.norm(update["w"]) == pytest.approx(0.5, abs=1e-6)  # clipped from ~1.41


_BASE = {"client": {"image": "trainer:dev", "dataset": "digits"}}


@pytest.mark.parametrize(
    ("dp", "path"),
    [
        (
            {"clipNorm": 1.0, "noiseMultiplier": 0},
            "spec.privacy.differentialPrivacy.noiseMultiplier",
        ),
        ({"clipNorm": -1, "noiseMultiplier": 1.0}, "spec.privacy.differentialPrivacy.clipNorm"),
        (
            {"clipNorm": 1, "noiseMultiplier": 1.0, "delta": 1.0},
            "spec.privacy.differentialPrivacy.delta",
        ),
        (
            {"clipNorm": 1, "noiseMultiplier": 1.0, "maxEpsilon": 0},
            "spec.privacy.differentialPrivacy.maxEpsilon",
        ),
        (
            {"clipNorm": 1, "noiseMultiplier": 1.0, "level": "Example"},
            "spec.privacy.differentialPrivacy.level",
        ),
        ({"noiseMultiplier": 1.0}, "spec.privacy.differentialPrivacy.clipNorm"),
    ],
)
def test_invalid_dp_fields_are_named(dp: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**_BASE, "privacy": {"differentialPrivacy": dp}})
    assert any(p.startswith(f"{path}:") for p in caught.value.problems), caught.value.problems


def test_record_level_dp_needs_the_dataset_whose_size_it_accounts_with() -> None:
    dp = {"differentialPrivacy": {"clipNorm": 1.0, "noiseMultiplier": 1.0}}
    with pytest.raises(SpecError, match=r"spec\.client\.dataset: record-level DP"):
        parse_spec({"client": {"image": "trainer:dev"}, "privacy": dp})


def test_record_level_dp_needs_a_trainer_that_declares_it() -> None:
    spec = {
        "client": {**_BASE["client"], "args": ["--trainer", "mine:Trainer"]},
        "privacy": {"differentialPrivacy": {"clipNorm": 1.0, "noiseMultiplier": 1.0}},
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    (problem,) = caught.value.problems
    assert problem.startswith("spec.privacy.differentialPrivacy.trainerSupport:")
    assert "train_dp" in problem
    spec["privacy"]["differentialPrivacy"]["trainerSupport"] = True  # type: ignore[index]
    assert parse_spec(spec).privacy.differential_privacy is not None
    cluster = {"clipNorm": 1.0, "noiseMultiplier": 1.0, "level": "Cluster"}
    spec["privacy"] = {"differentialPrivacy": cluster}
    parse_spec({**spec, "server": {"strategy": {"name": "FedMedian"}}})  # robust: fine
    with pytest.raises(SpecError, match=r"spec\.privacy\.differentialPrivacy\.level: .*FedAdam"):
        parse_spec({**spec, "server": {"strategy": {"name": "FedAdam"}}})
