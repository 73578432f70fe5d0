"""BLAS kernels for aggregation, pinned to one thread.

axpy and dot are memory-bound: one core saturates memory bandwidth, and a second BLAS
thread buys nothing. Worse, OpenBLAS threads spin-wait for each other, and on a busy
machine (a hub sharing its cores, a CI runner) a 1 ms axpy then takes 100 ms or more.
So aggregation runs BLAS single-threaded (threadpoolctl, a scikit-learn dependency),
only for the duration of each call, leaving other BLAS users of the process alone.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

try:  # SciPy is optional: BLAS axpy when present, chunked numpy otherwise
    from scipy.linalg import blas as _blas  # type: ignore[import-untyped]

    AXPY: dict[np.dtype[Any], Callable[..., Any]] = {
        np.dtype(np.float32): _blas.saxpy,
        np.dtype(np.float64): _blas.daxpy,
    }
except ImportError:  # pragma: no cover - exercised where SciPy is missing
    AXPY = {}


@functools.cache
def _controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with every loaded BLAS limited to one thread (about 10 us)."""
    controller = _controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield
