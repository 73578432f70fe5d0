"""Server optimisers (Reddi et al. 2021, "Adaptive Federated Optimization"): FedAdam,
FedYogi and FedAdagrad treat `mean(updates) - x_t` as a pseudo-gradient and step the global
model with an adaptive rule. Update rules and default hyper-parameters are Flower's
(`flwr.server.strategy.FedAdam/FedYogi/FedAdagrad`), so results compare one to one:

    delta = mean - x;  m = beta_1*m + (1-beta_1)*delta
    Adam:    v = beta_2*v + (1-beta_2)*delta^2
             x += eta*sqrt(1-beta_2^(t+1))/(1-beta_1^(t+1)) * m/(sqrt(v)+tau)
    Yogi:    v = v - (1-beta_2)*delta^2*sign(v - delta^2);  x += eta * m/(sqrt(v)+tau)
    Adagrad: v = v + delta^2 (beta_1 = beta_2 = 0);          x += eta * m/(sqrt(v)+tau)

where t is the round number. The moments m and v are the server state (`server_state()`:
tensors `m/<name>` and `v/<name>`, in the accumulator dtype); the hub persists them after
each round so that a restarted hub continues the same trajectory. `eta_l` (the clients'
learning rate in the paper) is kept for parity with Flower and not used on the server.
State changes only when a round's result is computed, never on `add`.

Round 1 without a global model (clients initialised from the seed) has no x_t to step
from: its result is the plain weighted mean and the moments stay at zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fl_contract.weights import Weights
from fl_core.strategies.base import RoundAggregator, Spec, Strategy
from fl_core.strategies.fedavg import MeanAggregator

Rule = Literal["adam", "yogi", "adagrad"]


class FedOpt(Strategy):
    rule: Rule = "adam"

    def __init__(
        self, *, eta: float, eta_l: float, beta_1: float, beta_2: float, tau: float
    ) -> None:
        self.eta = eta
        self.eta_l = eta_l
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.tau = tau
        self.m: dict[str, npt.NDArray[Any]] = {}
        self.v: dict[str, npt.NDArray[Any]] = {}

    def begin_round(self, global_weights: Weights | None, *, round_number: int) -> RoundAggregator:
        if global_weights is not None and self.m:
            for name, (dtype, shape) in _spec(global_weights).items():
                moment = self.m.get(name)
                if moment is None or moment.shape != shape:
                    raise ValueError(
                        f"{self.name} server state does not match the global model at tensor "
                        f"{name!r} (shape {shape}, dtype {dtype}); it belongs to another model"
                    )
        return _OptAggregator(self, global_weights, round_number=round_number)

    def server_state(self) -> Weights:
        state: Weights = {}
        for name in self.m:
            state[f"m/{name}"] = self.m[name]
            state[f"v/{name}"] = self.v[name]
        return state

    def load_server_state(self, state: Weights) -> None:
        m = {k[2:]: np.array(a) for k, a in state.items() if k.startswith("m/")}
        v = {k[2:]: np.array(a) for k, a in state.items() if k.startswith("v/")}
        if len(m) + len(v) != len(state) or set(m) != set(v):
            raise ValueError(
                f"{self.name} server state must hold tensors m/<name> and v/<name> for the "
                "same names"
            )
        for name in m:
            if m[name].shape != v[name].shape:
                raise ValueError(f"{self.name} server state: m and v of {name!r} differ in shape")
        self.m, self.v = m, v

    def step(
        self, x: Mapping[str, npt.NDArray[Any]], mean: Mapping[str, npt.NDArray[Any]], *, t: int
    ) -> dict[str, npt.NDArray[Any]]:
        """Apply one server update; mutates the moments, returns the new weights."""
        new_m: dict[str, npt.NDArray[Any]] = {}
        new_v: dict[str, npt.NDArray[Any]] = {}
        out: dict[str, npt.NDArray[Any]] = {}
        b1, b2 = self.beta_1, self.beta_2
        for name, avg in mean.items():
            xt = np.asarray(x[name]).astype(avg.dtype)
            delta = avg - xt
            m = self.m.get(name)
            v = self.v.get(name)
            m = np.zeros_like(delta) if m is None else m.astype(delta.dtype, copy=False)
            v = np.zeros_like(delta) if v is None else v.astype(delta.dtype, copy=False)
            m = b1 * m + (1 - b1) * delta
            sq = delta * delta
            if self.rule == "adam":
                v = b2 * v + (1 - b2) * sq
                lr = self.eta * np.sqrt(1 - b2 ** (t + 1.0)) / (1 - b1 ** (t + 1.0))
            elif self.rule == "yogi":
                v = v - (1.0 - b2) * sq * np.sign(v - sq)
                lr = self.eta
            else:
                v = v + sq
                lr = self.eta
            new_m[name], new_v[name] = m, v
            out[name] = xt + delta.dtype.type(lr) * m / (np.sqrt(v) + delta.dtype.type(self.tau))
        self.m, self.v = new_m, new_v
        return out


class _OptAggregator(MeanAggregator):
    def __init__(
        self, strategy: FedOpt, global_weights: Weights | None, *, round_number: int
    ) -> None:
        super().__init__(global_weights)
        self._strategy = strategy
        self._x = global_weights
        self._t = round_number

    def _compute(self, spec: Spec) -> Weights:
        mean = self.mean()
        new = mean if self._x is None else self._strategy.step(self._x, mean, t=self._t)
        return {name: a.astype(spec[name][0], copy=False) for name, a in new.items()}


class FedAdam(FedOpt):
    name = "FedAdam"
    rule: Rule = "adam"
    DEFAULTS = {"eta": 1e-1, "eta_l": 1e-1, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-9}


class FedYogi(FedOpt):
    name = "FedYogi"
    rule: Rule = "yogi"
    DEFAULTS = {"eta": 1e-2, "eta_l": 0.0316, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}


class FedAdagrad(FedOpt):
    name = "FedAdagrad"
    rule: Rule = "adagrad"
    DEFAULTS = {"eta": 1e-1, "eta_l": 1e-1, "beta_1": 0.0, "beta_2": 0.0, "tau": 1e-9}


def _spec(weights: Weights) -> Spec:
    return {n: (a.dtype, tuple(a.shape)) for n, a in weights.items()}
