"""Cluster-level DP: each cluster's update (its change to the global model) clipped to a
norm, and Gaussian noise of standard deviation noise_multiplier * clip on their sum.

The hub adds the noise itself when it sees the updates (`clip_update`, `add_noise`). Under
secure aggregation it sees only the sum, so each cluster adds a share
(`clip_and_noise_update` with `distributed_noise_stddev`): independent Gaussian shares
from at least `min_participants` clusters sum to at least the required noise, so the
guarantee holds with any dropout the quorum allows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_contract.weights import Weights

Array = npt.NDArray[Any]


def distributed_noise_stddev(sigma: float, clip: float, min_participants: int) -> float:
    """Each cluster's noise standard deviation so that the sum of the shares of any
    `min_participants` clusters has standard deviation `sigma * clip` (or more)."""
    if min_participants < 1:
        raise ValueError(f"min_participants must be at least 1, got {min_participants}")
    return sigma * clip / math.sqrt(min_participants)


def update_norm(update: Mapping[str, Array], reference: Mapping[str, Array] | None) -> float:
    """L2 norm of `update - reference` over every tensor (reference None: zeros)."""
    total = 0.0
    for name, array in update.items():
        delta = np.asarray(array, dtype=np.float64)
        if reference is not None:
            delta = delta - np.asarray(reference[name], dtype=np.float64)
        total += float(np.square(delta).sum())
    return math.sqrt(total)


def clip_update(
    update: Mapping[str, Array], reference: Mapping[str, Array] | None, clip: float
) -> Weights:
    """`reference + (update - reference)` with the change scaled to norm at most `clip`;
    the update's dtypes kept. Reference None: the change from zero weights."""
    norm = update_norm(update, reference)
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    out: Weights = {}
    for name, array in update.items():
        base = (
            np.asarray(reference[name], dtype=np.float64)
            if reference is not None
            else np.zeros(np.shape(array))
        )
        clipped = base + (np.asarray(array, dtype=np.float64) - base) * scale
        out[name] = clipped.astype(np.asarray(array).dtype, copy=False)
    return out


def add_noise(weights: Mapping[str, Array], stddev: float, rng: np.random.Generator) -> Weights:
    """`weights` plus independent Gaussian noise of standard deviation `stddev`."""
    return {
        name: (
            np.asarray(array, dtype=np.float64) + rng.normal(0.0, stddev, size=np.shape(array))
        ).astype(np.asarray(array).dtype, copy=False)
        for name, array in weights.items()
    }


def clip_and_noise_update(
    update: Mapping[str, Array],
    reference: Mapping[str, Array] | None,
    *,
    clip: float,
    stddev: float,
    rng: np.random.Generator | None = None,
) -> Weights:
    """A cluster's own step under distributed noise: its change clipped to `clip`, plus
    its noise share (`distributed_noise_stddev`)."""
    clipped = clip_update(update, reference, clip)
    if stddev <= 0:
        return clipped
    return add_noise(clipped, stddev, rng if rng is not None else np.random.default_rng())
