"""Secure aggregation: key agreement, share-bundle encryption and the mask generator."""

from __future__ import annotations

import numpy as np
import pytest

from fl_core.privacy.secagg import SecAggError, crypto
from tests.core.uniformity import byte_uniformity


def test_key_agreement_is_symmetric_and_bound_to_purpose_and_context() -> None:
    a, b = crypto.new_private_key(), crypto.new_private_key()
    pa, pb = crypto.public_key_b64(a), crypto.public_key_b64(b)
    assert len(pa) == 44
    key = crypto.agree(a, pb, purpose=b"p", context=b"round 1")
    assert key == crypto.agree(b, pa, purpose=b"p", context=b"round 1")
    assert len(key) == 32
    assert key != crypto.agree(a, pb, purpose=b"q", context=b"round 1")
    assert key != crypto.agree(a, pb, purpose=b"p", context=b"round 2")


def test_encryption_rejects_tampering_and_any_other_binding() -> None:
    key = crypto.agree(
        crypto.new_private_key(),
        crypto.public_key_b64(crypto.new_private_key()),
        purpose=b"p",
        context=b"c",
    )
    aad = crypto.associated_data(b"job=1 round=3", "cluster1", "cluster2")
    sealed = crypto.encrypt(key, b"share bundle", aad)
    assert crypto.decrypt(key, sealed, aad) == b"share bundle"
    for i in (0, crypto.NONCE_BYTES, len(sealed) - 1):  # nonce, ciphertext, tag
        tampered = bytearray(sealed)
        tampered[i] ^= 1
        with pytest.raises(SecAggError, match="failed authentication"):
            crypto.decrypt(key, bytes(tampered), aad)
    for other in (
        crypto.associated_data(b"job=1 round=4", "cluster1", "cluster2"),  # another round
        crypto.associated_data(b"job=1 round=3", "cluster2", "cluster1"),  # reversed
        crypto.associated_data(b"job=1 round=3", "cluster1", "cluster3"),  # another receiver
    ):
        with pytest.raises(SecAggError, match="failed authentication"):
            crypto.decrypt(key, sealed, other)
    with pytest.raises(SecAggError, match="too short"):
        crypto.decrypt(key, sealed[:20], aad)


def test_encryption_is_repeatable_and_nonces_follow_the_message() -> None:
    key = bytes(range(32))
    aad = crypto.associated_data(b"c", "a", "b")
    sealed = crypto.encrypt(key, b"bundle", aad)
    assert crypto.encrypt(key, b"bundle", aad) == sealed
    nonce = sealed[: crypto.NONCE_BYTES]
    assert crypto.encrypt(key, b"bundlf", aad)[: crypto.NONCE_BYTES] != nonce
    other_aad = crypto.associated_data(b"c", "a", "c")
    assert crypto.encrypt(key, b"bundle", other_aad)[: crypto.NONCE_BYTES] != nonce


def test_associated_data_is_unambiguous() -> None:
    assert crypto.associated_data(b"c", "ab", "c") != crypto.associated_data(b"c", "a", "bc")


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_mask_stream_is_deterministic_uniform_and_cancels(dtype: type) -> None:
    seed = bytes(range(32))
    count = 300_001  # not a multiple of the chunk
    stream = crypto.mask_stream(seed, count, np.dtype(dtype))
    assert np.array_equal(stream, crypto.mask_stream(seed, count, np.dtype(dtype)))
    assert not np.array_equal(stream, crypto.mask_stream(b"\x01" * 32, count, np.dtype(dtype)))
    bits = 8 * np.dtype(dtype).itemsize
    for shift in (0, bits - 8):  # low and high byte of each element
        assert byte_uniformity(stream, shift) > 1e-6
    acc: np.ndarray = np.arange(count, dtype=dtype)
    crypto.accumulate_masks(acc, add=[seed, b"\x02" * 32], subtract=[b"\x02" * 32, seed])
    assert np.array_equal(acc, np.arange(count, dtype=dtype))
    crypto.accumulate_masks(acc, add=[seed], subtract=[])
    assert np.array_equal(acc, np.arange(count, dtype=dtype) + stream)


def test_mask_inputs_are_checked() -> None:
    with pytest.raises(SecAggError, match="32 bytes, not 16"):
        crypto.mask_stream(bytes(16), 10, np.dtype(np.uint32))
    with pytest.raises(SecAggError, match="flat uint32/uint64"):
        crypto.accumulate_masks(np.zeros(4, np.float32), add=[bytes(32)], subtract=[])
    with pytest.raises(SecAggError, match="not valid base64"):
        crypto.agree(crypto.new_private_key(), "!!", purpose=b"p", context=b"c")
    zero = "A" * 43 + "="  # 32 zero bytes: a low-order point
    with pytest.raises(SecAggError, match="low order"):
        crypto.agree(crypto.new_private_key(), zero, purpose=b"p", context=b"c")
