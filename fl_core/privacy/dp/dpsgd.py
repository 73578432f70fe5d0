"""Record-level DP-SGD for trainers: Poisson-sampled batches, per-example clipping, noise.

A trainer asks `DPSGD.batches()` for the steps of its round (each a Poisson sample of its
examples at rate batch_size / n: the sampling the accountant assumes), computes one
gradient per example of the batch and gives them to `privatize`, which clips each example's
whole gradient (all tensors together) to `clip_norm`, sums, adds Gaussian noise of standard
deviation `noise_multiplier * clip_norm` and divides by the expected batch size. The round
reports `steps_taken` and `sampling_rate`, from which the accountant computes epsilon.

    dp = ...  # the runtime's DPSGD for this round
    for batch in dp.batches():
        grads = per_example_gradients(model, x[batch], y[batch])  # name -> (len(batch), ...)
        step = dp.privatize(grads)
        apply(step)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_core.privacy.dp.accountant import record_level_steps

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class DPSGDParameters:
    """What a round's DP-SGD needs (from the round spec)."""

    clip_norm: float
    noise_multiplier: float
    batch_size: int
    epochs: int


def per_example_norms(per_example: Mapping[str, Array]) -> Array:
    """The L2 norm of each example's whole gradient (every tensor together)."""
    arrays = list(per_example.values())
    count = arrays[0].shape[0] if arrays else 0
    squares = np.zeros(count, dtype=np.float64)
    for array in arrays:
        width = math.prod(array.shape[1:])  # not -1: an empty batch has no rows to infer from
        squares += np.square(array.reshape(count, width)).sum(axis=1)
    return np.asarray(np.sqrt(squares))


def clip_per_example(per_example: Mapping[str, Array], clip_norm: float) -> dict[str, Array]:
    """Each example's gradient scaled down to norm at most `clip_norm` (kept if below)."""
    norms = per_example_norms(per_example)
    scale = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))
    return {
        name: array * scale.reshape((-1,) + (1,) * (array.ndim - 1))
        for name, array in per_example.items()
    }


class DPSGD:
    """One round of DP-SGD over `samples` examples; `rng` draws the batches and the noise
    (default: seeded by the operating system, so nobody can predict the noise)."""

    def __init__(
        self,
        parameters: DPSGDParameters,
        *,
        samples: int,
        rng: np.random.Generator | None = None,
    ) -> None:
        if parameters.clip_norm <= 0 or not math.isfinite(parameters.clip_norm):
            raise ValueError(f"clip_norm must be positive, got {parameters.clip_norm}")
        if parameters.noise_multiplier < 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {parameters.noise_multiplier}")
        if parameters.batch_size < 1 or parameters.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")
        self.parameters = parameters
        self.samples = samples
        self.sampling_rate, self.planned_steps = record_level_steps(
            samples=samples, batch_size=parameters.batch_size, epochs=parameters.epochs
        )
        self.steps_taken = 0
        self._rng = rng if rng is not None else np.random.default_rng()

    def batches(self) -> Iterator[Array]:
        """The round's batches: `planned_steps` Poisson samples of example indices (each
        example in each batch with probability `sampling_rate`; a batch may be empty)."""
        for _ in range(self.planned_steps):
            mask = self._rng.random(self.samples) < self.sampling_rate
            self.steps_taken += 1
            yield np.flatnonzero(mask)

    def privatize(self, per_example: Mapping[str, Array]) -> dict[str, Array]:
        """The noisy mean gradient of one batch from its per-example gradients (name ->
        array of shape (batch, *tensor shape)); the same names and tensor shapes out."""
        clipped = clip_per_example(per_example, self.parameters.clip_norm)
        stddev = self.parameters.noise_multiplier * self.parameters.clip_norm
        out: dict[str, Array] = {}
        for name, array in clipped.items():
            total = array.sum(axis=0)
            noise = self._rng.normal(0.0, stddev, size=total.shape) if stddev > 0 else 0.0
            out[name] = (total + noise) / self.parameters.batch_size
        return out


class DPRound:
    """What the runtime gives a trainer's `train_dp`: `start(samples)` returns the round's
    DP-SGD over that many examples (once); the runtime then reads what it spent."""

    def __init__(
        self, parameters: DPSGDParameters, *, rng: np.random.Generator | None = None
    ) -> None:
        self.parameters = parameters
        self.sgd: DPSGD | None = None
        self._rng = rng

    def start(self, samples: int) -> DPSGD:
        if self.sgd is not None:
            raise RuntimeError("DP-SGD was already started for this round")
        self.sgd = DPSGD(self.parameters, samples=samples, rng=self._rng)
        return self.sgd
