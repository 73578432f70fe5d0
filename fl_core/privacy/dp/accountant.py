"""Epsilon of the Poisson-subsampled Gaussian mechanism, from Google's `dp-accounting`.

The hub and the training runtime call the same function with the same numbers, so the
epsilon an agent reports can be checked by recomputing it. One cluster's spending over a
job is kept as (largest sampling rate, total steps): epsilon grows with the sampling rate,
so composing every step at the largest rate seen is an upper bound when a dataset's size
changes between rounds.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # imported when first used: it takes about a second (scipy)
    import dp_accounting

Accountant = Literal["RDP", "PLD"]
ACCOUNTANTS: tuple[Accountant, ...] = ("RDP", "PLD")
MECHANISM = "PoissonSubsampledGaussian"
PLD_DISCRETIZATION = 1e-4


class _SkippedOrders(logging.Filter):
    """dp-accounting warns for every Renyi order whose series does not converge and leaves
    it out (epsilon is the minimum over the others): expected for small noise, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to converge" not in str(record.msg)


logging.getLogger("absl").addFilter(_SkippedOrders())


@dataclass(frozen=True)
class Spent:
    """What one cluster (record level) or the fleet (cluster level) has spent so far."""

    sampling_rate: float
    steps: int

    def then(self, sampling_rate: float, steps: int) -> Spent:
        """This spending followed by `steps` more at `sampling_rate` (see the module doc)."""
        return Spent(max(self.sampling_rate, sampling_rate), self.steps + steps)


def dp_event(*, noise_multiplier: float, sampling_rate: float, steps: int) -> dp_accounting.DpEvent:
    """`steps` compositions of a Gaussian mechanism on a Poisson sample at `sampling_rate`."""
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    sampled = dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)
    return dp_accounting.SelfComposedDpEvent(sampled, steps)


def epsilon(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: Accountant = "RDP",
) -> float:
    """Epsilon at `delta` after `steps` steps (0.0 for none; inf without noise)."""
    if steps <= 0 or sampling_rate <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    return _epsilon(noise_multiplier, min(sampling_rate, 1.0), steps, delta, accountant)


@functools.lru_cache(maxsize=4096)
def _epsilon(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, accountant: str
) -> float:
    from dp_accounting import pld, rdp

    event = dp_event(noise_multiplier=noise_multiplier, sampling_rate=sampling_rate, steps=steps)
    engine: dp_accounting.PrivacyAccountant
    if accountant == "PLD":
        engine = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    else:
        engine = rdp.RdpAccountant()
    engine.compose(event)
    return float(engine.get_epsilon(delta))


def spent_epsilon(
    spent: Spent, *, noise_multiplier: float, delta: float, accountant: Accountant = "RDP"
) -> float:
    return epsilon(
        noise_multiplier=noise_multiplier,
        sampling_rate=spent.sampling_rate,
        steps=spent.steps,
        delta=delta,
        accountant=accountant,
    )


def record_level_steps(*, samples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sampling rate, steps) of one round of DP-SGD over `samples` examples: expected
    batch `batch_size`, `epochs` passes of ceil(samples / batch_size) steps each."""
    if samples <= 0:
        return 0.0, 0
    rate = min(batch_size / samples, 1.0)
    return rate, epochs * math.ceil(samples / batch_size)


def same_epsilon(reported: float, expected: float) -> bool:
    """Whether two computations of epsilon agree (the same library, maybe another build)."""
    if math.isinf(reported) or math.isinf(expected):
        return reported == expected
    return math.isclose(reported, expected, rel_tol=1e-6, abs_tol=1e-9)
