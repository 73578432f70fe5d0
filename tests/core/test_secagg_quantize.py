"""Secure aggregation: quantization onto the integer grid and the bound on the sum's error."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fl_core.privacy.secagg import SecAggError
from fl_core.privacy.secagg.quantize import dequantize, dequantize_sum, quantize, step

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
floats = st.floats(min_value=-20, max_value=20, allow_nan=False, width=32)


@FAST
@given(
    vectors=st.integers(1, 6).flatmap(
        lambda n: st.lists(hnp.arrays(np.float32, 7, elements=floats), min_size=n, max_size=n)
    ),
    clip=st.sampled_from([1.0, 3.0, 8.0]),
    grid=st.sampled_from([2**8, 2**16, 2**22]),
    stochastic=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_of_quantized_vectors_dequantizes_within_the_documented_bound(
    vectors: list[np.ndarray], clip: float, grid: int, stochastic: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed) if stochastic else None
    total = np.zeros(7, dtype=np.uint64)
    for v in vectors:
        q = quantize(v, clipping_range=clip, quantization_range=grid, rng=rng)
        assert q.max() <= grid - 1
        total += q
    got = dequantize_sum(total, count=len(vectors), clipping_range=clip, quantization_range=grid)
    want = sum(np.clip(v.astype(np.float64), -clip, clip) for v in vectors)
    delta = step(clip, grid)
    bound = len(vectors) * delta * (1.0 if stochastic else 0.5)
    assert np.abs(got - want).max() <= bound * (1 + 1e-9)


def test_stochastic_rounding_is_unbiased() -> None:
    x = np.full(200_000, 0.3, dtype=np.float64)
    q = quantize(x, clipping_range=1.0, quantization_range=2**4, rng=np.random.default_rng(1))
    values = dequantize(q, clipping_range=1.0, quantization_range=2**4)
    # 0.3 lies between two grid points 2/15 apart; the mean of the roundings is 0.3.
    assert len(np.unique(values)) == 2
    assert abs(values.mean() - 0.3) < 5e-3
    nearest = dequantize(
        quantize(x, clipping_range=1.0, quantization_range=2**4),
        clipping_range=1.0,
        quantization_range=2**4,
    )
    assert abs(nearest.mean() - 0.3) > 0.03  # to nearest is biased here, hence stochastic


def test_clipping_and_grid_ends() -> None:
    q = quantize(
        np.array([-100.0, -8.0, 0.0, 8.0, 100.0]), clipping_range=8.0, quantization_range=2**22
    )
    # 0 sits half-way between 2**21 - 1 and 2**21 (rounded half to even).
    assert q.tolist() == [0, 0, 2**21, 2**22 - 1, 2**22 - 1]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(SecAggError, match="NaN or infinite"):
        quantize(np.array([0.0, bad]), clipping_range=8.0, quantization_range=2**22)
