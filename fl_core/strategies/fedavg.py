"""FedAvg and FedProx: the example-weighted mean of the updates, computed as a stream.

Each update is folded into one accumulator per tensor as it arrives (`acc += n_i * w_i`),
so memory is one model, however many clusters report, and the result is `acc / sum(n_i)`.

Precision: the accumulator has the model's dtype, at least float32 (float16 models
accumulate in float32, float64 models in float64). Summing N float32 terms has a worst-case
relative error of about N * 6e-8 against the sum of magnitudes (6e-6 for 100 clusters,
typically sqrt(N) * 6e-8); the result is stored as float32 anyway and the spread between
clusters' updates is orders of magnitude larger, so float64 would buy nothing visible at
the cost of 2.5x the memory traffic.

Speed: the fold is memory-bound: one read of the update, one read-write of the
accumulator, through BLAS axpy pinned to one thread (see `blas`), or numpy ufuncs over
cache-sized chunks where that is not available.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_contract.weights import Weights
from fl_core.strategies.base import ClientConfig, RoundAggregator, Spec, Staged, Strategy
from fl_core.strategies.blas import axpy_kernels

_CHUNK = 1 << 18  # elements per chunk: a 1 MiB float32 scratch that stays in L2


def accumulator_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def axpy(acc: npt.NDArray[Any], x: npt.NDArray[Any], alpha: float) -> None:
    """acc += alpha * x in place: single-threaded BLAS axpy when available, otherwise
    numpy in cache-sized chunks (`alpha * x` lands in a small scratch buffer that stays in
    cache, so memory sees one read of x and one read-write of acc)."""
    flat_acc = acc.reshape(-1)
    flat_x = x.reshape(-1)
    if flat_acc.size == 0:
        return
    kernel = axpy_kernels().get(acc.dtype) if x.dtype == acc.dtype else None
    if kernel is not None and flat_acc.flags.c_contiguous and flat_x.flags.c_contiguous:
        out = kernel(flat_x, flat_acc, a=alpha)
        if out is not flat_acc and not np.may_share_memory(out, flat_acc):
            flat_acc[...] = out  # the wrapper copied (it does not for contiguous inputs)
        return
    axpy_into(flat_acc, flat_acc, flat_x, alpha)


def axpy_into(
    out: npt.NDArray[Any], acc: npt.NDArray[Any], x: npt.NDArray[Any], alpha: float
) -> None:
    """out = acc + alpha * x, in cache-sized chunks (no temporary the size of x)."""
    flat_out, flat_acc, flat_x = out.reshape(-1), acc.reshape(-1), x.reshape(-1)
    if flat_out.size == 0:
        return
    scratch = np.empty(min(_CHUNK, flat_out.size), dtype=out.dtype)
    for start in range(0, flat_out.size, _CHUNK):
        end = min(start + _CHUNK, flat_out.size)
        part = scratch[: end - start]
        np.multiply(flat_x[start:end], alpha, out=part, casting="unsafe")
        np.add(flat_acc[start:end], part, out=flat_out[start:end])


class MeanAggregator(RoundAggregator):
    """Streaming weighted (or unweighted) mean; memory: one accumulator the model's size."""

    def __init__(self, global_weights: Weights | None, *, weighted: bool = True) -> None:
        super().__init__(global_weights)
        self._weighted = weighted
        self._acc: dict[str, npt.NDArray[Any]] = {}
        self._shadow: dict[str, npt.NDArray[Any]] = {}
        self._total = 0.0
        axpy_kernels()  # one-time setup (SciPy import, BLAS pinning) at round start, not on an update
        if global_weights is not None:
            # The round starts before any update arrives: allocate the accumulator now and
            # touch its pages, so the first update pays no page faults.
            for name, array in sorted(global_weights.items()):
                acc = np.empty(np.shape(array), dtype=accumulator_dtype(np.asarray(array).dtype))
                acc.fill(0)
                self._acc[name] = acc

    def _stage(
        self,
        update: Mapping[str, npt.NDArray[Any]],
        *,
        num_examples: int,
        client: str,
        spec: Spec,
        deferred: bool,
    ) -> Staged:
        weight = float(num_examples) if self._weighted else 1.0
        if not self._acc:
            # No global model (round 1 from a seed): the first update initialises the
            # accumulator (acc = weight * x), one pass instead of zero-filling then adding.
            first = {
                name: np.multiply(
                    np.asarray(update[name]), weight, dtype=accumulator_dtype(dtype)
                ).reshape(shape)
                for name, (dtype, shape) in spec.items()
            }

            def start() -> None:
                self._acc = first
                self._count(weight)

            return Staged(start)
        if not deferred:
            for name, acc in self._acc.items():
                axpy(acc, np.asarray(update[name]), weight)
            return Staged(lambda: self._count(weight))
        # Deferred (hash still being checked): write acc + weight * x into a second buffer
        # and swap on commit. Same memory traffic as in place; one more model of memory.
        if not self._shadow:
            self._shadow = {name: np.empty_like(acc) for name, acc in self._acc.items()}
        for name, acc in self._acc.items():
            axpy_into(self._shadow[name], acc, np.asarray(update[name]), weight)

        def commit() -> None:
            self._acc, self._shadow = self._shadow, self._acc
            self._count(weight)

        return Staged(commit)

    def _count(self, weight: float) -> None:
        self._total += weight

    def mean(self) -> dict[str, npt.NDArray[np.floating[Any]]]:
        """The mean in the accumulator's dtype (server optimisers start from this).

        Scales the accumulator in place and hands it out: `result()` runs once and the
        round is closed afterwards, so no second model-sized buffer is needed."""
        scale = 1.0 / self._total
        for acc in self._acc.values():
            np.multiply(acc, acc.dtype.type(scale), out=acc)
        self._shadow = {}
        return self._acc

    def _compute(self, spec: Spec) -> Weights:
        return {name: m.astype(spec[name][0], copy=False) for name, m in self.mean().items()}


class FedAvg(Strategy):
    """McMahan et al. 2017: the new global model is the example-weighted mean."""

    name = "FedAvg"

    def begin_round(self, global_weights: Weights | None, *, round_number: int) -> RoundAggregator:
        return MeanAggregator(global_weights)


class FedProx(FedAvg):
    """Li et al. 2020: FedAvg on the server; clients add (mu/2)*||w - w_global||^2 to their
    loss, with mu sent to them as `proximal_mu`."""

    name = "FedProx"

    def __init__(self, *, proximal_mu: float) -> None:
        self.proximal_mu = proximal_mu

    def client_config(self, round_number: int) -> ClientConfig:
        return {"proximal_mu": self.proximal_mu}
