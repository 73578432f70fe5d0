"""The secure-aggregation objects in the model store, as both sides read and write them.

Byte bundles keyed by cluster (a cluster's encrypted shares by recipient, a recipient's
inbox by sender, a cluster's revealed shares by owner) are small JSON documents; the masked
input is a safetensors file with one flat integer tensor and the model's layout (names,
dtypes, shapes: not secret) in its metadata, so the hub can rebuild the model from the sum
even in a round without a global model.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorsError
from safetensors.numpy import load, save

from fl_contract.weights import Weights

BUNDLE_VERSION = 1
MASKED_TENSOR = "masked"
LAYOUT_KEY = "layout"
MAX_BUNDLE_ITEMS = 100_000

Layout = list[tuple[str, str, tuple[int, ...]]]  # (name, dtype, shape), in name order


class SecAggFormatError(ValueError):
    """A bundle or masked input that is not what the protocol writes."""


def encode_bundle(items: Mapping[str, bytes]) -> bytes:
    """Deterministic JSON: the same items give the same bytes (and sha256)."""
    body = {
        "version": BUNDLE_VERSION,
        "items": {k: base64.b64encode(v).decode() for k, v in sorted(items.items())},
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode_bundle(data: bytes | memoryview) -> dict[str, bytes]:
    try:
        body = json.loads(bytes(data))
        items = body["items"]
        if body.get("version") != BUNDLE_VERSION or not isinstance(items, dict):
            raise SecAggFormatError("not a version 1 bundle")
        if len(items) > MAX_BUNDLE_ITEMS:
            raise SecAggFormatError(f"more than {MAX_BUNDLE_ITEMS} items")
        return {str(k): base64.b64decode(str(v), validate=True) for k, v in items.items()}
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SecAggFormatError(f"not a secure-aggregation bundle: {exc}") from None


def layout_of(weights: Weights) -> Layout:
    return [(name, str(weights[name].dtype), tuple(weights[name].shape)) for name in sorted(weights)]


def encode_masked(vector: npt.NDArray[Any], layout: Layout) -> bytes:
    metadata = {LAYOUT_KEY: json.dumps([[n, d, list(s)] for n, d, s in layout])}
    return save({MASKED_TENSOR: np.ascontiguousarray(vector)}, metadata=metadata)


def decode_masked(data: bytes | memoryview) -> tuple[npt.NDArray[Any], Layout]:
    """The masked vector and the layout it claims; SecAggFormatError otherwise."""
    try:
        raw = bytes(data)
        tensors = load(raw)
        header_size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_size])
        layout_text = (header.get("__metadata__") or {}).get(LAYOUT_KEY)
        layout: Layout = [(str(n), str(d), tuple(int(x) for x in s)) for n, d, s in json.loads(layout_text)]
        vector = tensors[MASKED_TENSOR]
    except (SafetensorsError, ValueError, KeyError, TypeError) as exc:
        raise SecAggFormatError(f"not a masked input: {exc}") from None
    if vector.ndim != 1 or vector.dtype.kind not in "ui":
        raise SecAggFormatError("the masked input must be one flat integer tensor")
    if sum(int(np.prod(s, dtype=np.int64)) for _, _, s in layout) != vector.size:
        raise SecAggFormatError("the layout does not match the masked vector's length")
    return vector, layout


def flatten(weights: Weights) -> npt.NDArray[np.float64]:
    """The weights as one float64 vector, in the layout's order (names sorted)."""
    parts = [np.asarray(weights[name], dtype=np.float64).ravel() for name in sorted(weights)]
    return np.concatenate(parts) if parts else np.zeros(0)


def unflatten(vector: npt.NDArray[Any], layout: Layout) -> Weights:
    out: dict[str, npt.NDArray[Any]] = {}
    offset = 0
    for name, dtype, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        out[name] = vector[offset : offset + size].reshape(shape).astype(np.dtype(dtype))
        offset += size
    return out
