"""Shamir secret sharing of byte strings over the prime field GF(2**521 - 1).

The secret is cut into 64-byte blocks; each block is the constant term of its own random
polynomial of degree t-1, and a share is the value of every polynomial at the share's x.
Any t shares give the secret back (Lagrange interpolation at 0); t-1 shares are uniformly
distributed whatever the secret, so they tell nothing about it.

A share carries its x, the threshold and the secret's length, so `combine` can say that it
got too few shares, or shares of different secrets, instead of returning wrong bytes.
Extra shares beyond t are checked against the polynomial: a corrupted share is an error.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from fl_core.privacy.secagg.errors import SecAggError

PRIME = 2**521 - 1
"""A Mersenne prime: every 64-byte block is a field element."""
_BLOCK = 64
_ELEMENT = 66  # bytes per field element on the wire
_VERSION = 1
_HEADER = 7  # version (1), x (2), threshold (2), secret length (2)
MAX_SHARES = 0xFFFF
MAX_SECRET = 0xFFFF


class ShamirError(SecAggError):
    """Shares that cannot give a secret back, or a split that cannot be made."""


@dataclass(frozen=True, repr=False)
class Share:
    """One share: the x coordinate and the value of each block's polynomial at x."""

    x: int
    threshold: int
    length: int
    ys: tuple[int, ...]

    def __repr__(self) -> str:  # a share is secret material
        return f"Share(x={self.x}, threshold={self.threshold}, length={self.length})"

    def to_bytes(self) -> bytes:
        head = bytes([_VERSION]) + b"".join(
            v.to_bytes(2, "big") for v in (self.x, self.threshold, self.length)
        )
        return head + b"".join(y.to_bytes(_ELEMENT, "big") for y in self.ys)

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        if len(data) < _HEADER or data[0] != _VERSION:
            raise ShamirError("not a Shamir share (bad length or version)")
        x, threshold, length = (int.from_bytes(data[i : i + 2], "big") for i in (1, 3, 5))
        body = data[_HEADER:]
        blocks = _blocks(length)
        if len(body) != blocks * _ELEMENT:
            raise ShamirError(
                f"share of a {length}-byte secret has {len(body)} value bytes, "
                f"expected {blocks * _ELEMENT}"
            )
        ys = tuple(
            int.from_bytes(body[i * _ELEMENT : (i + 1) * _ELEMENT], "big") for i in range(blocks)
        )
        share = cls(x=x, threshold=threshold, length=length, ys=ys)
        _check_share(share)
        return share


def split(secret: bytes, n: int, t: int, *, seed: bytes | None = None) -> list[Share]:
    """n shares of `secret` at x = 1..n, any t of which give it back.

    The polynomials' random coefficients come from the OS, or, given a secret `seed` (at
    least 32 bytes, unknown to the share holders), from SHAKE256(seed): the same call then
    gives the same shares, which lets a restarted client send again what it sent before."""
    if not 1 <= t <= n <= MAX_SHARES:
        raise ShamirError(f"cannot split into n={n} shares with threshold t={t}: need 1 <= t <= n")
    if len(secret) > MAX_SECRET:
        raise ShamirError(f"secret of {len(secret)} bytes is over {MAX_SECRET}")
    blocks = [
        int.from_bytes(secret[i : i + _BLOCK], "big")
        for i in range(0, _blocks(len(secret)) * _BLOCK, _BLOCK)
    ]
    draw = _coefficients(seed, len(blocks) * (t - 1))
    polys = [[block] + [next(draw) for _ in range(t - 1)] for block in blocks]
    return [
        Share(x=x, threshold=t, length=len(secret), ys=tuple(_evaluate(p, x) for p in polys))
        for x in range(1, n + 1)
    ]


def combine(shares: Sequence[Share]) -> bytes:
    """The secret from at least `threshold` shares of it (extra shares must agree)."""
    if not shares:
        raise ShamirError("no shares to combine")
    first = shares[0]
    for share in shares:
        _check_share(share)
        if (share.threshold, share.length, len(share.ys)) != (
            first.threshold,
            first.length,
            len(first.ys),
        ):
            raise ShamirError("shares of different secrets (threshold or length differ)")
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        dup = sorted({x for x in xs if xs.count(x) > 1})
        raise ShamirError(f"duplicated share x coordinates: {dup}")
    if len(shares) < first.threshold:
        raise ShamirError(f"{len(shares)} shares given, {first.threshold} needed")
    basis, extra = shares[: first.threshold], shares[first.threshold :]
    xs = [s.x for s in basis]
    inverse_denominators = _batch_inverse(
        [_product(xj - xm for m, xm in enumerate(xs) if m != j) for j, xj in enumerate(xs)]
    )
    at_zero = _lagrange_weights(xs, inverse_denominators, 0)
    blocks = [_dot(at_zero, [s.ys[i] for s in basis]) for i in range(len(first.ys))]
    for share in extra:
        weights = _lagrange_weights(xs, inverse_denominators, share.x)
        for i, y in enumerate(share.ys):
            if _dot(weights, [s.ys[i] for s in basis]) != y:
                raise ShamirError(f"share x={share.x} disagrees with the others (corrupted)")
    out = bytearray()
    for i, block in enumerate(blocks):
        size = min(_BLOCK, first.length - i * _BLOCK)
        if block >= 1 << (8 * size):
            raise ShamirError("the shares do not give a secret of the declared length (corrupted)")
        out += block.to_bytes(size, "big")
    return bytes(out)


def _coefficients(seed: bytes | None, count: int) -> Iterator[int]:
    if seed is None:
        return (secrets.randbelow(PRIME) for _ in range(count))
    if len(seed) < 32:
        raise ShamirError(f"a coefficient seed is at least 32 bytes, not {len(seed)}")
    # 82 bytes per coefficient: 656 bits reduced mod a 521-bit prime, bias below 2**-130.
    stream = hashlib.shake_256(b"shamir-coefficients\x00" + seed).digest(82 * count)
    return (int.from_bytes(stream[i * 82 : (i + 1) * 82], "big") % PRIME for i in range(count))


def _blocks(length: int) -> int:
    return -(-length // _BLOCK)


def _check_share(share: Share) -> None:
    if not 1 <= share.x < PRIME or share.x > MAX_SHARES:
        raise ShamirError(f"share x coordinate {share.x} is out of range [1, {MAX_SHARES}]")
    if share.threshold < 1:
        raise ShamirError(f"share threshold {share.threshold} is below 1")
    if any(not 0 <= y < PRIME for y in share.ys) or len(share.ys) != _blocks(share.length):
        raise ShamirError(f"share x={share.x} holds values outside the field")


def _evaluate(poly: list[int], x: int) -> int:
    acc = 0
    for coefficient in reversed(poly):
        acc = (acc * x + coefficient) % PRIME
    return acc


def _product(values: Iterable[int]) -> int:
    acc = 1
    for v in values:
        acc = acc * v % PRIME
    return acc


def _batch_inverse(values: list[int]) -> list[int]:
    """Modular inverses of all `values` with one exponentiation (Montgomery's trick)."""
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % PRIME
        inverse = inverse * values[i] % PRIME
    return out


def _lagrange_weights(xs: list[int], inverse_denominators: list[int], at: int) -> list[int]:
    """w_j with p(at) = sum_j w_j * p(x_j) for any polynomial p of degree < len(xs)."""
    diffs = [(at - x) % PRIME for x in xs]
    prefix, suffix = [1] * (len(xs) + 1), [1] * (len(xs) + 1)
    for i, d in enumerate(diffs):
        prefix[i + 1] = prefix[i] * d % PRIME
    for i in range(len(xs) - 1, -1, -1):
        suffix[i] = suffix[i + 1] * diffs[i] % PRIME
    return [
        prefix[j] * suffix[j + 1] % PRIME * inv % PRIME
        for j, inv in enumerate(inverse_denominators)
    ]


def _dot(weights: list[int], values: list[int]) -> int:
    return sum(w * v for w, v in zip(weights, values, strict=True)) % PRIME
