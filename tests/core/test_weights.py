"""The weights file format: safetensors compatible, zero-copy, strict about corruption."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from fl_contract.weights import (
    WeightsFormatError,
    decode_metadata,
    decode_weights,
    encode_weights,
    sha256_hex,
)


def _sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "layer.w": rng.standard_normal((4, 3)).astype(np.float32),
        "layer.b": rng.standard_normal(3),
        "half": rng.standard_normal(5).astype(np.float16),
        "scalar": np.asarray(np.float32(2.5)),
        "empty": np.zeros((0, 7), np.float32),
    }


def test_bytes_match_the_safetensors_library_both_ways() -> None:
    weights = _sample()
    data = encode_weights(weights, metadata={"round": "3"})
    assert data == st_save(weights, metadata={"round": "3"})
    for name, array in st_load(data).items():
        np.testing.assert_array_equal(array, weights[name])
    decoded = decode_weights(st_save(weights))
    assert sorted(decoded) == sorted(weights)
    for name, array in decoded.items():
        assert array.dtype == weights[name].dtype
        np.testing.assert_array_equal(array, weights[name])
    assert decode_metadata(data) == {"round": "3"}
    assert sha256_hex(data) == sha256_hex(
        encode_weights(dict(reversed(weights.items())), metadata={"round": "3"})
    )


def test_decoding_is_zero_copy() -> None:
    buffer = bytearray(encode_weights(_sample()))
    decoded = decode_weights(buffer)
    raw = np.frombuffer(buffer, dtype=np.uint8)
    assert all(np.shares_memory(a, raw) for a in decoded.values() if a.size)
    assert all(a.flags.aligned for a in decoded.values())
    assert not decode_weights(bytes(buffer))["layer.w"].flags.writeable


def test_only_float_tensors_are_written() -> None:
    with pytest.raises(WeightsFormatError, match="dtype int64"):
        encode_weights({"x": np.arange(3)})
    with pytest.raises(WeightsFormatError, match="not allowed"):
        encode_weights({"__metadata__": np.zeros(1)})


def _file(header: object, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"abc", "at least 8"),
        (struct.pack("<Q", 1 << 40), "over"),
        (struct.pack("<Q", 100) + b"{}", "runs past the end"),
        (struct.pack("<Q", 2) + b"[]", "JSON object"),
        (struct.pack("<Q", 3) + b"{x}", "not valid JSON"),
        (
            _file({"a": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, bytes(8)),
            "'I64' is not supported",
        ),
        (
            _file({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, bytes(2)),
            "not supported",
        ),
        (
            _file({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, bytes(4)),
            "expected 8",
        ),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, bytes(4)), "outside"),
        (
            _file({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)),
            "non-negative",
        ),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, bytes(4)), "outside"),
        (
            _file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(8)),
            "trailing",
        ),
        (_file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8)), "gap"),
        (
            _file(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
                },
                bytes(8),
            ),
            "overlaps",
        ),
        (_file({"a": {"dtype": "F32", "shape": [1]}}), "exactly dtype, shape and data_offsets"),
        (_file({"__metadata__": {"a": 1}}), "strings to strings"),
        (struct.pack("<Q", 14) + b'{"a":1, "a":2}', "twice"),
    ],
)
def test_corrupt_files_give_a_clear_error(blob: bytes, message: str) -> None:
    with pytest.raises(WeightsFormatError, match=message):
        decode_weights(blob)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_corruption_never_crashes(data: st.DataObject) -> None:
    blob = bytearray(encode_weights(_sample()))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        decoded = decode_weights(bytes(blob[:cut]))
    except WeightsFormatError:
        return
    assert all(isinstance(a, np.ndarray) for a in decoded.values())
