"""Floats to integers mod a power of two and back, so that masks can cancel exactly.

A value x is clipped to [-c, c] (c = clipping_range) and mapped onto the integer grid
{0, ..., Q-1} (Q = quantization_range) with step delta = 2c / (Q-1):

    q = round((clip(x) + c) / delta)          in [0, Q-1]
    x' = q * delta - c

`round` is stochastic when a generator is given (floor(y + u), u uniform in [0, 1):
unbiased, E[x'] = clip(x)) and to-nearest otherwise. Adding the quantized vectors of N
clients as integers and dequantizing with `dequantize_sum(..., count=N)` gives
sum(clip(x_i)) with an error per element of

    |error| <= N * delta / 2      (to nearest)
    |error| <  N * delta          (stochastic; zero mean, standard deviation <= sqrt(N) * delta / 2)

plus float64 rounding (relative 1e-16). With the defaults (c = 8, Q = 2**22) delta is
3.8e-6. The integer sum must not wrap: N * (Q-1) < modulus, which `SecAggParams` checks
(`max_clients`: 1024 with the defaults).

Weights: FedAvg needs sum(n_i * x_i) and sum(n_i). A client scales its clipped vector by
r_i = n_i / max_weight (in (0, 1], so the product stays in [-c, c]) and appends r_i as one
more element (as Flower's SecAgg+ does); the hub gets sum(r_i * clip(x_i)) and sum(r_i),
and multiplies both by max_weight. The weighted mean is their ratio, exactly FedAvg's
(up to the error above, on each of the two sums).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fl_core.privacy.secagg.errors import SecAggError


def step(clipping_range: float, quantization_range: int) -> float:
    """delta: the distance between two neighbouring grid values."""
    return 2.0 * clipping_range / (quantization_range - 1)


def quantize(
    values: npt.ArrayLike,
    *,
    clipping_range: float,
    quantization_range: int,
    rng: np.random.Generator | None = None,
) -> npt.NDArray[np.uint64]:
    """Clip to [-c, c] and map onto {0, ..., Q-1}; stochastic rounding when `rng` is given.

    Non-finite values raise `SecAggError` (a NaN would silently become a grid value)."""
    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise SecAggError("the vector to quantize holds NaN or infinite values")
    scale = (quantization_range - 1) / (2.0 * clipping_range)
    y = np.clip(x, -clipping_range, clipping_range)
    y += clipping_range
    y *= scale
    if rng is None:
        np.rint(y, out=y)
    else:
        y += rng.random(y.shape)
        np.floor(y, out=y)
    np.clip(y, 0, quantization_range - 1, out=y)  # float rounding at the top of the grid
    return y.astype(np.uint64)


def dequantize_sum(
    total: npt.NDArray[Any],
    *,
    count: int,
    clipping_range: float,
    quantization_range: int,
    scale: float = 1.0,
) -> npt.NDArray[np.float64]:
    """The float sum of `count` clipped vectors from the integer sum of their quantizations
    (already reduced mod the modulus, and not wrapped: count * (Q-1) < modulus), times
    `scale` (in the same passes over the data)."""
    out = np.asarray(total).astype(np.float64)
    out *= step(clipping_range, quantization_range) * scale
    out -= count * clipping_range * scale
    return out


def dequantize(
    quantized: npt.NDArray[Any], *, clipping_range: float, quantization_range: int
) -> npt.NDArray[np.float64]:
    """One client's values back from its quantization (`dequantize_sum` with count 1)."""
    return dequantize_sum(
        quantized, count=1, clipping_range=clipping_range, quantization_range=quantization_range
    )
