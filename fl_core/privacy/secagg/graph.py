"""The SecAgg+ communication graph: who masks with whom and who holds whose shares.

A circulant graph over the participants in a seeded random order: position i is joined
to i +- 1, ..., i +- floor(k/2), and, for odd k, to the opposite position when N is even
(exactly k-regular) or to i +- (floor(k/2) + 1) when N is odd (degree k + 1: an odd k
cannot be regular on an odd number of nodes). k >= N - 1 gives the complete graph. The
graph is symmetric, and every client and the hub compute it alike from the seed; the
seed should be unpredictable to clients before they commit to their keys (the hub draws
it per round), as SecAgg+ assumes a random graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from fl_core.privacy.secagg.errors import SecAggError


def neighbours(
    participants: Sequence[str], num_shares: int, seed: bytes
) -> dict[str, tuple[str, ...]]:
    """name -> its neighbours (sorted), for each participant; symmetric, without self-loops."""
    names = sorted(set(participants))
    if len(names) != len(participants):
        raise SecAggError("participants: names must be unique")
    if num_shares < 1:
        raise SecAggError(f"num_shares: must be at least 1, got {num_shares}")
    n = len(names)
    # A seeded shuffle: sort by a keyed hash of the name.
    order = sorted(names, key=lambda name: hashlib.sha256(seed + b"\x00" + name.encode()).digest())
    links: dict[str, set[str]] = {name: set() for name in names}
    if num_shares >= n - 1:
        return {name: tuple(sorted(set(names) - {name})) for name in names}
    offsets = list(range(1, num_shares // 2 + 1))
    if num_shares % 2:
        if n % 2 == 0:
            offsets.append(n // 2)
        else:
            offsets.append(num_shares // 2 + 1)
    for i, name in enumerate(order):
        for d in offsets:
            for j in ((i + d) % n, (i - d) % n):
                if order[j] != name:
                    links[name].add(order[j])
                    links[order[j]].add(name)
    return {name: tuple(sorted(links[name])) for name in names}
