"""The secure-aggregation objects in the model store, as both sides read and write them.

Byte bundles keyed by cluster (a cluster's encrypted shares by recipient, a recipient's
inbox by sender, a cluster's revealed shares by owner) are small JSON documents; the masked
input is a safetensors file holding the masked vector's bytes and the model's layout (names,
dtypes, shapes: not secret) in its metadata, so the hub can rebuild the model from the sum
even in a round without a global model.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

BUNDLE_VERSION = 1
MASKED_TENSOR = "masked"
LAYOUT_KEY = "layout"
MAX_BUNDLE_ITEMS = 100_000

Layout = dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape), as `describe` gives


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


def encode_masked(masked: bytes, layout: Layout) -> bytes:
    """A masked vector (`fl_core.privacy.secagg.encode_masked` bytes) with the layout of the
    model it masks (`fl_contract.weights.describe`)."""
    metadata = {LAYOUT_KEY: json.dumps({n: [d, list(s)] for n, (d, s) in sorted(layout.items())})}
    array = np.frombuffer(masked, dtype=np.uint8)
    return save({MASKED_TENSOR: array}, metadata=metadata)


def decode_masked(data: bytes | memoryview) -> tuple[bytes, Layout]:
    """The masked vector's bytes and the layout it claims; SecAggFormatError otherwise."""
    try:
        raw = bytes(data)
        tensors = load(raw)
        header_size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + header_size])
        claimed = json.loads((header.get("__metadata__") or {})[LAYOUT_KEY])
        layout: Layout = {
            str(n): (str(d), tuple(int(x) for x in s)) for n, (d, s) in claimed.items()
        }
        vector = tensors[MASKED_TENSOR]
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise SecAggFormatError(f"not a masked input: {exc}") from None
    if vector.ndim != 1 or vector.dtype != np.uint8:
        raise SecAggFormatError("the masked input must be one flat byte tensor")
    return vector.tobytes(), layout
