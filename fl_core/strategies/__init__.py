"""Aggregation strategies, Flower-like, selected by name with validated parameters.

strategy = make_strategy("FedAdam", {"eta": 0.05})       # camelCase or snake_case keys
agg = strategy.begin_round(global_weights, round_number=r)
for each report:  agg.add(update, num_examples=n, client=name)   # raises Rejected
new_global = agg.result();  state = strategy.server_state()      # persist both
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fl_core.strategies.base import (
    ClientConfig,
    NothingToAggregate,
    Rejected,
    RoundAggregator,
    Strategy,
    all_finite,
    validate,
)
from fl_core.strategies.fedavg import FedAvg, FedProx, MeanAggregator
from fl_core.strategies.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from fl_core.strategies.robust import FedMedian, FedTrimmedAvg, Krum, MultiKrum

__all__ = [
    "STRATEGY_NAMES",
    "ClientConfig",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedMedian",
    "FedOpt",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "Krum",
    "MeanAggregator",
    "MultiKrum",
    "NothingToAggregate",
    "Rejected",
    "RoundAggregator",
    "Strategy",
    "all_finite",
    "make_strategy",
    "strategy_parameters",
    "validate",
]

STRATEGY_NAMES: tuple[str, ...] = (
    "FedAvg",
    "FedProx",
    "FedAdam",
    "FedYogi",
    "FedAdagrad",
    "FedMedian",
    "FedTrimmedAvg",
    "Krum",
    "MultiKrum",
)

Check = Callable[[str, str, object], float | int]


def _real(low: float, high: float, *, low_open: bool = False, high_open: bool = True) -> Check:
    def check(strategy: str, key: str, value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"strategy {strategy}: parameter {key!r} must be a number, got {value!r}"
            )
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            lo = "(" if low_open else "["
            hi = ")" if high_open else "]"
            raise ValueError(
                f"strategy {strategy}: parameter {key!r} = {value} is outside {lo}{low}, {high}{hi}"
            )
        return float(value)

    return check


def _count(strategy: str, key: str, value: object) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != int(value)
        or value < 0
    ):
        raise ValueError(
            f"strategy {strategy}: parameter {key!r} must be a non-negative integer, got {value!r}"
        )
    return int(value)


_POSITIVE = _real(0.0, math.inf, low_open=True)
_UNIT = _real(0.0, 1.0)  # [0, 1)
_FEDOPT = {"eta": _POSITIVE, "eta_l": _POSITIVE, "beta_1": _UNIT, "beta_2": _UNIT, "tau": _POSITIVE}

# name -> (parameters with their checks, required parameters, defaults)
_PARAMS: dict[str, tuple[dict[str, Check], set[str], dict[str, float | int]]] = {
    "FedAvg": ({}, set(), {}),
    "FedProx": ({"proximal_mu": _real(0.0, math.inf)}, {"proximal_mu"}, {}),
    "FedAdam": (_FEDOPT, set(), FedAdam.DEFAULTS),
    "FedYogi": (_FEDOPT, set(), FedYogi.DEFAULTS),
    "FedAdagrad": (
        {k: _FEDOPT[k] for k in ("eta", "eta_l", "tau")},
        set(),
        FedAdagrad.DEFAULTS,
    ),
    "FedMedian": ({}, set(), {}),
    "FedTrimmedAvg": ({"beta": _real(0.0, 0.5)}, set(), {"beta": 0.2}),
    "Krum": (
        {"num_malicious": _count, "num_to_keep": _count},
        set(),
        {"num_malicious": 0, "num_to_keep": 0},
    ),
    "MultiKrum": (
        {"num_malicious": _count, "num_to_keep": _count},
        set(),
        {"num_malicious": 0, "num_to_keep": 0},
    ),
}

# Accepted spellings (after lower-casing and dropping '_' and '-'): the CRD's camelCase,
# Flower's snake_case, and Flower's longer Krum names.
_ALIASES = {
    "proximalmu": "proximal_mu",
    "eta": "eta",
    "etal": "eta_l",
    "beta1": "beta_1",
    "beta2": "beta_2",
    "tau": "tau",
    "beta": "beta",
    "nummalicious": "num_malicious",
    "nummaliciousclients": "num_malicious",
    "numtokeep": "num_to_keep",
    "numclientstokeep": "num_to_keep",
}


def strategy_parameters(name: str, params: Mapping[str, object]) -> dict[str, float | int]:
    """The validated parameters of a strategy, defaults filled in, snake_case keys."""
    if name not in _PARAMS:
        raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGY_NAMES)}")
    checks, required, defaults = _PARAMS[name]
    values: dict[str, float | int] = dict(defaults)
    seen: dict[str, str] = {}
    for key, value in params.items():
        canonical = _ALIASES.get(str(key).lower().replace("_", "").replace("-", ""))
        if canonical not in checks:
            allowed = ", ".join(sorted(checks)) or "none"
            raise ValueError(f"strategy {name}: unknown parameter {key!r} (accepted: {allowed})")
        if canonical in seen:
            raise ValueError(f"strategy {name}: parameter {key!r} repeats {seen[canonical]!r}")
        seen[canonical] = str(key)
        values[canonical] = checks[canonical](name, str(key), value)
    missing = sorted(required - set(seen))
    if missing:
        raise ValueError(f"strategy {name}: parameter {missing[0]!r} is required")
    return values


def make_strategy(
    name: str, params: Mapping[str, object] | None = None, *, spill_dir: Path | None = None
) -> Strategy:
    """Build a strategy by name; ValueError naming the strategy or parameter at fault.

    `spill_dir`: where robust strategies keep this round's updates on disk (default: the
    system temp folder)."""
    values = strategy_parameters(name, params or {})
    kw: dict[str, Any] = dict(values)
    if name == "FedAvg":
        return FedAvg()
    if name == "FedProx":
        return FedProx(**kw)
    if name == "FedAdam":
        return FedAdam(**kw)
    if name == "FedYogi":
        return FedYogi(**kw)
    if name == "FedAdagrad":
        return FedAdagrad(**kw)
    if name == "FedMedian":
        return FedMedian(spill_dir=spill_dir)
    if name == "FedTrimmedAvg":
        return FedTrimmedAvg(spill_dir=spill_dir, **kw)
    if name == "Krum":
        return Krum(spill_dir=spill_dir, **kw)
    return MultiKrum(spill_dir=spill_dir, **kw)
