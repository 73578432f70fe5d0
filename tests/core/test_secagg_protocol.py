"""Secure aggregation: the SecAgg+ stages end to end, in process."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fl_contract.weights import describe
from fl_core.privacy.secagg import (
    ClientSecrets,
    PublicKeys,
    SecAggError,
    SecAggParams,
    add_masked,
    aggregate,
    decode_masked,
    encode_masked,
    flatten,
    mask,
    neighbours,
    new_sum,
    reveal,
    round_context,
    share_keys,
    short_of_shares,
    simulate,
    unflatten,
    unmask,
    vector_length,
)
from fl_core.privacy.secagg.crypto import mask_stream
from fl_core.privacy.secagg.quantize import dequantize_sum, quantize, step
from fl_core.privacy.secagg.shamir import split
from fl_core.strategies import make_strategy
from tests.core.uniformity import byte_uniformity

CTX = round_context("job-uid", 3)
P = 1000


def _updates(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    rng = np.random.default_rng(seed)
    vectors = {f"cluster{i:02d}": rng.standard_normal(P).astype(np.float32) for i in range(n)}
    weights = {name: float(rng.integers(1, 100)) for name in vectors}
    return vectors, weights


def _quantized(vector: np.ndarray, weight: float, params: SecAggParams, seed: int) -> np.ndarray:
    """What `mask` quantizes, with the same generator: the reference for exact sums."""
    ratio = weight / params.max_weight
    scaled = np.append(
        np.clip(vector.astype(np.float64), -params.clipping_range, params.clipping_range) * ratio,
        ratio,
    )
    return quantize(
        scaled,
        clipping_range=params.clipping_range,
        quantization_range=params.quantization_range,
        rng=np.random.default_rng(seed),
    )


def _mod(values: Any, modulus: int) -> np.ndarray:
    return np.asarray(values).astype(np.uint64) & np.uint64(modulus - 1)


class Round:
    """One round driven stage by stage, keeping every message (as a test can inspect it)."""

    def __init__(self, n: int, params: SecAggParams, *, seed: int = 0) -> None:
        self.params = params
        self.vectors, self.weights = _updates(n, seed)
        self.names = sorted(self.vectors)
        self.graph = neighbours(self.names, params.num_shares, b"graph")
        self.secrets = {name: ClientSecrets.generate() for name in self.names}
        self.keys = {name: s.public_keys() for name, s in self.secrets.items()}
        self.inbox: dict[str, dict[str, bytes]] = {name: {} for name in self.names}
        for name in self.names:
            for receiver, bundle in share_keys(
                name, self.secrets[name], params, self._keys(name), CTX
            ).items():
                self.inbox[receiver][name] = bundle
        self.masked: dict[str, np.ndarray] = {}

    def _keys(self, name: str) -> dict[str, PublicKeys]:
        return {j: self.keys[j] for j in self.graph[name]}

    def mask(self, names: list[str]) -> None:
        for i, name in enumerate(self.names):
            if name in names:
                self.masked[name] = mask(
                    name,
                    self.secrets[name],
                    self.params,
                    self.vectors[name],
                    self.weights[name],
                    self._keys(name),
                    self.graph[name],
                    CTX,
                    rng=np.random.default_rng(i),
                )

    def reference(self, names: list[str]) -> np.ndarray:
        """The exact dequantized sum of the named clients' quantized vectors."""
        total = sum(
            _quantized(self.vectors[n], self.weights[n], self.params, self.names.index(n))
            for n in names
        )
        assert isinstance(total, np.ndarray)
        return dequantize_sum(
            _mod(total, self.params.modulus),
            count=len(names),
            clipping_range=self.params.clipping_range,
            quantization_range=self.params.quantization_range,
            scale=self.params.max_weight,
        )

    def unmask(self, revealers: list[str]) -> tuple[np.ndarray, float]:
        survivors = sorted(self.masked)
        dropped = sorted(set(self.names) - set(survivors))
        acc = new_sum(self.params, P + 1)
        for name in survivors:
            add_masked(acc, decode_masked(encode_masked(self.masked[name]), self.params, P + 1))
        revealed = {
            name: reveal(
                name,
                self.secrets[name],
                self.inbox[name],
                survivors,
                dropped,
                self._keys(name),
                CTX,
            )
            for name in revealers
        }
        return unmask(self.params, acc, revealed, survivors, dropped, self.keys, self.graph, CTX)


@pytest.mark.parametrize("modulus", [2**32, 2**20, 2**64])
def test_masks_cancel_exactly_when_nobody_drops(modulus: int) -> None:
    params = SecAggParams(
        threshold=3, num_shares=4, max_weight=100.0, modulus=modulus, quantization_range=2**12
    )
    rnd = Round(7, params)
    rnd.mask(rnd.names)
    total = new_sum(params, P + 1)
    for masked in rnd.masked.values():
        assert masked.max() < modulus
        add_masked(total, masked)
    # The pairwise masks cancel in the sum: only the self masks remain.
    for name in rnd.names:
        total -= mask_stream(rnd.secrets[name].b, P + 1, params.dtype)
    expected = sum(
        _quantized(rnd.vectors[n], rnd.weights[n], params, i) for i, n in enumerate(rnd.names)
    )
    assert np.array_equal(_mod(total, modulus), _mod(expected, modulus))
    weighted, weight = rnd.unmask(rnd.names)
    reference = rnd.reference(rnd.names)
    assert np.array_equal(weighted, reference[:-1])
    assert weight == reference[-1]


@pytest.mark.parametrize("dropped", [0, 1, 3, 4])
def test_dropouts_after_key_sharing_up_to_n_minus_t_give_the_exact_sum(dropped: int) -> None:
    n, t = 8, 4
    params = SecAggParams(threshold=t, num_shares=n - 1, max_weight=100.0)  # full SecAgg
    rnd = Round(n, params, seed=dropped)
    alive = rnd.names[dropped:]
    rnd.mask(alive)
    weighted, weight = rnd.unmask(alive)
    reference = rnd.reference(alive)
    assert np.array_equal(weighted, reference[:-1])
    assert weight == reference[-1]
    # ... which is the weighted sum of the survivors' clipped updates, within the bound.
    want = sum(rnd.weights[a] * rnd.vectors[a].astype(np.float64) for a in alive)
    bound = len(alive) * step(params.clipping_range, params.quantization_range) * params.max_weight
    assert np.abs(weighted - want).max() <= bound
    assert abs(weight - sum(rnd.weights[a] for a in alive)) <= bound


def test_secagg_plus_graph_with_dropouts_and_silent_revealers() -> None:
    params = SecAggParams.for_participants(20, max_weight=100.0)
    assert (params.num_shares, params.threshold) == (10, 6)
    vectors, weights = _updates(20)
    gone, quiet = ["cluster03", "cluster11"], ["cluster07"]
    sim = simulate(vectors, weights, params, drop_before_mask=gone, silent_at_unmask=quiet)
    alive = [n for n in sorted(vectors) if n not in gone]
    want = sum(weights[a] * vectors[a].astype(np.float64) for a in alive)
    bound = len(alive) * step(params.clipping_range, params.quantization_range) * params.max_weight
    assert np.abs(sim.weighted_sum - want).max() <= bound
    assert abs(sim.total_weight - sum(weights[a] for a in alive)) <= bound
    assert sim.dropped == tuple(gone)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_dropout_pattern_gives_the_exact_sum_or_names_who_is_short(
    data: st.DataObject,
) -> None:
    """Random graphs, thresholds, dropouts before masking and silent revealers: the sum is
    exact whenever every survivor and every dropped client keeps t shareholders among the
    revealers (itself counting for a survivor), and otherwise the error names exactly those
    who are short."""
    n = data.draw(st.integers(2, 7), label="n")
    k = data.draw(st.integers(1, n - 1), label="k")
    t = data.draw(st.integers(1, k + 1), label="t")
    params = SecAggParams(threshold=t, num_shares=k, max_weight=100.0)
    rnd = Round(n, params, seed=n * 100 + k * 10 + t)
    survivors = data.draw(
        st.lists(st.sampled_from(rnd.names), min_size=1, unique=True).map(sorted), label="alive"
    )
    revealers = data.draw(
        st.lists(st.sampled_from(survivors), unique=True).map(sorted), label="revealers"
    )
    rnd.mask(survivors)
    holders = {
        u: ({u} | set(rnd.graph[u])) if u in survivors else set(rnd.graph[u]) for u in rnd.names
    }
    short = sorted(u for u in rnd.names if len(holders[u] & set(revealers)) < t)
    dropped = sorted(set(rnd.names) - set(survivors))
    predicted = short_of_shares(params, rnd.graph, survivors, dropped, revealers)
    assert sorted(predicted) == short
    if short:
        with pytest.raises(SecAggError, match="too few shares to unmask") as info:
            rnd.unmask(revealers)
        named = sorted(part.split(" (")[0] for part in str(info.value).split(": ")[1].split(", "))
        assert named == short
    else:
        weighted, weight = rnd.unmask(revealers)
        reference = rnd.reference(survivors)
        assert np.array_equal(weighted, reference[:-1])
        assert weight == reference[-1]


def test_too_few_revealers_is_an_error_naming_who_is_short() -> None:
    n, t = 6, 4
    params = SecAggParams(threshold=t, num_shares=n - 1)
    rnd = Round(n, params)
    rnd.vectors = {k: v / 100 for k, v in rnd.vectors.items()}
    rnd.weights = dict.fromkeys(rnd.names, 1.0)
    rnd.mask(rnd.names[1:])  # cluster00 dropped
    with pytest.raises(SecAggError) as info:
        rnd.unmask(rnd.names[1:4])  # 3 revealers < t = 4
    message = str(info.value)
    assert "too few shares to unmask" in message
    assert "cluster00 (3 of 4)" in message
    assert "cluster05 (3 of 4)" in message


def test_the_hub_side_replayed_alone_gives_the_same_sum() -> None:
    vectors, weights = _updates(6)
    params = SecAggParams.for_participants(6, max_weight=100.0)
    sim = simulate(vectors, weights, params, drop_before_mask=["cluster02"], keep_hub_inputs=True)
    assert sim.hub_inputs is not None
    assert sorted(sim.hub_inputs.masked) == list(sim.survivors)
    weighted, total = aggregate(sim.hub_inputs)
    assert np.array_equal(weighted, sim.weighted_sum)
    assert total == sim.total_weight


def test_a_wrong_share_is_named_not_unmasked_into_a_wrong_sum() -> None:
    params = SecAggParams(threshold=2, num_shares=3)
    rnd = Round(4, params)
    rnd.weights = dict.fromkeys(rnd.names, 1.0)
    survivors, gone = rnd.names[1:], rnd.names[0]
    rnd.mask(survivors)
    acc = new_sum(params, P + 1)
    for name in survivors:
        add_masked(acc, rnd.masked[name])
    revealed = {
        name: reveal(
            name, rnd.secrets[name], rnd.inbox[name], survivors, [gone], rnd._keys(name), CTX
        )
        for name in survivors[:2]
    }
    # The revealers lie about the dropped client's key shares, consistently (a sharing of
    # another key): the rebuilt key does not match the public key.
    forged = split(bytes(range(32)), 4, 2)
    lying = {
        name: {**answer, gone: forged[i].to_bytes()}
        for i, (name, answer) in enumerate(revealed.items())
    }
    with pytest.raises(SecAggError, match=f"masking key of {gone} does not match its public key"):
        unmask(params, acc.copy(), lying, survivors, [gone], rnd.keys, rnd.graph, CTX)
    garbled = {**revealed, survivors[1]: {**revealed[survivors[1]], gone: b"\x07junk"}}
    with pytest.raises(SecAggError, match=f"the share of {gone} from {survivors[1]}: not a Shamir"):
        unmask(params, acc.copy(), garbled, survivors, [gone], rnd.keys, rnd.graph, CTX)
    unmask(params, acc, revealed, survivors, [gone], rnd.keys, rnd.graph, CTX)


def test_a_single_masked_vector_looks_uniform() -> None:
    """The hub sees each client's masked vector alone: for an update of all zeros (the most
    structured input), its values are uniform mod the modulus (chi-square, 256 buckets of
    the high byte and of the low byte)."""
    params = SecAggParams(threshold=2, num_shares=2)
    secrets = ClientSecrets.generate()
    others = {n: ClientSecrets.generate().public_keys() for n in ("b", "c")}
    masked = mask("a", secrets, params, np.zeros(200_000, np.float32), 1.0, others, ["b", "c"], CTX)
    for shift in (0, 24):
        assert byte_uniformity(masked, shift) > 1e-6
    # Without the self mask (b known), the pairwise masks alone still hide it: uniform too.
    bare = masked - mask_stream(secrets.b, masked.size, params.dtype)
    assert byte_uniformity(bare, 24) > 1e-6


def test_a_revealer_never_reveals_both_secrets_of_one_client() -> None:
    params = SecAggParams(threshold=2, num_shares=3)
    rnd = Round(4, params)
    me = rnd.names[0]
    other = rnd.names[1]
    with pytest.raises(SecAggError, match=rf"refusing to reveal both secrets of \['{other}'\]"):
        reveal(me, rnd.secrets[me], rnd.inbox[me], rnd.names, [other], rnd._keys(me), CTX)
    with pytest.raises(SecAggError, match="I am listed as dropped"):
        reveal(me, rnd.secrets[me], rnd.inbox[me], rnd.names[1:], [me], rnd._keys(me), CTX)
    # A survivor's b-share and a dropped client's s_sk-share, nothing else.
    answer = reveal(
        me, rnd.secrets[me], rnd.inbox[me], rnd.names[:3], [rnd.names[3]], rnd._keys(me), CTX
    )
    assert set(answer) == set(rnd.names)


def test_a_tampered_or_misrouted_bundle_is_refused() -> None:
    params = SecAggParams(threshold=2, num_shares=3)
    rnd = Round(4, params)
    a, b, c = rnd.names[:3]
    tampered = dict(rnd.inbox[a])
    data = bytearray(tampered[b])
    data[-1] ^= 1
    tampered[b] = bytes(data)
    with pytest.raises(SecAggError, match="failed authentication"):
        reveal(a, rnd.secrets[a], tampered, rnd.names, [], rnd._keys(a), CTX)
    misrouted = {b: rnd.inbox[c][b]}  # b's bundle for c, handed to a
    with pytest.raises(SecAggError, match="failed authentication"):
        reveal(a, rnd.secrets[a], misrouted, rnd.names, [], rnd._keys(a), CTX)
    other_round = round_context("job-uid", 4)
    with pytest.raises(SecAggError, match="failed authentication"):
        reveal(a, rnd.secrets[a], rnd.inbox[a], rnd.names, [], rnd._keys(a), other_round)


def test_secrets_and_keys_serialize_and_stay_out_of_logs() -> None:
    secrets = ClientSecrets.generate()
    assert ClientSecrets.from_bytes(secrets.to_bytes()) == secrets
    assert ClientSecrets.from_json(json.loads(json.dumps(secrets.to_json()))) == secrets
    assert repr(secrets) == "ClientSecrets(<hidden>)"
    keys = secrets.public_keys()
    assert len(json.dumps(keys.to_json())) < 200
    assert PublicKeys.from_json(keys.to_json()) == keys
    with pytest.raises(SecAggError, match="bad header or length"):
        ClientSecrets.from_bytes(secrets.to_bytes()[:-1])
    with pytest.raises(SecAggError, match="c_pk: an X25519 public key is 32 bytes"):
        PublicKeys(c_pk="AAAA", s_pk=keys.s_pk)
    with pytest.raises(SecAggError, match="exactly c_pk and s_pk"):
        PublicKeys.from_json({"c_pk": keys.c_pk})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"threshold": 0, "num_shares": 3}, "threshold: must be between 1 and num_shares"),
        ({"threshold": 5, "num_shares": 3}, "threshold: must be between 1 and num_shares"),
        ({"threshold": 2, "num_shares": 0}, "num_shares: must be at least 1"),
        ({"threshold": 2, "num_shares": 3, "modulus": 1000}, "modulus: must be a power of two"),
        (
            {"threshold": 2, "num_shares": 3, "modulus": 2**16},
            "quantization_range: must be between",
        ),
        (
            {"threshold": 2, "num_shares": 3, "clipping_range": 0.5},
            "clipping_range: must be at least 1",
        ),
        (
            {"threshold": 2, "num_shares": 3, "max_weight": float("nan")},
            "max_weight: must be finite",
        ),
        ({"threshold": 2.0, "num_shares": 3}, "threshold: must be an integer"),
    ],
)
def test_params_name_the_bad_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SecAggError, match=message):
        SecAggParams(**fields)


def test_params_round_trip_and_limits() -> None:
    params = SecAggParams.for_participants(50, max_weight=500.0)
    assert SecAggParams.from_json(json.loads(json.dumps(params.to_json()))) == params
    assert params.max_clients == 1024
    with pytest.raises(SecAggError, match="unknown secure-aggregation parameters"):
        SecAggParams.from_json({**params.to_json(), "extra": 1})
    small = SecAggParams(
        threshold=2, num_shares=2, modulus=2**24, quantization_range=2**22, max_weight=100.0
    )
    assert small.max_clients == 4
    rnd = Round(5, small)
    rnd.mask(rnd.names)
    with pytest.raises(SecAggError, match="5 survivors exceed 4"):
        rnd.unmask(rnd.names)


def test_sharing_and_masking_again_after_a_restart_give_the_same_bytes() -> None:
    params = SecAggParams(threshold=2, num_shares=2, max_weight=10.0)
    secrets = ClientSecrets.generate()
    keys = {"b": ClientSecrets.generate().public_keys()}
    update = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    restarted = ClientSecrets.from_bytes(secrets.to_bytes())
    bundles = share_keys("a", secrets, params, keys, CTX)
    assert share_keys("a", restarted, params, keys, CTX) == bundles
    first = mask("a", secrets, params, update, 3.0, keys, ["b"], CTX)
    again = mask("a", restarted, params, update, 3.0, keys, ["b"], CTX)
    assert encode_masked(first) == encode_masked(again)
    other_round = mask("a", secrets, params, update, 3.0, keys, ["b"], round_context("job-uid", 4))
    assert not np.array_equal(first, other_round)


def test_mask_refuses_bad_input() -> None:
    params = SecAggParams(threshold=2, num_shares=2, max_weight=10.0)
    secrets = ClientSecrets.generate()
    keys = {"b": ClientSecrets.generate().public_keys()}
    with pytest.raises(SecAggError, match=r"weight 11.0 is outside \(0, max_weight = 10.0\]"):
        mask("a", secrets, params, np.zeros(3, np.float32), 11.0, keys, ["b"], CTX)
    with pytest.raises(SecAggError, match=r"no public keys for neighbours \['c'\]"):
        mask("a", secrets, params, np.zeros(3, np.float32), 1.0, keys, ["b", "c"], CTX)
    with pytest.raises(SecAggError, match="NaN or infinite"):
        mask("a", secrets, params, np.array([np.nan], np.float32), 1.0, keys, ["b"], CTX)
    with pytest.raises(SecAggError, match="neighbours with keys, threshold 3"):
        share_keys("a", secrets, SecAggParams(threshold=3, num_shares=2), keys, CTX)


@pytest.mark.parametrize(("n", "k"), [(2, 1), (7, 3), (8, 3), (10, 4), (10, 9), (30, 6)])
def test_neighbour_graph_is_symmetric_deterministic_and_k_regular(n: int, k: int) -> None:
    names = [f"c{i}" for i in range(n)]
    graph = neighbours(names, k, b"seed")
    assert graph == neighbours(list(reversed(names)), k, b"seed")
    for name, near in graph.items():
        assert name not in near
        assert all(name in graph[other] for other in near)
        assert len(near) == min(k, n - 1) or (k % 2 == 1 and n % 2 == 1 and len(near) == k + 1)
    if k < n - 1:
        assert neighbours(names, k, b"other seed") != graph


def test_flatten_unflatten_and_the_mean_equals_fedavg() -> None:
    rng = np.random.default_rng(5)
    shapes = {"dense.w": (3, 4), "dense.b": (4,), "out": (5,)}
    models = {
        f"c{i}": {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        for i in range(4)
    }
    examples = {"c0": 10, "c1": 30, "c2": 5, "c3": 55}
    layout = describe(models["c0"])
    assert vector_length(layout) == 12 + 4 + 5 + 1
    flat = flatten(models["c1"])
    assert all(np.array_equal(a, models["c1"][k]) for k, a in unflatten(flat, layout).items())
    params = SecAggParams.for_participants(4, max_weight=100.0)
    sim = simulate({n: flatten(m) for n, m in models.items()}, examples, params)
    secure = unflatten(sim.weighted_sum / sim.total_weight, layout)
    agg = make_strategy("FedAvg", {}).begin_round(models["c0"], round_number=1)
    for name, model in models.items():
        agg.add(model, num_examples=examples[name], client=name)
    plain = agg.result()
    assert secure.keys() == plain.keys()
    for name in plain:
        assert secure[name].dtype == plain[name].dtype
        np.testing.assert_allclose(secure[name], plain[name], atol=1e-4)
    with pytest.raises(SecAggError, match="does not fit a model of 21"):
        unflatten(np.zeros(20, np.float32), layout)
