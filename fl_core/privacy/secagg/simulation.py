"""One secure-aggregation round with every client in this process: for tests and the bench.

The messages go through the same functions and serialized forms as on the wire (public
keys as JSON, bundles and masked vectors as bytes), so the byte counts are those a real
round moves, and each stage is timed per client and at the hub.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_core.privacy.secagg.graph import neighbours as make_graph
from fl_core.privacy.secagg.params import SecAggParams
from fl_core.privacy.secagg.protocol import (
    ClientSecrets,
    PublicKeys,
    mask,
    reveal,
    round_context,
    share_keys,
    unmask,
)
from fl_core.privacy.secagg.vectors import add_masked, decode_masked, encode_masked, new_sum


@dataclass(frozen=True)
class HubInputs:
    """Everything the hub receives in a round, as received: `aggregate` replays the hub's
    side alone (the bench times it apart from the clients)."""

    params: SecAggParams
    masked: dict[str, bytes]
    revealed: dict[str, dict[str, bytes]]
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    public_keys: dict[str, PublicKeys]
    graph: dict[str, tuple[str, ...]]
    context: bytes
    length: int


def aggregate(inputs: HubInputs) -> tuple[npt.NDArray[np.float64], float]:
    """The hub's work: sum the masked vectors as they arrive, then unmask."""
    acc = new_sum(inputs.params, inputs.length)
    for name in inputs.survivors:
        add_masked(acc, decode_masked(inputs.masked[name], inputs.params, inputs.length))
    return unmask(
        inputs.params,
        acc,
        inputs.revealed,
        inputs.survivors,
        inputs.dropped,
        inputs.public_keys,
        inputs.graph,
        inputs.context,
    )


@dataclass
class Simulation:
    """What one simulated round gave and cost."""

    weighted_sum: npt.NDArray[np.float64]
    total_weight: float
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    client_seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    """stage -> client -> seconds (keys, share_keys, mask, reveal)."""
    hub_seconds: dict[str, float] = field(default_factory=dict)
    """stage -> seconds at the hub (sum: adding masked vectors; unmask)."""
    bytes_up: dict[str, int] = field(default_factory=dict)
    """stage -> bytes all clients sent to the hub."""
    bytes_down: dict[str, int] = field(default_factory=dict)
    """stage -> bytes the hub sent to all clients."""
    revealers: tuple[str, ...] = ()
    hub_inputs: HubInputs | None = None
    """What the hub received (with `keep_hub_inputs`: the masked vectors, a model each)."""


def simulate(
    vectors: Mapping[str, npt.NDArray[np.floating[Any]]],
    weights: Mapping[str, float],
    params: SecAggParams,
    *,
    drop_before_mask: Collection[str] = (),
    silent_at_unmask: Collection[str] = (),
    graph_seed: bytes = b"simulation",
    context: bytes | None = None,
    rng: np.random.Generator | None = None,
    keep_hub_inputs: bool = False,
) -> Simulation:
    """Run all four stages for the clients of `vectors`.

    drop_before_mask: clients that share their keys and then vanish (the costly dropout:
    the hub must rebuild their masking keys). silent_at_unmask: clients whose masked vector
    counts but who do not answer the unmasking stage. keep_hub_inputs: return what the hub
    received (`Simulation.hub_inputs`), for `aggregate`."""
    context = context if context is not None else round_context("simulation", 1)
    rng = rng if rng is not None else np.random.default_rng()
    names = sorted(vectors)
    graph = make_graph(names, params.num_shares, graph_seed)
    clock: dict[str, dict[str, float]] = {s: {} for s in ("keys", "share_keys", "mask", "reveal")}
    up: dict[str, int] = {}
    down: dict[str, int] = {}

    # 1. keys
    secrets: dict[str, ClientSecrets] = {}
    public: dict[str, PublicKeys] = {}
    for name in names:
        start = time.perf_counter()
        secrets[name] = ClientSecrets.generate()
        public[name] = PublicKeys.from_json(secrets[name].public_keys().to_json())
        clock["keys"][name] = time.perf_counter() - start
    up["keys"] = sum(len(json.dumps(p.to_json())) for p in public.values())

    # 2. share keys; inbox[j][i] = bundle i -> j
    inbox: dict[str, dict[str, bytes]] = {name: {} for name in names}
    down["share_keys"] = 0
    for name in names:
        keys = {j: public[j] for j in graph[name]}
        down["share_keys"] += sum(len(json.dumps(k.to_json())) for k in keys.values())
        start = time.perf_counter()
        bundles = share_keys(name, secrets[name], params, keys, context)
        clock["share_keys"][name] = time.perf_counter() - start
        for receiver, bundle in bundles.items():
            inbox[receiver][name] = bundle
    up["share_keys"] = sum(len(b) for box in inbox.values() for b in box.values())

    # 3. mask
    gone = set(drop_before_mask)
    alive = [n for n in names if n not in gone]
    length = next(iter(vectors.values())).size + 1
    acc = new_sum(params, length)
    hub_sum = 0.0
    up["mask"] = 0
    uploads: dict[str, bytes] = {}
    down["mask"] = sum(len(b) for n in alive for b in inbox[n].values())
    for name in alive:
        keys = {j: public[j] for j in graph[name]}
        start = time.perf_counter()
        masked = mask(
            name,
            secrets[name],
            params,
            vectors[name],
            weights[name],
            keys,
            graph[name],
            context,
            rng=rng,
        )
        data = encode_masked(masked)
        clock["mask"][name] = time.perf_counter() - start
        up["mask"] += len(data)
        if keep_hub_inputs:
            uploads[name] = data
        start = time.perf_counter()
        add_masked(acc, decode_masked(data, params, length))
        hub_sum += time.perf_counter() - start

    # 4. unmask
    survivors, dropped = tuple(alive), tuple(sorted(gone))
    revealed: dict[str, dict[str, bytes]] = {}
    quiet = set(silent_at_unmask)
    for name in alive:
        if name in quiet:
            continue
        keys = {j: public[j] for j in graph[name]}
        start = time.perf_counter()
        revealed[name] = reveal(name, secrets[name], inbox[name], survivors, dropped, keys, context)
        clock["reveal"][name] = time.perf_counter() - start
    up["reveal"] = sum(len(s) for r in revealed.values() for s in r.values())
    down["reveal"] = len(json.dumps({"survivors": survivors, "dropped": dropped})) * len(revealed)
    inputs = HubInputs(
        params=params,
        masked=uploads,
        revealed=revealed,
        survivors=survivors,
        dropped=dropped,
        public_keys=public,
        graph=graph,
        context=context,
        length=length,
    )
    start = time.perf_counter()
    weighted_sum, total = unmask(params, acc, revealed, survivors, dropped, public, graph, context)
    hub_unmask = time.perf_counter() - start
    return Simulation(
        weighted_sum=weighted_sum,
        total_weight=total,
        survivors=survivors,
        dropped=dropped,
        revealers=tuple(sorted(revealed)),
        client_seconds=clock,
        hub_seconds={"sum": hub_sum, "unmask": hub_unmask},
        bytes_up=up,
        bytes_down=down,
        hub_inputs=inputs if keep_hub_inputs else None,
    )
