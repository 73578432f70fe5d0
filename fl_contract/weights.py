"""The weights file format: safetensors holding named float tensors; no pickle anywhere.

A model travels as the bytes of one safetensors file and is identified by the sha256 of
those bytes. The encoder writes the layout the `safetensors` library writes (8-byte
little-endian header length, a JSON header padded with spaces to 8 bytes, then the tensor
data, sorted by name); the decoder parses the header itself and returns numpy views on the
caller's buffer (`np.frombuffer`), so decoding a 40 MB update costs microseconds and no
copy. A file with a header that points outside the data, overlaps, leaves gaps, names an
unsupported dtype or disagrees with its shapes raises `WeightsFormatError` naming what is
wrong, never a crash or a silent misread.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Weights = dict[str, npt.NDArray[Any]]
"""Named tensors. Decoded tensors are read-only views when the input buffer is immutable."""

WeightsBuffer = bytes | bytearray | memoryview

# Float dtypes only: a model's parameters. bfloat16 has no numpy dtype and is refused.
_DTYPES: dict[str, np.dtype[Any]] = {
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
}
_CODES = {dt.str: code for code, dt in _DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
METADATA_KEY = "__metadata__"


class WeightsFormatError(ValueError):
    """The bytes are not a valid weights file (or the tensors cannot be written as one)."""


def sha256_hex(data: WeightsBuffer) -> str:
    """The identity of a weights file: sha256 of its bytes, lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def encode_weights(
    weights: Mapping[str, npt.ArrayLike], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialise named float tensors as one safetensors file (one copy of the data).

    Tensors keep their dtype (float16/32/64), are written little-endian and C-contiguous,
    in a canonical order, so equal weights always give equal bytes (and equal sha256).
    """
    header: dict[str, Any] = {}
    if metadata:
        for key, item in metadata.items():
            if not isinstance(key, str) or not isinstance(item, str):
                raise WeightsFormatError("metadata keys and values must be strings")
        header[METADATA_KEY] = dict(sorted(metadata.items()))
    arrays: list[tuple[str, npt.NDArray[Any]]] = []
    for name, value in weights.items():
        if not isinstance(name, str) or not name or name == METADATA_KEY:
            raise WeightsFormatError(f"tensor name {name!r} is not allowed")
        array = np.asarray(value)
        if array.dtype.kind != "f" or array.dtype.itemsize not in (2, 4, 8):
            raise WeightsFormatError(
                f"tensor {name!r} has dtype {array.dtype}; only float16/32/64 are supported"
            )
        arrays.append((name, array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)))
    # Widest dtype first, then by name (as the safetensors library does): every tensor
    # starts at a multiple of its item size, so decoded views are aligned.
    arrays.sort(key=lambda item: (-item[1].dtype.itemsize, item[0]))
    parts: list[memoryview] = []
    offset = 0
    for name, array in arrays:
        code = _CODES[array.dtype.str]
        size = array.nbytes
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
        if size:
            parts.append(array.data.cast("B"))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % 8)
    return b"".join([len(text).to_bytes(8, "little"), text, *parts])


def decode_weights(data: WeightsBuffer) -> Weights:
    """Parse a safetensors file and return numpy views on `data` (no copy).

    Views stay valid as long as `data` is alive (numpy keeps a reference to it). Views on
    `bytes` are read-only; views on a `bytearray` are writable and alias it.
    """
    tensors, _ = _parse(data)
    return tensors


def decode_metadata(data: WeightsBuffer) -> dict[str, str]:
    """The `__metadata__` string map of a weights file (empty when absent)."""
    _, metadata = _parse(data)
    return metadata


def describe(weights: Mapping[str, npt.NDArray[Any]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape): what two models must share to be combined."""
    return {name: (str(a.dtype), tuple(a.shape)) for name, a in weights.items()}


def _parse(data: WeightsBuffer) -> tuple[Weights, dict[str, str]]:
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    total = view.nbytes
    if total < 8:
        raise WeightsFormatError(
            f"weights file is {total} bytes; a safetensors file has at least 8"
        )
    header_len = int.from_bytes(view[:8], "little")
    if header_len > MAX_HEADER_BYTES:
        raise WeightsFormatError(f"header length {header_len} is over {MAX_HEADER_BYTES} bytes")
    if 8 + header_len > total:
        raise WeightsFormatError(
            f"header length {header_len} runs past the end of the {total}-byte file (truncated?)"
        )
    try:
        header = json.loads(bytes(view[8 : 8 + header_len]), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFormatError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WeightsFormatError("header must be a JSON object")
    metadata = _metadata(header.pop(METADATA_KEY, None))
    start = 8 + header_len
    data_len = total - start
    entries: list[tuple[int, int, str, np.dtype[Any], tuple[int, ...]]] = []
    for name, entry in header.items():
        dtype, shape, begin, end = _entry(name, entry)
        if not 0 <= begin <= end <= data_len:
            raise WeightsFormatError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] outside the {data_len}-byte data"
            )
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            raise WeightsFormatError(
                f"tensor {name!r}: {end - begin} bytes for shape {list(shape)} of {dtype}, "
                f"expected {expected}"
            )
        entries.append((begin, end, name, dtype, shape))
    entries.sort()
    cursor = 0
    for begin, end, name, _, _ in entries:
        if begin != cursor:
            what = "overlaps the previous tensor" if begin < cursor else "leaves a gap before it"
            raise WeightsFormatError(f"tensor {name!r} at byte {begin} {what}")
        cursor = end
    if cursor != data_len:
        raise WeightsFormatError(f"{data_len - cursor} trailing bytes after the last tensor")
    tensors: Weights = {}
    for begin, _, name, dtype, shape in entries:
        count = math.prod(shape)
        array = np.frombuffer(view, dtype=dtype, count=count, offset=start + begin)
        tensors[name] = array.reshape(shape)
    return dict(sorted(tensors.items())), metadata


def _entry(name: str, entry: object) -> tuple[np.dtype[Any], tuple[int, ...], int, int]:
    if not name:
        raise WeightsFormatError("a tensor has an empty name")
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise WeightsFormatError(
            f"tensor {name!r}: header entry must hold exactly dtype, shape and data_offsets"
        )
    code = entry["dtype"]
    if not isinstance(code, str) or code not in _DTYPES:
        raise WeightsFormatError(
            f"tensor {name!r}: dtype {code!r} is not supported (use one of {', '.join(_DTYPES)})"
        )
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise WeightsFormatError(f"tensor {name!r}: shape must be a list of non-negative integers")
    offsets = entry["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise WeightsFormatError(f"tensor {name!r}: data_offsets must be two non-negative integers")
    return _DTYPES[code], tuple(shape), offsets[0], offsets[1]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _metadata(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise WeightsFormatError("__metadata__ must map strings to strings")
    return dict(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise WeightsFormatError(f"header names {key!r} twice")
        result[key] = value
    return result
