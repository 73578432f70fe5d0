"""The secure-aggregation part of the round contract in the terms of `fl_core.privacy.secagg`:
the same context, parameters and keys for the hub, the agent and the training Job."""

from __future__ import annotations

from fl_contract.models import PublicKeyPair, SecAggConfig, SecAggRound
from fl_core.privacy import secagg


def context(job_uid: str, round_number: int, attempt: int) -> bytes:
    """What every share, mask and reveal of one round attempt is bound to (a retried
    attempt has new secrets, and nothing of an earlier one fits it)."""
    return secagg.round_context(job_uid, round_number) + f"\x00attempt={attempt}".encode()


def params_of(config: SecAggConfig) -> secagg.SecAggParams:
    return secagg.SecAggParams(
        threshold=config.threshold,
        num_shares=config.num_shares,
        clipping_range=config.clipping_range,
        quantization_range=config.quantization_range,
        modulus=config.modulus,
        max_weight=config.max_weight,
    )


def encode_keys(pair: secagg.PublicKeys) -> PublicKeyPair:
    return PublicKeyPair(c_pk=pair.c_pk, s_pk=pair.s_pk)


def decode_keys(pair: PublicKeyPair) -> secagg.PublicKeys:
    """SecAggError when they are not public keys."""
    return secagg.PublicKeys(c_pk=pair.c_pk, s_pk=pair.s_pk)


def neighbour_keys(part: SecAggRound) -> dict[str, secagg.PublicKeys]:
    """The public keys of the neighbours a stage of the round spec names."""
    return {name: decode_keys(pair) for name, pair in part.neighbours.items()}
