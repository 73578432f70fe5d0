"""Aggregation strategies: properties (hypothesis) and reference implementations."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_contract.weights import decode_weights, encode_weights
from fl_core.strategies import (
    STRATEGY_NAMES,
    NothingToAggregate,
    Rejected,
    all_finite,
    make_strategy,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Model = dict[str, np.ndarray]
SHAPES = {"dense.w": (3, 4), "dense.b": (4,), "out": (5,)}


def _models(rng: np.random.Generator, n: int, *, scale: float = 1.0) -> list[Model]:
    return [
        {k: (rng.standard_normal(s) * scale).astype(np.float32) for k, s in SHAPES.items()}
        for _ in range(n)
    ]


def _params(name: str) -> dict[str, Any]:
    return {"proximalMu": 0.1} if name == "FedProx" else {}


def _aggregate(
    name: str,
    updates: list[Model],
    counts: list[int],
    params: dict[str, Any] | None = None,
    **kw: Any,
) -> Model:
    strategy = make_strategy(name, params or _params(name), **kw)
    agg = strategy.begin_round(None, round_number=1)
    for i, (u, n) in enumerate(zip(updates, counts, strict=True)):
        agg.add(u, num_examples=n, client=f"c{i}")
    return agg.result()


updates_and_counts = st.integers(min_value=1, max_value=6).flatmap(
    lambda n: st.tuples(
        st.integers(min_value=0, max_value=2**32 - 1),
        st.lists(st.integers(min_value=1, max_value=100_000), min_size=n, max_size=n),
    )
)


@FAST
@given(updates_and_counts, st.sampled_from([1.0, 1e-3, 1e3]))
def test_fedavg_equals_the_naive_weighted_mean(data: tuple[int, list[int]], scale: float) -> None:
    seed, counts = data
    updates = _models(np.random.default_rng(seed), len(counts), scale=scale)
    got = _aggregate("FedAvg", updates, counts)
    total = sum(counts)
    for name in SHAPES:
        naive = (
            sum(n * u[name].astype(np.float64) for n, u in zip(counts, updates, strict=True))
            / total
        )
        assert got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], naive, rtol=1e-5, atol=1e-5 * scale)


@FAST
@given(updates_and_counts, st.randoms(use_true_random=False))
def test_fedavg_does_not_depend_on_arrival_order(data: tuple[int, list[int]], random: Any) -> None:
    seed, counts = data
    updates = _models(np.random.default_rng(seed), len(counts))
    order = list(range(len(counts)))
    random.shuffle(order)
    a = _aggregate("FedAvg", updates, counts)
    b = _aggregate("FedAvg", [updates[i] for i in order], [counts[i] for i in order])
    for name in SHAPES:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@FAST
@given(
    st.integers(min_value=3, max_value=9),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.lists(finite32, min_size=1, max_size=8),
    st.sampled_from(["FedMedian", "FedTrimmedAvg"]),
)
def test_median_and_trimmed_mean_resist_a_minority(
    n: int, seed: int, poison: list[float], name: str
) -> None:
    rng = np.random.default_rng(seed)
    if name == "FedMedian":
        bad = (n - 1) // 2  # a strict minority
        kw: dict[str, Any] = {}
    else:
        bad = max(0, int(0.3 * n))  # what beta = 0.3 cuts at each end
        kw = {"beta": 0.3}
    honest = _models(rng, n - bad)
    attackers = [
        {k: np.resize(np.array(poison, np.float32), s) for k, s in SHAPES.items()}
        for _ in range(bad)
    ]
    strategy = make_strategy(name, kw)
    agg = strategy.begin_round(None, round_number=1)
    for i, u in enumerate(attackers + honest):
        agg.add(u, num_examples=1 + i, client=f"c{i}")
    got = agg.result()
    for k in SHAPES:
        stack = np.stack([h[k] for h in honest])
        assert np.all(got[k] >= stack.min(axis=0) - 1e-6)
        assert np.all(got[k] <= stack.max(axis=0) + 1e-6)


BAD_UPDATES: list[tuple[str, Any]] = [
    ("NonFinite", lambda m: {**m, "out": np.array([0, np.nan, 0, 0, 0], np.float32)}),
    ("NonFinite", lambda m: {**m, "out": np.array([np.inf, 0, 0, 0, 0], np.float32)}),
    ("ShapeMismatch", lambda m: {**m, "out": np.zeros(6, np.float32)}),
    ("DtypeMismatch", lambda m: {**m, "out": np.zeros(5, np.float64)}),
    ("DtypeMismatch", lambda m: {**m, "out": np.zeros(5, np.int32)}),
    ("NamesMismatch", lambda m: {k: v for k, v in m.items() if k != "out"}),
    ("NamesMismatch", lambda m: {**m, "extra": np.zeros(1, np.float32)}),
    ("EmptyUpdate", lambda m: {}),
]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@pytest.mark.parametrize("with_global", [True, False])
def test_a_rejected_update_leaves_the_aggregator_untouched(name: str, with_global: bool) -> None:
    rng = np.random.default_rng(7)
    glob, *updates = _models(rng, 5)
    counts = [3, 1, 4, 1]

    def run(inject: bool) -> Model:
        strategy = make_strategy(name, _params(name))
        agg = strategy.begin_round(glob if with_global else None, round_number=2)
        for i, (u, n) in enumerate(zip(updates, counts, strict=True)):
            agg.add(u, num_examples=n, client=f"c{i}")
            if inject and i == 1:
                for reason, make_bad in BAD_UPDATES:
                    with pytest.raises(Rejected) as info:
                        agg.add(make_bad(u), num_examples=5, client="bad")
                    assert info.value.reason == reason
                with pytest.raises(Rejected, match="DuplicateClient"):
                    agg.add(u, num_examples=n, client="c0")
                with pytest.raises(Rejected, match="NoExamples"):
                    agg.add(u, num_examples=0, client="none")
        assert agg.accepted == len(updates)
        return agg.result()

    clean, dirty = run(False), run(True)
    for k in SHAPES:
        np.testing.assert_array_equal(clean[k], dirty[k])


def test_round_state_errors() -> None:
    agg = make_strategy("FedAvg").begin_round(None, round_number=1)
    with pytest.raises(NothingToAggregate):
        agg.result()
    (update,) = _models(np.random.default_rng(0), 1)
    agg.add(update, num_examples=2, client="a")
    first = agg.result()
    assert agg.result() is first  # computed once
    with pytest.raises(Rejected, match="RoundClosed"):
        agg.add(update, num_examples=2, client="b")


def _reference_fedopt(name: str, p: dict[str, float], x: Model, means: list[Model]) -> list[Model]:
    """The update rules written out plainly in float64."""
    m = {k: np.zeros_like(v, dtype=np.float64) for k, v in x.items()}
    v = {k: np.zeros_like(a, dtype=np.float64) for k, a in x.items()}
    xs = {k: a.astype(np.float64) for k, a in x.items()}
    out = []
    for t, mean in enumerate(means, start=1):
        for k in xs:
            d = mean[k].astype(np.float64) - xs[k]
            m[k] = p["beta_1"] * m[k] + (1 - p["beta_1"]) * d
            if name == "FedAdam":
                v[k] = p["beta_2"] * v[k] + (1 - p["beta_2"]) * d * d
                lr = p["eta"] * np.sqrt(1 - p["beta_2"] ** (t + 1)) / (1 - p["beta_1"] ** (t + 1))
            elif name == "FedYogi":
                v[k] = v[k] - (1 - p["beta_2"]) * d * d * np.sign(v[k] - d * d)
                lr = p["eta"]
            else:
                v[k] = v[k] + d * d
                lr = p["eta"]
            xs[k] = xs[k] + lr * m[k] / (np.sqrt(v[k]) + p["tau"])
        out.append({k: a.copy() for k, a in xs.items()})
    return out


DEFAULTS = {
    "FedAdam": {"eta": 0.1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-9},
    "FedYogi": {"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3},
    "FedAdagrad": {"eta": 0.1, "beta_1": 0.0, "beta_2": 0.0, "tau": 1e-9},
}


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(sorted(DEFAULTS)), st.integers(min_value=0, max_value=2**32 - 1))
def test_server_optimisers_match_their_update_rule(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x0 = _models(rng, 1)[0]
    strategy = make_strategy(name)
    x = x0
    means: list[Model] = []
    got: list[Model] = []
    for r in range(1, 4):
        updates = _models(rng, 3, scale=0.5)
        counts = [int(c) for c in rng.integers(1, 50, size=3)]
        agg = strategy.begin_round(x, round_number=r)
        for i, (u, n) in enumerate(zip(updates, counts, strict=True)):
            agg.add(u, num_examples=n, client=f"c{i}")
        total = sum(counts)
        means.append(
            {
                k: np.asarray(
                    sum(n * u[k].astype(np.float64) for n, u in zip(counts, updates, strict=True))
                )
                / total
                for k in SHAPES
            }
        )
        x = agg.result()
        got.append(x)
    reference = _reference_fedopt(name, DEFAULTS[name], x0, means)
    for mine, ref in zip(got, reference, strict=True):
        for k in SHAPES:
            np.testing.assert_allclose(mine[k], ref[k], rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_server_state_survives_a_restart(name: str) -> None:
    rng = np.random.default_rng(1)
    x0 = _models(rng, 1)[0]
    rounds = [(_models(rng, 2), [5, 7]) for _ in range(3)]

    def play(strategy: Any, x: Model, which: list[int]) -> Model:
        for r in which:
            updates, counts = rounds[r - 1]
            agg = strategy.begin_round(x, round_number=r)
            for i, (u, n) in enumerate(zip(updates, counts, strict=True)):
                agg.add(u, num_examples=n, client=f"c{i}")
            x = agg.result()
        return x

    straight = play(make_strategy(name), x0, [1, 2, 3])
    first = make_strategy(name)
    x2 = play(first, x0, [1, 2])
    saved = encode_weights(first.server_state())  # persisted in the store as a weights file
    restarted = make_strategy(name)
    restarted.load_server_state(decode_weights(saved))
    resumed = play(restarted, x2, [3])
    for k in SHAPES:
        np.testing.assert_array_equal(resumed[k], straight[k])
    with pytest.raises(ValueError, match="m/<name> and v/<name>"):
        make_strategy(name).load_server_state({"x": np.zeros(1)})


def _naive_krum(updates: list[Model], f: int) -> list[float]:
    flat = [
        np.concatenate([u[k].ravel().astype(np.float64) for k in sorted(SHAPES)]) for u in updates
    ]
    n = len(flat)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((flat[i] - flat[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: max(1, n - f - 2)]))
    return scores


@pytest.mark.parametrize("chunk_bytes", [16, 1 << 20])
def test_krum_and_multikrum_pick_honest_updates(tmp_path: Path, chunk_bytes: int) -> None:
    rng = np.random.default_rng(3)
    honest = _models(rng, 5, scale=0.1)
    attackers = _models(rng, 2, scale=50.0)
    updates = honest[:2] + attackers + honest[2:]
    counts = [1, 2, 3, 4, 5, 6, 7]
    scores = _naive_krum(updates, f=2)
    best = int(np.argmin(scores))
    assert best not in (2, 3)
    krum = _aggregate("Krum", updates, counts, {"numMalicious": 2}, spill_dir=tmp_path)
    for k in SHAPES:
        np.testing.assert_array_equal(krum[k], updates[best][k])
    strategy = make_strategy("MultiKrum", {"numMalicious": 2, "numToKeep": 3}, spill_dir=tmp_path)
    strategy.chunk_bytes = chunk_bytes  # type: ignore[attr-defined]
    agg = strategy.begin_round(None, round_number=1)
    for i, (u, n) in enumerate(zip(updates, counts, strict=True)):
        agg.add(u, num_examples=n, client=f"c{i}")
    kept = [int(i) for i in np.argsort(scores)[:3]]
    got = agg.result()
    for k in SHAPES:
        want = sum(counts[i] * updates[i][k].astype(np.float64) for i in kept) / sum(
            counts[i] for i in kept
        )
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6)
    assert list(tmp_path.iterdir()) == []  # spilled updates are removed after the result


@pytest.mark.parametrize("name", ["FedMedian", "FedTrimmedAvg"])
def test_chunked_robust_aggregation_matches_numpy(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(5)
    updates = _models(rng, 6)
    counts = [1] * 6
    for chunk in (8, 40, 1 << 20):
        strategy = make_strategy(name, spill_dir=tmp_path)
        strategy.chunk_bytes = chunk  # type: ignore[attr-defined]
        agg = strategy.begin_round(None, round_number=1)
        for i, u in enumerate(updates):
            agg.add(u, num_examples=counts[i], client=f"c{i}")
        got = agg.result()
        for k in SHAPES:
            stack = np.stack([u[k] for u in updates])
            if name == "FedMedian":
                want = np.median(stack, axis=0)
            else:  # beta 0.2 of 6 cuts one value at each end
                want = np.sort(stack, axis=0)[1:-1].mean(axis=0)
            np.testing.assert_allclose(got[k], want, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("FedAvgg", {}, "unknown strategy 'FedAvgg'"),
        ("FedProx", {}, "'proximal_mu' is required"),
        ("FedProx", {"proximalMu": -1}, "'proximalMu' = -1 is outside"),
        ("FedAdam", {"beta1": 1.5}, "'beta1' = 1.5 is outside"),
        ("FedAdam", {"eta": "0.1"}, "'eta' must be a number"),
        ("FedAdagrad", {"beta_1": 0.5}, "unknown parameter 'beta_1'"),
        ("FedTrimmedAvg", {"beta": 0.5}, "'beta' = 0.5 is outside [0.0, 0.5)"),
        ("Krum", {"numMalicious": 1.5}, "'numMalicious' must be a non-negative integer"),
        ("MultiKrum", {"num_to_keep": 2, "numToKeep": 3}, "repeats"),
    ],
)
def test_make_strategy_names_the_bad_parameter(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(
        ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        make_strategy(name, params)


def test_client_config_and_parameters() -> None:
    assert make_strategy("FedProx", {"proximalMu": 0.01}).client_config(1) == {"proximal_mu": 0.01}
    assert make_strategy("FedAvg").client_config(1) == {}
    adam = make_strategy("FedAdam", {"eta": 0.5, "etaL": 0.01, "tau": 1e-3})
    assert (adam.eta, adam.eta_l, adam.beta_1, adam.tau) == (0.5, 0.01, 0.9, 1e-3)  # type: ignore[attr-defined]


def test_all_finite_handles_overflowing_but_finite_values() -> None:
    big = np.full(1000, 3e38, np.float32)
    assert all_finite(big)
    big[500] = np.inf
    assert not all_finite(big)
    assert all_finite(np.zeros((0, 3), np.float32))
    assert not all_finite(np.array([np.nan], np.float16))


def test_mixed_dtypes_and_float64_models() -> None:
    rng = np.random.default_rng(2)
    updates: list[Model] = [
        {"a": rng.standard_normal(3), "h": rng.standard_normal(2).astype(np.float16)}
        for _ in range(3)
    ]
    for name in STRATEGY_NAMES:
        got = _aggregate(name, updates, [1, 2, 3])
        assert got["a"].dtype == np.float64
        assert got["h"].dtype == np.float16


def test_every_pair_of_orderings_gives_the_same_median() -> None:
    updates = _models(np.random.default_rng(9), 4)
    results = [_aggregate("FedMedian", list(p), [1] * 4) for p in itertools.permutations(updates)]
    for r in results[1:]:
        for k in SHAPES:
            np.testing.assert_array_equal(r[k], results[0][k])


@pytest.mark.parametrize("name", ["FedAvg", "FedMedian"])
def test_concurrent_adds_from_threads_count_every_update(name: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(11)
    updates = [{"w": rng.standard_normal(200_000).astype(np.float32)} for _ in range(8)]
    agg = make_strategy(name).begin_round(None, round_number=1)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for f in [
            pool.submit(agg.add, u, num_examples=i + 1, client=f"c{i}")
            for i, u in enumerate(updates)
        ]:
            f.result()
    assert agg.accepted == 8
    seq = make_strategy(name).begin_round(None, round_number=1)
    for i, u in enumerate(updates):
        seq.add(u, num_examples=i + 1, client=f"c{i}")
    np.testing.assert_allclose(agg.result()["w"], seq.result()["w"], rtol=1e-5, atol=1e-6)
