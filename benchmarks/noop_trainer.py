"""A trainer that does (almost) nothing: the control-plane benchmark's client code.

It hands the global model back unchanged with one example, so a round's time is the time
the control plane (hub manager, agents, API servers, Job runner) takes around it. Used as
``fl-train --trainer benchmarks.noop_trainer:NoopTrainer`` (README, Bring your own code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fl_contract.weights import Weights
from fl_core.runtime.api import Config, EvalOutput, TrainerBase, TrainOutput


class NoopTrainer(TrainerBase):
    def init_weights(self, seed: int) -> Weights:
        return {"w": np.zeros(4, dtype=np.float32)}

    def load_data(self, path: Path | None) -> Any:
        return None  # no dataset is read

    def train(self, weights: Weights, config: Config, data: Any) -> TrainOutput:
        return dict(weights), 1, {}

    def evaluate(self, weights: Weights, config: Config, data: Any) -> EvalOutput:
        return 0, {}
