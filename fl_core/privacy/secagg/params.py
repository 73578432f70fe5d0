"""The parameters of one secure-aggregation round, validated with the field's name."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fl_core.privacy.secagg.errors import SecAggError


@dataclass(frozen=True)
class SecAggParams:
    """What every client and the hub of one round must agree on.

    threshold (t): shares needed to rebuild a client's secret. A client's secrets are cut
        into num_shares + 1 shares (one per neighbour, one kept by the client itself), so
        1 <= t <= num_shares + 1. A majority, t > (num_shares + 1) / 2, is the default
        (`for_participants`): then no two disjoint groups of revealers can each rebuild a
        secret. A client whose neighbourhood (itself included) keeps fewer than t members
        to the unmasking stage cannot be unmasked, and the round fails for everyone
        (`short_of_shares` tells the hub as soon as masking closes). Robustness therefore
        follows k - t: with 20 % of N = 50 clients dropping after key sharing, k = 12,
        t = 7 (the defaults) fail about 2 % of rounds, k = 8, t = 5 about 20 %, and
        t = 4 with k = 8 about 3 % (`python -m benchmarks --section secagg`, column fail).
    num_shares (k): neighbours per client in the SecAgg+ graph (`neighbours`). Masking costs
        a client O(k * P) and unmasking costs the hub O((survivors + dropped * k) * P):
        k = participants - 1 is the original, fully connected SecAgg; SecAgg+ (Bell et al.
        2020) keeps k = O(log N), and `for_participants` takes k = min(N - 1, 2 * ceil(log2 N)).
    clipping_range (c): each update value is clipped to [-c, c] before quantization.
        At least 1, since the weight element r = weight / max_weight in (0, 1] is
        quantized on the same grid.
    quantization_range (Q): grid points per value; precision is 2c / (Q-1) per client.
    modulus: a power of two, 2**k with 8 <= k <= 64; the masked vectors are integers mod it
        (uint32 when modulus <= 2**32, else uint64). Must exceed (Q-1) * survivors.
    max_weight: an upper bound on any client's weight (its example count); the weight enters
        as weight / max_weight (see `quantize`). The hub may take the largest sample count
        the participants publish for the job's dataset.
    """

    threshold: int
    num_shares: int
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    modulus: int = 2**32
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("threshold", "num_shares", "quantization_range", "modulus"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SecAggError(f"{name}: must be an integer, got {value!r}")
        for name in ("clipping_range", "max_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SecAggError(f"{name}: must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise SecAggError(f"{name}: must be finite and positive, got {value!r}")
        if self.num_shares < 1:
            raise SecAggError(f"num_shares: must be at least 1, got {self.num_shares}")
        if not 1 <= self.threshold <= self.num_shares + 1:
            raise SecAggError(
                f"threshold: must be between 1 and num_shares + 1 = {self.num_shares + 1}, "
                f"got {self.threshold}"
            )
        if self.clipping_range < 1:
            raise SecAggError(
                f"clipping_range: must be at least 1 (the weight element lies in (0, 1]), "
                f"got {self.clipping_range}"
            )
        if self.modulus < 2**8 or self.modulus > 2**64 or self.modulus & (self.modulus - 1):
            raise SecAggError(
                f"modulus: must be a power of two between 2**8 and 2**64, got {self.modulus}"
            )
        if not 2 <= self.quantization_range < self.modulus:
            raise SecAggError(
                f"quantization_range: must be between 2 and modulus - 1 = {self.modulus - 1}, "
                f"got {self.quantization_range}"
            )

    @classmethod
    def for_participants(cls, participants: int, **overrides: Any) -> SecAggParams:
        """SecAgg+ defaults for a round of `participants` clients: k = min(N-1, 2*ceil(log2 N))
        neighbours and a majority threshold t = (k+1) // 2 + 1 (capped at k + 1)."""
        if participants < 2:
            raise SecAggError(
                f"participants: secure aggregation needs at least 2, got {participants}"
            )
        k = min(participants - 1, 2 * math.ceil(math.log2(participants)))
        k = int(overrides.pop("num_shares", k))
        t = int(overrides.pop("threshold", min(k + 1, (k + 1) // 2 + 1)))
        return cls(threshold=t, num_shares=k, **overrides)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The unsigned integer type of masked vectors."""
        return np.dtype(np.uint32) if self.modulus <= 2**32 else np.dtype(np.uint64)

    @property
    def max_clients(self) -> int:
        """The most survivors whose quantized sum cannot wrap around the modulus."""
        return (self.modulus - 1) // (self.quantization_range - 1)

    def to_json(self) -> dict[str, Any]:
        """A JSON object (for a round spec); `from_json` validates it back."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SecAggParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise SecAggError(f"unknown secure-aggregation parameters: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise SecAggError(f"secure-aggregation parameters: {exc}") from None
