"""Cluster-level DP on the hub: a strategy that clips each cluster's update and adds the
noise to the aggregate.

Every accepted update counts once (weight 1, whatever its example count: a cluster's
influence must not depend on what it claims), its change from the global model clipped to
`clip`; the wrapped strategy aggregates the clipped updates, and Gaussian noise of standard
deviation `noise_multiplier * clip / m` (the noise on the sum of `m` updates, divided as
the mean is) is added to its result. Without a global model (round 1 without an initial
model) the change is measured from zero weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_contract.weights import Weights
from fl_core.privacy.dp.noise import add_noise, clip_update
from fl_core.strategies.base import ClientConfig, RoundAggregator, Spec, Staged, Strategy


class ClusterDPStrategy(Strategy):
    """`inner` with each update clipped to `clip` and noise on the aggregate."""

    def __init__(
        self,
        inner: Strategy,
        *,
        clip: float,
        noise_multiplier: float,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.clip = clip
        self.noise_multiplier = noise_multiplier
        self._rng = rng if rng is not None else np.random.default_rng()

    def client_config(self, round_number: int) -> ClientConfig:
        return self.inner.client_config(round_number)

    def begin_round(self, global_weights: Weights | None, *, round_number: int) -> RoundAggregator:
        return _ClippedAggregator(
            self.inner.begin_round(global_weights, round_number=round_number),
            global_weights=global_weights,
            clip=self.clip,
            noise_multiplier=self.noise_multiplier,
            rng=self._rng,
        )

    def server_state(self) -> Weights:
        return self.inner.server_state()

    def load_server_state(self, state: Weights) -> None:
        self.inner.load_server_state(state)


class _ClippedAggregator(RoundAggregator):
    def __init__(
        self,
        inner: RoundAggregator,
        *,
        global_weights: Weights | None,
        clip: float,
        noise_multiplier: float,
        rng: np.random.Generator,
    ) -> None:
        super().__init__(global_weights)
        self._inner = inner
        self._reference = global_weights
        self._clip = clip
        self._noise_multiplier = noise_multiplier
        self._rng = rng

    def _stage(
        self,
        update: Mapping[str, npt.NDArray[Any]],
        *,
        num_examples: int,
        client: str,
        spec: Spec,
        deferred: bool,
    ) -> Staged:
        clipped = clip_update(update, self._reference, self._clip)
        self._inner.check(clipped, num_examples=1, client=client)
        return Staged(lambda: self._inner.add(clipped, num_examples=1, client=client))

    def _compute(self, spec: Spec) -> Weights:
        result = self._inner.result()
        stddev = self._noise_multiplier * self._clip / max(self._inner.accepted, 1)
        return add_noise(result, stddev, self._rng)
