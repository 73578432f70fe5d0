"""Secure aggregation: Shamir secret sharing of byte strings."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_core.privacy.secagg import SecAggError
from fl_core.privacy.secagg.shamir import PRIME, ShamirError, Share, combine, split
from tests.core.uniformity import byte_uniformity

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    secret=st.binary(min_size=0, max_size=150),
    n_t=st.integers(1, 7).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))),
    data=st.data(),
)
def test_any_t_of_n_shares_give_the_secret_back(
    secret: bytes, n_t: tuple[int, int], data: st.DataObject
) -> None:
    n, t = n_t
    shares = split(secret, n, t)
    assert sorted(s.x for s in shares) == list(range(1, n + 1))
    chosen = data.draw(st.permutations(shares).map(lambda p: p[: data.draw(st.integers(t, n))]))
    # Through the wire form, as the shares travel.
    assert combine([Share.from_bytes(s.to_bytes()) for s in chosen]) == secret


def test_every_subset_of_size_t_works_and_t_minus_1_is_refused() -> None:
    secret = bytes(range(32))
    shares = split(secret, 5, 3)
    for subset in itertools.combinations(shares, 3):
        assert combine(list(subset)) == secret
    for pair in itertools.combinations(shares, 2):
        with pytest.raises(ShamirError, match="2 shares given, 3 needed"):
            combine(list(pair))


def test_fewer_than_t_shares_are_uniform_whatever_the_secret() -> None:
    """t-1 = 2 shares of a fixed secret, drawn many times: each share value's low byte is
    uniform (chi-square over 256 buckets), and the two values are independent (their
    difference is uniform too), as for a secret of all ones."""
    draws = 3000
    for secret in (bytes(32), b"\xff" * 32):
        lows, diffs = [], []
        for _ in range(draws):
            first, second = split(secret, 5, 3)[:2]
            lows.append(first.ys[0] & 0xFF)
            diffs.append(((second.ys[0] - first.ys[0]) % PRIME) & 0xFF)
        for sample in (lows, diffs):
            assert byte_uniformity(np.array(sample, dtype=np.int64)) > 1e-6


def test_duplicated_and_out_of_range_x_are_refused() -> None:
    shares = split(b"secret", 4, 2)
    with pytest.raises(ShamirError, match=r"duplicated share x coordinates: \[1\]"):
        combine([shares[0], shares[0]])
    with pytest.raises(ShamirError, match="x coordinate 0 is out of range"):
        combine([replace(shares[0], x=0), shares[1]])
    with pytest.raises(ShamirError, match="out of range"):
        Share.from_bytes(b"\x01\x00\x00" + shares[0].to_bytes()[3:])


def test_a_corrupted_share_is_an_error_not_a_wrong_secret() -> None:
    shares = split(b"k" * 32, 4, 2)
    bad = replace(shares[3], ys=((shares[3].ys[0] + 1) % PRIME,))
    with pytest.raises(ShamirError, match="x=4 disagrees"):
        combine([shares[0], shares[1], bad])
    other = split(b"x" * 10, 4, 2)
    with pytest.raises(ShamirError, match="different secrets"):
        combine([shares[0], other[1]])
    with pytest.raises(ShamirError, match="value bytes"):
        Share.from_bytes(shares[0].to_bytes()[:-1])
    assert isinstance(ShamirError("x"), SecAggError)


def test_a_seeded_split_is_repeatable_and_still_a_sharing() -> None:
    seed = bytes(range(32))
    first, again = split(b"secret" * 20, 5, 3, seed=seed), split(b"secret" * 20, 5, 3, seed=seed)
    assert first == again
    other = split(b"secret" * 20, 5, 3, seed=b"\x01" * 32)
    assert first[0].ys != other[0].ys
    assert combine([first[0], first[2], first[4]]) == b"secret" * 20
    with pytest.raises(ShamirError, match="at least 32 bytes"):
        split(b"s", 2, 2, seed=b"short")


def test_split_arguments_are_checked() -> None:
    with pytest.raises(ShamirError, match="need 1 <= t <= n"):
        split(b"s", 2, 3)
    with pytest.raises(ShamirError, match="need 1 <= t <= n"):
        split(b"s", 2, 0)


def test_a_share_does_not_print_its_values() -> None:
    share = split(b"top secret", 2, 2)[0]
    assert str(share.ys[0]) not in repr(share)
