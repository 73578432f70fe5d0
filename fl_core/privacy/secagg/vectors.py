"""Flat vectors: named tensors to one float32 vector and back, and masked vectors as bytes.

Secure aggregation works on one flat vector per client. `flatten` lays the tensors of a
weights file end to end in name order (the order `fl_contract.weights.decode_weights`
returns); `unflatten` cuts the aggregate back with the layout of the global model
(`fl_contract.weights.describe`). A masked vector travels as its raw little-endian
integers (`encode_masked`), 4 or 8 bytes per element; the hub sums them in place
(`add_masked`): memory is one vector, however many clients report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_contract.weights import Weights
from fl_core.privacy.secagg.errors import SecAggError
from fl_core.privacy.secagg.params import SecAggParams

Layout = Mapping[str, tuple[str, tuple[int, ...]]]
"""name -> (dtype, shape), as `fl_contract.weights.describe` gives it."""


def flatten(weights: Mapping[str, npt.ArrayLike]) -> npt.NDArray[np.float32]:
    """The tensors' values end to end in name order, as one float32 vector (a copy)."""
    arrays = [np.asarray(weights[name]).reshape(-1) for name in sorted(weights)]
    if not arrays:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(arrays, dtype=np.float32)


def unflatten(vector: npt.NDArray[Any], layout: Layout) -> Weights:
    """Named tensors cut from `vector` by `layout` (name order), each cast to its dtype."""
    sizes = {name: math.prod(shape) for name, (_, shape) in layout.items()}
    if sum(sizes.values()) != vector.size:
        raise SecAggError(
            f"a vector of {vector.size} values does not fit a model of {sum(sizes.values())}"
        )
    out: Weights = {}
    offset = 0
    for name in sorted(layout):
        dtype, shape = layout[name]
        out[name] = vector[offset : offset + sizes[name]].astype(dtype).reshape(shape)
        offset += sizes[name]
    return out


def vector_length(layout: Layout) -> int:
    """Elements of a masked vector for this model: its parameters plus the weight element."""
    return sum(math.prod(shape) for _, shape in layout.values()) + 1


def new_sum(params: SecAggParams, length: int) -> npt.NDArray[Any]:
    """A zero accumulator for `add_masked` (`length` includes the weight element)."""
    return np.zeros(length, dtype=params.dtype)


def add_masked(acc: npt.NDArray[Any], masked: npt.NDArray[Any]) -> None:
    """acc += masked, in place, wrapping mod 2**32 or 2**64 (so mod any power-of-two
    modulus: `unmask` reduces the result)."""
    if masked.dtype != acc.dtype or masked.shape != acc.shape:
        raise SecAggError(
            f"masked vector of {masked.size} {masked.dtype} does not match the sum's "
            f"{acc.size} {acc.dtype}"
        )
    np.add(acc, masked, out=acc)


def encode_masked(masked: npt.NDArray[Any]) -> bytes:
    """A masked vector's bytes: little-endian unsigned integers, nothing else."""
    return masked.astype(masked.dtype.newbyteorder("<"), copy=False).tobytes()


def decode_masked(
    data: bytes | bytearray | memoryview, params: SecAggParams, length: int
) -> npt.NDArray[Any]:
    """A read-only view of `encode_masked` bytes, checked against the expected length.

    Values are not range-checked: any integer is a valid element mod 2**32/2**64, and
    `unmask` reduces the sum mod the modulus."""
    dtype = params.dtype.newbyteorder("<")
    expected = length * dtype.itemsize
    nbytes = memoryview(data).nbytes
    if nbytes != expected:
        raise SecAggError(
            f"masked vector is {nbytes} bytes, expected {expected} ({length} x {dtype.itemsize})"
        )
    return np.frombuffer(data, dtype=dtype, count=length)
