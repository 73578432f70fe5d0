"""Byzantine-robust strategies: coordinate-wise median, trimmed mean, Krum and Multi-Krum.

These need every update at once, which would cost N models of memory. Instead each
accepted update is spilled to a file (its raw tensor bytes, in the model's tensor order)
in a private temporary folder, and the result is computed in chunks of parameters: for
each tensor, `k` consecutive elements of all N updates are read into one (N, k) block.

Memory bound: one (N, k) block of at most `chunk_bytes` (default 64 MiB; Krum also makes
two float64 copies of the block for distances, so up to 5x that for float32 models), the
result model (Multi-Krum: plus one update read back and a float32/64 accumulator), an
(N, N) distance matrix, and nothing else per update. One file descriptor per update is
open while the result is computed.
Disk: N x model bytes in the spill folder (`spill_dir`, default the system temp folder),
removed when the round's result is computed or the aggregator is garbage-collected.

Update rules follow Flower (`flwr.server.strategy.aggregate`): median = `np.median` over
clients; trimmed mean cuts `int(beta * N)` updates at each end per coordinate; Krum scores
each update by the summed squared L2 distance to its `max(1, N - f - 2)` nearest others and
picks the lowest; Multi-Krum averages (weighted by examples) the `num_to_keep` lowest.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_contract.weights import Weights
from fl_core.strategies.base import NothingToAggregate, RoundAggregator, Spec, Staged, Strategy
from fl_core.strategies.fedavg import accumulator_dtype, axpy

DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024


class SpillAggregator(RoundAggregator):
    """Keeps the updates on disk and walks them chunk by chunk."""

    def __init__(
        self, global_weights: Weights | None, *, spill_dir: Path | None, chunk_bytes: int
    ) -> None:
        super().__init__(global_weights)
        self._tmp = tempfile.TemporaryDirectory(prefix="fl-spill-", dir=spill_dir)
        self._folder = Path(self._tmp.name)
        self._files: list[Path] = []
        self._examples: list[int] = []
        self._chunk_bytes = chunk_bytes

    def _stage(
        self,
        update: Mapping[str, npt.NDArray[Any]],
        *,
        num_examples: int,
        client: str,
        spec: Spec,
        deferred: bool,
    ) -> Staged:
        path = self._folder / f"{len(self._files)}.bin"
        try:
            with path.open("wb") as handle:
                for name in spec:
                    array = np.ascontiguousarray(update[name])
                    if array.size:
                        handle.write(array.data.cast("B"))
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise

        def commit() -> None:
            self._files.append(path)
            self._examples.append(num_examples)

        def discard() -> None:
            with contextlib.suppress(OSError):
                path.unlink()

        return Staged(commit, discard)

    def blocks(self, spec: Spec) -> Iterator[tuple[str, int, int, npt.NDArray[Any]]]:
        """(tensor, start, end, block[N, end-start]) over every element of every tensor.
        The block is reused between iterations: consume it before the next one."""
        n = len(self._files)
        handles = [os.open(p, os.O_RDONLY) for p in self._files]
        try:
            offset = 0
            for name, (dtype, shape) in spec.items():
                size = int(np.prod(shape, dtype=np.int64))
                k = max(1, min(size, self._chunk_bytes // (n * dtype.itemsize)))
                block = np.empty((n, k), dtype=dtype)
                for start in range(0, size, k):
                    end = min(size, start + k)
                    rows = block[:, : end - start]
                    for i, fd in enumerate(handles):
                        want = (end - start) * dtype.itemsize
                        got = os.preadv(
                            fd, [rows[i].data.cast("B")], offset + start * dtype.itemsize
                        )
                        if got != want:
                            raise OSError(f"spill file {self._files[i]} is short")
                    yield name, start, end, rows
                offset += size * dtype.itemsize
        finally:
            for fd in handles:
                os.close(fd)

    def read_update(self, index: int, spec: Spec) -> Weights:
        raw = self._files[index].read_bytes()
        out: Weights = {}
        offset = 0
        for name, (dtype, shape) in spec.items():
            count = int(np.prod(shape, dtype=np.int64))
            out[name] = (
                np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape).copy()
            )
            offset += count * dtype.itemsize
        return out

    def cleanup(self) -> None:
        self._tmp.cleanup()

    def _per_coordinate(self, spec: Spec, reduce: Any) -> Weights:
        out = {name: np.empty(shape, dtype=dtype) for name, (dtype, shape) in spec.items()}
        try:
            for name, start, end, rows in self.blocks(spec):
                out[name].reshape(-1)[start:end] = reduce(rows)
        finally:
            self.cleanup()
        return out


class _MedianAggregator(SpillAggregator):
    def _compute(self, spec: Spec) -> Weights:
        return self._per_coordinate(spec, lambda rows: np.median(rows, axis=0))


class _TrimmedAggregator(SpillAggregator):
    def __init__(self, global_weights: Weights | None, *, beta: float, **kw: Any) -> None:
        super().__init__(global_weights, **kw)
        self._beta = beta

    def _compute(self, spec: Spec) -> Weights:
        return self._per_coordinate(spec, lambda rows: trim_mean(rows, self._beta))


class _KrumAggregator(SpillAggregator):
    def __init__(
        self, global_weights: Weights | None, *, num_malicious: int, num_to_keep: int, **kw: Any
    ) -> None:
        super().__init__(global_weights, **kw)
        self._f = num_malicious
        self._m = num_to_keep

    def _compute(self, spec: Spec) -> Weights:
        try:
            selected = krum_select(self.distances(spec), num_malicious=self._f, to_keep=self._m)
            if self._m <= 0:
                return self.read_update(selected[0], spec)
            acc = {n: np.zeros(s, dtype=accumulator_dtype(d)) for n, (d, s) in spec.items()}
            total = 0
            for index in selected:
                update = self.read_update(index, spec)
                for name, a in acc.items():
                    axpy(a, update[name], float(self._examples[index]))
                total += self._examples[index]
            return {n: (a / total).astype(spec[n][0]) for n, a in acc.items()}
        finally:
            self.cleanup()

    def distances(self, spec: Spec) -> npt.NDArray[np.float64]:
        """Squared L2 distances between all pairs of updates, accumulated chunk by chunk."""
        n = len(self._files)
        dist = np.zeros((n, n))
        for _, _, _, rows in self.blocks(spec):
            block = rows.astype(np.float64)
            for i in range(n):
                diff = block - block[i]
                dist[i] += np.einsum("ij,ij->i", diff, diff)
        return dist


def krum_select(dist: npt.NDArray[np.float64], *, num_malicious: int, to_keep: int) -> list[int]:
    """Indices Krum (to_keep <= 0: the single best) or Multi-Krum (the to_keep best) picks."""
    n = dist.shape[0]
    closest = max(1, n - num_malicious - 2)
    scores = [float(np.sum(dist[i, np.argsort(dist[i])[1 : closest + 1]])) for i in range(n)]
    if to_keep > 0:
        return [int(i) for i in np.argsort(scores)[::-1][n - min(to_keep, n) :]]
    return [int(np.argmin(scores))]


def trim_mean(rows: npt.NDArray[Any], beta: float) -> npt.NDArray[Any]:
    """Mean over axis 0 after cutting int(beta*N) values at each end of every column."""
    n = rows.shape[0]
    low = int(beta * n)
    high = n - low
    part = np.partition(rows, (low, high - 1), axis=0)
    return np.asarray(np.mean(part[low:high], axis=0))


class _Robust(Strategy):
    def __init__(
        self, *, spill_dir: Path | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        self.spill_dir = spill_dir
        self.chunk_bytes = chunk_bytes

    def _spill(self) -> dict[str, Any]:
        return {"spill_dir": self.spill_dir, "chunk_bytes": self.chunk_bytes}


class FedMedian(_Robust):
    """Yin et al. 2018: coordinate-wise median of the updates (unweighted)."""

    name = "FedMedian"

    def begin_round(self, global_weights: Weights | None, *, round_number: int) -> RoundAggregator:
        return _MedianAggregator(global_weights, **self._spill())


class FedTrimmedAvg(_Robust):
    """Yin et al. 2018: coordinate-wise mean after trimming a fraction beta at each end."""

    name = "FedTrimmedAvg"

    def __init__(self, *, beta: float = 0.2, **kw: Any) -> None:
        super().__init__(**kw)
        self.beta = beta

    def begin_round(self, global_weights: Weights | None, *, round_number: int) -> RoundAggregator:
        return _TrimmedAggregator(global_weights, beta=self.beta, **self._spill())


class Krum(_Robust):
    """Blanchard et al. 2017: the update closest to its N - f - 2 nearest neighbours."""

    name = "Krum"

    def __init__(self, *, num_malicious: int = 0, num_to_keep: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.num_malicious = num_malicious
        self.num_to_keep = num_to_keep

    def begin_round(self, global_weights: Weights | None, *, round_number: int) -> RoundAggregator:
        return _KrumAggregator(
            global_weights,
            num_malicious=self.num_malicious,
            num_to_keep=self.num_to_keep,
            **self._spill(),
        )


class MultiKrum(Krum):
    """Multi-Krum: the example-weighted mean of the `num_to_keep` best Krum scores
    (default N - f, as in the paper)."""

    name = "MultiKrum"

    def begin_round(self, global_weights: Weights | None, *, round_number: int) -> RoundAggregator:
        return _MultiKrumAggregator(
            global_weights,
            num_malicious=self.num_malicious,
            num_to_keep=self.num_to_keep,
            **self._spill(),
        )


class _MultiKrumAggregator(_KrumAggregator):
    def _compute(self, spec: Spec) -> Weights:
        if self._m <= 0:
            self._m = max(1, len(self._files) - self._f)
        if not self._files:
            raise NothingToAggregate("no update was accepted this round")
        return super()._compute(spec)
