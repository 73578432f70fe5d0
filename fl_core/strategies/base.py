"""The strategy interface, shared update validation, and the errors a round can raise.

A `Strategy` lives as long as the job (it may hold server optimiser state); each round it
hands out a `RoundAggregator` that takes the clusters' updates one at a time as they
arrive and produces the next global model. Validation happens before anything is
touched, so a rejected update leaves the aggregator exactly as it was.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_contract.weights import Weights

ClientConfig = dict[str, float | int | str | bool]
Spec = dict[str, tuple[np.dtype[Any], tuple[int, ...]]]


class Rejected(Exception):
    """An update the aggregator refused. `reason` is CamelCase, usable as a Kubernetes
    condition reason: NamesMismatch, DtypeMismatch, ShapeMismatch, NonFinite, NoExamples,
    DuplicateClient, RoundClosed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class NothingToAggregate(RuntimeError):
    """`result()` asked of a round that accepted no update (or too few for the strategy)."""


class RoundAggregator(ABC):
    """Folds one round's updates in. `add` may raise Rejected; `result` is the new model."""

    def __init__(self, global_weights: Weights | None) -> None:
        self._spec: Spec | None = spec_of(global_weights) if global_weights is not None else None
        self._clients: set[str] = set()
        self._closed = False
        self._result: Weights | None = None
        # add() and result() may be called from worker threads (asyncio.to_thread); one at
        # a time, since folding is in place.
        self._lock = threading.RLock()

    @property
    def accepted(self) -> int:
        return len(self._clients)

    @property
    def clients(self) -> frozenset[str]:
        return frozenset(self._clients)

    def add(
        self,
        update: Mapping[str, npt.NDArray[Any]],
        *,
        num_examples: int,
        client: str,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """Validate `update` then fold it in; raises Rejected (and changes nothing) if invalid.

        `before_commit` runs after the update is validated and staged but before it counts;
        if it raises, the update is discarded and the aggregator is unchanged. The ingest
        path uses it to wait for the sha256 still being computed on another thread, so that
        hashing and folding overlap (see `fl_core.ingest`)."""
        with self._lock:
            spec = self.check(update, num_examples=num_examples, client=client)
            staged = self._stage(
                update,
                num_examples=num_examples,
                client=client,
                spec=spec,
                deferred=before_commit is not None,
            )
            if before_commit is not None:
                try:
                    before_commit()
                except BaseException:
                    staged.discard()
                    raise
            staged.commit()
            self._spec = spec
            self._clients.add(client)

    def check(
        self, update: Mapping[str, npt.NDArray[Any]], *, num_examples: int, client: str
    ) -> Spec:
        """Raise Rejected if `add` would refuse `update` now; changes nothing. Lets a caller
        verify an update as it arrives and fold it later, in an order of its choosing."""
        with self._lock:
            if self._closed:
                raise Rejected("RoundClosed", "the round's result was already computed")
            if client in self._clients:
                raise Rejected("DuplicateClient", f"an update from {client!r} was already counted")
            if (
                isinstance(num_examples, bool)
                or not isinstance(num_examples, int)
                or num_examples < 1
            ):
                raise Rejected(
                    "NoExamples", f"num_examples must be a positive integer, got {num_examples!r}"
                )
            return validate(update, self._spec)

    def result(self) -> Weights:
        """The next global model, in the model's dtypes. Computed once: later calls return
        the same arrays, and `add` is refused from then on."""
        with self._lock:
            if self._result is None:
                if not self._clients or self._spec is None:
                    raise NothingToAggregate("no update was accepted this round")
                self._result = self._compute(self._spec)
                self._closed = True
            return self._result

    @abstractmethod
    def _stage(
        self,
        update: Mapping[str, npt.NDArray[Any]],
        *,
        num_examples: int,
        client: str,
        spec: Spec,
        deferred: bool,
    ) -> Staged:
        """Do the work of taking a validated update, visibly only on `commit()`. With
        `deferred` False nothing can stop the commit, so the work may go in place."""

    @abstractmethod
    def _compute(self, spec: Spec) -> Weights: ...


class Staged:
    """A staged update: `commit()` makes it count (cheap, cannot fail); `discard()` drops it."""

    def __init__(
        self, commit: Callable[[], None], discard: Callable[[], None] | None = None
    ) -> None:
        self._commit = commit
        self._discard = discard

    def commit(self) -> None:
        self._commit()

    def discard(self) -> None:
        if self._discard is not None:
            self._discard()


class Strategy(ABC):
    """An aggregation strategy, Flower-like: configures clients, aggregates each round, and
    keeps whatever server-side state it needs between rounds (saveable as weights)."""

    name: str = ""

    def client_config(self, round_number: int) -> ClientConfig:
        """Settings the clients need this round. The key `proximal_mu` goes to
        `RoundSpec.proximal_mu`; any other key to `RoundSpec.training_config`."""
        return {}

    @abstractmethod
    def begin_round(self, global_weights: Weights | None, *, round_number: int) -> RoundAggregator:
        """A fresh aggregator for round `round_number` starting from `global_weights`."""

    def server_state(self) -> Weights:
        """Server-side state to persist after a round (empty for stateless strategies)."""
        return {}

    def load_server_state(self, state: Weights) -> None:
        """Restore what `server_state` returned, e.g. after a hub restart."""
        if state:
            raise ValueError(f"strategy {self.name} keeps no server state, got {sorted(state)[:5]}")


def spec_of(weights: Mapping[str, npt.NDArray[Any]]) -> Spec:
    return {name: (np.asarray(a).dtype, tuple(np.shape(a))) for name, a in sorted(weights.items())}


def validate(update: Mapping[str, npt.NDArray[Any]], expected: Spec | None) -> Spec:
    """Check an update against the expected names, dtypes and shapes and for finiteness.
    Returns the update's spec (the reference when `expected` is None)."""
    if not update:
        raise Rejected("EmptyUpdate", "the update holds no tensors")
    for name, array in update.items():
        if not isinstance(array, np.ndarray):
            raise Rejected(
                "DtypeMismatch", f"tensor {name!r} is a {type(array).__name__}, not an array"
            )
        if array.dtype.kind != "f":
            raise Rejected(
                "DtypeMismatch", f"tensor {name!r} has dtype {array.dtype}, expected a float dtype"
            )
    spec = spec_of(update)
    if expected is not None:
        missing = sorted(set(expected) - set(spec))
        extra = sorted(set(spec) - set(expected))
        if missing or extra:
            raise Rejected(
                "NamesMismatch",
                f"tensor names differ from the global model: missing {_few(missing)}, "
                f"unexpected {_few(extra)}",
            )
        for name, (dtype, shape) in expected.items():
            got_dtype, got_shape = spec[name]
            if got_dtype != dtype:
                raise Rejected(
                    "DtypeMismatch", f"tensor {name!r} has dtype {got_dtype}, expected {dtype}"
                )
            if got_shape != shape:
                raise Rejected(
                    "ShapeMismatch",
                    f"tensor {name!r} has shape {list(got_shape)}, expected {list(shape)}",
                )
    for name, array in update.items():
        if not all_finite(array):
            raise Rejected("NonFinite", f"tensor {name!r} holds NaN or infinite values")
    return expected if expected is not None else spec


def all_finite(array: npt.NDArray[Any]) -> bool:
    """True when no element is NaN or infinite.

    Fast path: the sum of the array is finite only if every element is (NaN and inf
    propagate; inf - inf is NaN); numpy's pairwise sum reads the array once at memory speed
    without allocating a mask. Large finite values may overflow the sum, so a non-finite
    sum falls back to the exact element-wise check.
    """
    if array.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(array, dtype=array.dtype if array.itemsize >= 4 else np.float32)):
            return True
    return bool(np.isfinite(array).all())


def _few(names: list[str]) -> str:
    if not names:
        return "none"
    shown = ", ".join(repr(n) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")
