"""The stages of SecAgg+ (Bell et al. 2020) as pure functions over serializable values.

Per round, with U0 the participants and `neighbours(U0, k, seed)` the graph G:

1. advertise keys: each client makes `ClientSecrets.generate()` (keep it: `to_bytes` for a
   Secret), and reports `public_keys()`. U1 = clients whose keys arrived.
2. share keys: each client in U1 gets its neighbours' `PublicKeys` (those in U1) and
   sends `share_keys(...)`: one encrypted bundle per neighbour and one for itself, each
   holding a Shamir share of its self-mask seed b and of its masking key s_sk. The hub
   forwards bundle (i -> j) to j. U1 is now the clients whose bundles arrived.
3. mask: each client in U1 gets the bundles addressed to it and `shared` = its neighbours
   in U1, and sends `mask(...)`: quantize(weighted update) + PRG(b) + sum over shared j of
   +-PRG(KA(s_sk, s_pk_j)). U2 = clients whose masked vectors arrived; the hub sums them
   (`add_masked`). survivors = U2, dropped = U1 - U2.
4. unmask: each client in U2 gets (survivors, dropped) and answers `reveal(...)`: its
   b-share of every survivor, its s_sk-share of every dropped client, never both for one
   client. The hub calls `unmask(...)` with the replies: rebuilds each survivor's b and
   each dropped client's s_sk from t shares, removes the masks and dequantizes.

The hub sees only masked vectors (uniform mod the modulus for each client alone) and the
sum; the pairwise masks cancel in the sum, the self masks and the dropped clients' leftover
pairwise masks are removed with the revealed seeds. A client revealed as dropped keeps its
b secret, so its masked vector, should it arrive late, still hides its update.

`context` binds everything to one round: `round_context(job_uid, round)`; keys, bundles and
masks of one round are useless in another. Threat model: an honest-but-curious hub and
clients; the hub is trusted to tell every client the same survivors and dropped sets.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fl_core.privacy.secagg import crypto, shamir
from fl_core.privacy.secagg.errors import SecAggError
from fl_core.privacy.secagg.params import SecAggParams
from fl_core.privacy.secagg.quantize import dequantize_sum, quantize

_SECRETS_MAGIC = b"fl-secagg-secrets-v1\x00"
_SHARE_PURPOSE = b"share-encryption"
_MASK_PURPOSE = b"pairwise-mask"
_QUANTIZATION_PURPOSE = b"quantization"


def round_context(job_uid: str, round_number: int) -> bytes:
    """The bytes that bind keys, bundles and masks to one round of one job."""
    return b"job=" + job_uid.encode() + b"\x00round=" + str(round_number).encode()


@dataclass(frozen=True)
class PublicKeys:
    """A client's public keys, base64 (44 characters each): c_pk encrypts share bundles,
    s_pk derives pairwise masks. `to_json()` is under 100 bytes, small enough for a report."""

    c_pk: str
    s_pk: str

    def __post_init__(self) -> None:
        for name in ("c_pk", "s_pk"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise SecAggError(f"{name}: a public key must be a base64 string")
            try:
                crypto.decode_public_key(value)
            except SecAggError as exc:
                raise SecAggError(f"{name}: {exc}") from None
        if self.c_pk == self.s_pk:
            raise SecAggError("c_pk and s_pk must be different keys")

    def to_json(self) -> dict[str, str]:
        return {"c_pk": self.c_pk, "s_pk": self.s_pk}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PublicKeys:
        if not isinstance(data, Mapping) or set(data) != {"c_pk", "s_pk"}:
            raise SecAggError("public keys must be an object with exactly c_pk and s_pk")
        return cls(c_pk=data["c_pk"], s_pk=data["s_pk"])


@dataclass(frozen=True, repr=False)
class ClientSecrets:
    """A client's secrets for one round: two X25519 private keys (raw 32 bytes) and the
    32-byte self-mask seed b. Fresh every round; never logged (`repr` hides them)."""

    c_sk: bytes
    s_sk: bytes
    b: bytes

    def __post_init__(self) -> None:
        for name in ("c_sk", "s_sk", "b"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != crypto.KEY_BYTES:
                raise SecAggError(f"{name}: must be {crypto.KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return "ClientSecrets(<hidden>)"

    @classmethod
    def generate(cls) -> ClientSecrets:
        return cls(c_sk=crypto.new_private_key(), s_sk=crypto.new_private_key(), b=os.urandom(32))

    def public_keys(self) -> PublicKeys:
        return PublicKeys(
            c_pk=crypto.public_key_b64(self.c_sk), s_pk=crypto.public_key_b64(self.s_sk)
        )

    def to_bytes(self) -> bytes:
        return _SECRETS_MAGIC + self.c_sk + self.s_sk + self.b

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientSecrets:
        body = bytes(data)
        if not body.startswith(_SECRETS_MAGIC) or len(body) != len(_SECRETS_MAGIC) + 96:
            raise SecAggError(
                "not serialized secure-aggregation client secrets (bad header or length)"
            )
        body = body[len(_SECRETS_MAGIC) :]
        return cls(c_sk=body[:32], s_sk=body[32:64], b=body[64:])

    def to_json(self) -> dict[str, str]:
        """Base64 strings, e.g. for the data of a Kubernetes Secret."""
        return {k: base64.b64encode(getattr(self, k)).decode() for k in ("c_sk", "s_sk", "b")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClientSecrets:
        if not isinstance(data, Mapping) or set(data) != {"c_sk", "s_sk", "b"}:
            raise SecAggError("client secrets must be an object with exactly c_sk, s_sk and b")
        try:
            raw = {k: base64.b64decode(data[k], validate=True) for k in ("c_sk", "s_sk", "b")}
        except (binascii.Error, ValueError, TypeError):
            raise SecAggError("client secrets: values must be base64") from None
        return cls(**raw)


@dataclass(frozen=True)
class _Bundle:
    sender: str
    receiver: str
    b_share: bytes = field(repr=False)
    s_share: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "from": self.sender,
                "to": self.receiver,
                "b": base64.b64encode(self.b_share).decode(),
                "s": base64.b64encode(self.s_share).decode(),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> _Bundle:
        try:
            obj = json.loads(data)
            return cls(
                sender=obj["from"],
                receiver=obj["to"],
                b_share=base64.b64decode(obj["b"], validate=True),
                s_share=base64.b64decode(obj["s"], validate=True),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise SecAggError("a decrypted share bundle is malformed") from None


def share_keys(
    me: str,
    secrets: ClientSecrets,
    params: SecAggParams,
    neighbour_keys: Mapping[str, PublicKeys],
    context: bytes,
) -> dict[str, bytes]:
    """Stage 2: receiver -> encrypted bundle, for each neighbour in `neighbour_keys` and for
    `me` (a client keeps one share of its own secrets, forwarded like the others).

    The secrets are split into len(neighbours) + 1 shares with threshold t; fewer holders
    than t is an error (the client could never be unmasked). Deterministic: the same call
    gives the same bytes."""
    holders = sorted(set(neighbour_keys) | {me})
    if len(holders) < params.threshold:
        raise SecAggError(
            f"{me}: {len(holders) - 1} neighbours with keys, threshold {params.threshold} "
            f"needs at least {params.threshold - 1}"
        )
    keys = dict(neighbour_keys)
    keys[me] = secrets.public_keys()
    # Coefficients from the client's secrets: the same call gives the same bundles, so a
    # restarted client resends what it sent (two sharings would not combine).
    material = secrets.c_sk + secrets.s_sk + secrets.b
    scope = context + b"\x00" + "\x00".join(holders).encode()
    b_shares = shamir.split(
        secrets.b,
        len(holders),
        params.threshold,
        seed=crypto.derive(material, purpose=b"share-b", context=scope),
    )
    s_shares = shamir.split(
        secrets.s_sk,
        len(holders),
        params.threshold,
        seed=crypto.derive(material, purpose=b"share-s", context=scope),
    )
    out: dict[str, bytes] = {}
    for holder, b_share, s_share in zip(holders, b_shares, s_shares, strict=True):
        bundle = _Bundle(me, holder, b_share.to_bytes(), s_share.to_bytes())
        key = crypto.agree(secrets.c_sk, keys[holder].c_pk, purpose=_SHARE_PURPOSE, context=context)
        out[holder] = crypto.encrypt(
            key, bundle.to_bytes(), crypto.associated_data(context, me, holder)
        )
    return out


def mask(
    me: str,
    secrets: ClientSecrets,
    params: SecAggParams,
    vector: npt.NDArray[np.floating[Any]],
    weight: float,
    neighbour_keys: Mapping[str, PublicKeys],
    shared: Collection[str],
    context: bytes,
    *,
    rng: np.random.Generator | None = None,
) -> npt.NDArray[Any]:
    """Stage 3: the masked vector (params.dtype, len(vector) + 1 elements, mod modulus).

    vector: the flat float update (`flatten`); weight: its example count, in
    (0, params.max_weight]; shared: those of my neighbours that completed key sharing (the
    hub says which; each needs its keys in `neighbour_keys`). Quantization is stochastic,
    from `rng`; by default from a generator seeded by the secrets and context, so the same
    call gives the same bytes (a restarted client may mask again safely)."""
    values = np.asarray(vector)
    if values.ndim != 1 or values.dtype.kind != "f":
        raise SecAggError(
            f"{me}: the update must be a flat float vector, got {values.dtype} {values.shape}"
        )
    if not 0 < weight <= params.max_weight:
        raise SecAggError(f"{me}: weight {weight} is outside (0, max_weight = {params.max_weight}]")
    missing = sorted(set(shared) - set(neighbour_keys) - {me})
    if missing:
        raise SecAggError(f"{me}: no public keys for neighbours {missing}")
    ratio = weight / params.max_weight
    scaled = np.empty(values.size + 1, dtype=np.float64)
    np.clip(values, -params.clipping_range, params.clipping_range, out=scaled[:-1])
    scaled[:-1] *= ratio
    scaled[-1] = ratio
    quantized = quantize(
        scaled,
        clipping_range=params.clipping_range,
        quantization_range=params.quantization_range,
        rng=rng if rng is not None else _quantization_rng(secrets, context),
    )
    out = quantized.astype(params.dtype)
    add: list[bytes] = [secrets.b]
    subtract: list[bytes] = []
    for other in sorted(set(shared) - {me}):
        seed = pairwise_seed(me, secrets.s_sk, other, neighbour_keys[other].s_pk, context)
        (add if me < other else subtract).append(seed)
    crypto.accumulate_masks(out, add=add, subtract=subtract)
    _reduce(out, params)
    return out


def _quantization_rng(secrets: ClientSecrets, context: bytes) -> np.random.Generator:
    """The rounding noise, drawn from the client's secret seed: a restarted client that masks
    the same update again sends the same bytes (two different roundings of one update
    would tell the hub where they differ, hence something of the update's low bits)."""
    seed = crypto.derive(secrets.b, purpose=_QUANTIZATION_PURPOSE, context=context)
    return np.random.default_rng(np.frombuffer(seed, dtype=np.uint32))


def pairwise_seed(me: str, s_sk: bytes, other: str, other_s_pk: str, context: bytes) -> bytes:
    """The mask seed of the pair (me, other): the same from either end."""
    low, high = sorted((me, other))
    pair = crypto.associated_data(context, low, high)
    return crypto.agree(s_sk, other_s_pk, purpose=_MASK_PURPOSE, context=pair)


def reveal(
    me: str,
    secrets: ClientSecrets,
    received: Mapping[str, bytes],
    survivors: Collection[str],
    dropped: Collection[str],
    neighbour_keys: Mapping[str, PublicKeys],
    context: bytes,
) -> dict[str, bytes]:
    """Stage 4, client side: owner -> share, from the bundles `received` (sender -> bundle):
    the b-share of each survivor, the s_sk-share of each dropped sender.

    Refuses (`SecAggError`) a request naming a client in both sets, or `me` as dropped: either
    would let the hub rebuild both secrets of one client and unmask its update. The function
    is pure: a restarted client that answered once must answer the same request again
    (store the first answer), never a different one for the same round."""
    both = sorted(set(survivors) & set(dropped))
    if both:
        raise SecAggError(
            f"{me}: refusing to reveal both secrets of {both} (in survivors and dropped)"
        )
    if me in dropped:
        raise SecAggError(f"{me}: refusing to reveal my own masking key (I am listed as dropped)")
    keys = dict(neighbour_keys)
    keys[me] = secrets.public_keys()
    out: dict[str, bytes] = {}
    for sender in sorted(received):
        wanted = "b" if sender in survivors else "s" if sender in dropped else None
        if wanted is None:
            continue
        if sender not in keys:
            raise SecAggError(f"{me}: no public keys for {sender}, whose bundle arrived")
        key = crypto.agree(secrets.c_sk, keys[sender].c_pk, purpose=_SHARE_PURPOSE, context=context)
        plain = crypto.decrypt(key, received[sender], crypto.associated_data(context, sender, me))
        bundle = _Bundle.from_bytes(plain)
        if (bundle.sender, bundle.receiver) != (sender, me):
            raise SecAggError(
                f"{me}: the bundle from {sender} names {bundle.sender} -> {bundle.receiver}"
            )
        out[sender] = bundle.b_share if wanted == "b" else bundle.s_share
    return out


def short_of_shares(
    params: SecAggParams,
    neighbours: Mapping[str, Collection[str]],
    survivors: Collection[str],
    dropped: Collection[str],
    revealers: Collection[str],
) -> dict[str, int]:
    """owner -> shareholders among `revealers`, for each survivor or dropped client with fewer
    than t (a survivor holds a share of its own; a dropped client's is gone). Empty when
    `unmask` can succeed. The hub may ask it with revealers = survivors as soon as the
    masking stage closes: a non-empty answer means the round cannot complete."""
    alive, asked = set(survivors), set(revealers)
    out: dict[str, int] = {}
    for owner in sorted(alive | set(dropped)):
        holders = set(neighbours.get(owner, ())) | ({owner} if owner in alive else set())
        count = len(holders & asked)
        if count < params.threshold:
            out[owner] = count
    return out


def unmask(
    params: SecAggParams,
    masked_sum: npt.NDArray[Any],
    revealed: Mapping[str, Mapping[str, bytes]],
    survivors: Collection[str],
    dropped: Collection[str],
    public_keys: Mapping[str, PublicKeys],
    neighbours: Mapping[str, Collection[str]],
    context: bytes,
) -> tuple[npt.NDArray[np.float64], float]:
    """Stage 4, hub side: (sum of weight_i * clip(x_i), sum of weight_i) over the survivors.

    masked_sum: the sum of the survivors' masked vectors (`add_masked`); it is modified in
    place. revealed: revealer -> (owner -> share), the `reveal` answers. The weighted mean
    is the first divided by the second. Raises `SecAggError` naming every client short of
    shares (too many of its neighbours left before unmasking)."""
    alive, gone = set(survivors), set(dropped)
    if not alive:
        raise SecAggError("no survivors: nothing to unmask")
    if alive & gone:
        raise SecAggError(f"clients both survived and dropped: {sorted(alive & gone)}")
    if len(alive) > params.max_clients:
        raise SecAggError(
            f"{len(alive)} survivors exceed {params.max_clients}, the most whose sum fits "
            f"modulus {params.modulus} at quantization_range {params.quantization_range}"
        )
    if masked_sum.dtype != params.dtype or masked_sum.ndim != 1 or masked_sum.size < 1:
        raise SecAggError(f"masked sum must be a flat {params.dtype} vector")
    shares: dict[str, list[shamir.Share]] = {owner: [] for owner in alive | gone}
    for revealer in sorted(revealed):
        for owner, data in revealed[revealer].items():
            if owner in shares:
                try:
                    shares[owner].append(shamir.Share.from_bytes(data))
                except SecAggError as exc:
                    raise SecAggError(f"the share of {owner} from {revealer}: {exc}") from None
    short = sorted(
        f"{owner} ({len(found)} of {params.threshold})"
        for owner, found in shares.items()
        if len(found) < params.threshold
    )
    if short:
        raise SecAggError(
            f"too few shares to unmask: {', '.join(short)}; too many of their neighbours "
            f"left before the unmasking stage"
        )
    subtract: list[bytes] = []
    add: list[bytes] = []
    for owner in sorted(alive):
        subtract.append(_combine(owner, "b", shares[owner]))
    for owner in sorted(gone):
        s_sk = _combine(owner, "s_sk", shares[owner])
        if owner not in public_keys or crypto.public_key_b64(s_sk) != public_keys[owner].s_pk:
            raise SecAggError(
                f"the rebuilt masking key of {owner} does not match its public key "
                f"(a revealer sent a wrong share, or the public keys are not this round's)"
            )
        for other in sorted(set(neighbours.get(owner, ())) & alive):
            if other not in public_keys:
                raise SecAggError(f"no public keys for {other}, a survivor next to {owner}")
            seed = pairwise_seed(owner, s_sk, other, public_keys[other].s_pk, context)
            # `other` added +seed if other < owner, else -seed: take the same off.
            (subtract if other < owner else add).append(seed)
    crypto.accumulate_masks(masked_sum, add=add, subtract=subtract)
    _reduce(masked_sum, params)
    total = dequantize_sum(
        masked_sum,
        count=len(alive),
        clipping_range=params.clipping_range,
        quantization_range=params.quantization_range,
        scale=params.max_weight,
    )
    return total[:-1], float(total[-1])


def _combine(owner: str, what: str, shares: list[shamir.Share]) -> bytes:
    try:
        return shamir.combine(shares)
    except SecAggError as exc:
        raise SecAggError(f"cannot rebuild {what} of {owner}: {exc}") from None


def _reduce(vector: npt.NDArray[Any], params: SecAggParams) -> None:
    if params.modulus < 2 ** (8 * vector.itemsize):
        np.bitwise_and(vector, vector.dtype.type(params.modulus - 1), out=vector)
