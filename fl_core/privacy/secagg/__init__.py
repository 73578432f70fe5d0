"""Secure aggregation (SecAgg+, Bell et al. 2020): the hub learns the weighted sum of the
updates of the clients that completed masking, and the sum of their weights, never one
update in clear.

Changes from the first proposal of this API:
- `SecAggParams` has `max_weight` (default 1.0): the largest weight (example count) a client
  may have; the weight enters as weight / max_weight (see `quantize`). The hub can take the
  largest dataset sample count its participants publish.
- Each client keeps one share of its own secrets: `share_keys` returns a bundle for `me` too
  (forward it like the others), so shares = num_shares + 1 and 1 <= threshold <=
  num_shares + 1; with num_shares = N - 1, up to N - threshold clients may drop.
- `mask` takes a keyword `rng` (stochastic quantization); by default the rounding is drawn
  from the client's secrets, so masking the same update again gives the same bytes.
- `shared` (for `mask`) is the set of *my neighbours* that completed key sharing.
- `share_keys`, `mask` and `reveal` are deterministic given the same secrets and inputs: a
  restarted agent that kept its `ClientSecrets` may redo a stage and send the same bytes.
  `reveal` must still be asked only one (survivors, dropped) split per round: an agent
  should keep the first split it answered and refuse another (the function cannot know).
- `unmask` reduces and unmasks `masked_sum` in place (no second model-sized buffer).
- New: `short_of_shares(params, graph, survivors, dropped, revealers)`: who cannot be
  unmasked; with revealers = survivors, right after masking, it tells whether the round can
  still complete.

Client (agent), per round, with `ctx = round_context(job_uid, round)`:

    secrets = ClientSecrets.generate()                    # keep secrets.to_bytes() in a Secret
    report(secrets.public_keys().to_json())
    bundles = share_keys(me, secrets, params, neighbour_keys, ctx)   # receiver -> bytes
    masked = mask(me, secrets, params, flatten(update), num_examples, neighbour_keys, shared, ctx)
    upload(encode_masked(masked))
    shares = reveal(me, secrets, received_bundles, survivors, dropped, neighbour_keys, ctx)

Hub:

    graph = neighbours(participants, params.num_shares, seed)          # seed drawn per round
    acc = new_sum(params, vector_length(describe(global_model)))
    for each masked upload: add_masked(acc, decode_masked(data, params, len(acc)))
    weighted_sum, total = unmask(params, acc, revealed, survivors, dropped, keys, graph, ctx)
    new_model = unflatten(weighted_sum / total, describe(global_model))

`simulate` runs a whole round in process, `aggregate` replays its hub side (tests, bench).
"""

from __future__ import annotations

from fl_core.privacy.secagg.errors import SecAggError
from fl_core.privacy.secagg.graph import neighbours
from fl_core.privacy.secagg.params import SecAggParams
from fl_core.privacy.secagg.protocol import (
    ClientSecrets,
    PublicKeys,
    mask,
    reveal,
    round_context,
    share_keys,
    short_of_shares,
    unmask,
)
from fl_core.privacy.secagg.simulation import HubInputs, Simulation, aggregate, simulate
from fl_core.privacy.secagg.vectors import (
    Layout,
    add_masked,
    decode_masked,
    encode_masked,
    flatten,
    new_sum,
    unflatten,
    vector_length,
)

__all__ = [
    "ClientSecrets",
    "HubInputs",
    "Layout",
    "PublicKeys",
    "SecAggError",
    "SecAggParams",
    "Simulation",
    "add_masked",
    "aggregate",
    "decode_masked",
    "encode_masked",
    "flatten",
    "mask",
    "neighbours",
    "new_sum",
    "reveal",
    "round_context",
    "share_keys",
    "short_of_shares",
    "simulate",
    "unflatten",
    "unmask",
    "vector_length",
]
