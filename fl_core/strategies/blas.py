"""BLAS axpy for the FedAvg fold, used only when it can run single-threaded.

axpy is memory-bound: one core saturates memory bandwidth and a second thread buys
nothing. Worse, OpenBLAS threads spin-wait for each other, and on a busy machine (a hub
sharing its cores, a CI runner) a 2 ms axpy then takes 100 ms and more. So BLAS is used
only when SciPy ships its own OpenBLAS (the `scipy.libs` copy in SciPy's wheels, distinct
from numpy's) and that copy can be pinned to one thread through threadpoolctl (a
scikit-learn dependency); numpy's BLAS, which user code and evaluation use, is left
alone. Otherwise callers fall back to numpy ufuncs, about 1.5x slower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Axpy = Callable[..., Any]


@functools.cache
def axpy_kernels() -> dict[np.dtype[Any], Axpy]:
    """{float32: saxpy, float64: daxpy} when usable single-threaded, else {}."""
    try:
        from scipy.linalg import blas  # type: ignore[import-untyped]
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
    except ImportError:
        return {}
    try:
        pinned = False
        for lib in ThreadpoolController().lib_controllers:
            if lib.user_api == "blas" and Path(lib.filepath or "").parent.name == "scipy.libs":
                lib.set_num_threads(1)
                pinned = True
    except Exception:  # threadpoolctl could not inspect this platform's libraries
        return {}
    if not pinned:
        return {}
    return {np.dtype(np.float32): blas.saxpy, np.dtype(np.float64): blas.daxpy}
