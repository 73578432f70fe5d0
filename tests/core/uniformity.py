"""A chi-square test of uniformity, for the tests that check that masks and shares look random."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import chisquare  # type: ignore[import-untyped]


def byte_uniformity(values: npt.NDArray[Any], shift: int = 0) -> float:
    """The p-value of "byte `shift // 8` of `values` is uniform over 0..255" (256 buckets).

    Tests pass above 1e-6: a uniform source fails once in a million runs."""
    data = np.asarray(values)
    picked = (data >> data.dtype.type(shift)) & data.dtype.type(0xFF)
    counts = np.bincount(picked.astype(np.int64), minlength=256)
    return float(chisquare(counts).pvalue)
