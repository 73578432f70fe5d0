"""What a user's training code implements to run in a federated round.

    class MyTrainer(TrainerBase):
        def init_weights(self, seed: int) -> Weights: ...          # round 1 without a model
        def train(self, weights, config, data):                       # -> (weights, n, metrics)
            ...
        def evaluate(self, weights, config, data):                    # -> (n, metrics)
            ...

`weights` are named float numpy arrays (read-only views of the global model: copy before
changing them in place). `config` holds the round's `training_config` plus `round`,
`seed`, `cluster`, `proximal_mu` (FedProx: add (mu/2)*||w - weights||^2 to the loss when
it is above 0). `data` is what `load_data` returned for the dataset folder ($FL_DATASET_PATH);
the default loads `train.npz` (arrays only, never pickles). Metrics are plain floats; they
are reported to the hub, which aggregates them across clusters.

Run it with `fl-train --trainer mypackage.module:MyTrainer` (a class is instantiated with no
arguments; an instance is used as is).

Record-level differential privacy (`spec.privacy.differentialPrivacy.level: Record`): the
runtime calls `train_dp(weights, config, data, dp)` instead of `train`, where `dp` is a
`fl_core.privacy.dp.dpsgd.DPRound`. Start it with the number of local examples, take its
batches and turn each batch's per-example gradients into a step with `privatize`:

        def train_dp(self, weights, config, data, dp):
            sgd = dp.start(len(data["y"]))
            for batch in sgd.batches():
                step = sgd.privatize(per_example_grads(weights, data, batch))
                ...                                          # weights -= lr * step
            return weights, len(data["y"]), {}

The runtime checks that every planned step was taken and reports the epsilon spent. A
trainer without `train_dp` fails such rounds (`DPNotSupported`); declare the support in the
job with `spec.privacy.differentialPrivacy.trainerSupport: true`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fl_contract.weights import Weights
from fl_core.privacy.dp.dpsgd import DPRound

Config = Mapping[str, float | int | str | bool]
TrainOutput = tuple[Weights, int, dict[str, float]]
EvalOutput = tuple[int, dict[str, float]]


@runtime_checkable
class Trainer(Protocol):
    def init_weights(self, seed: int) -> Weights:
        """The initial model every client builds identically from `seed`."""
        ...

    def load_data(self, path: Path | None) -> Any:
        """Load the local dataset from its folder (None when the round names no dataset)."""
        ...

    def train(self, weights: Weights, config: Config, data: Any) -> TrainOutput:
        """Train locally from `weights`; return new weights, examples seen, metrics."""
        ...

    def evaluate(self, weights: Weights, config: Config, data: Any) -> EvalOutput:
        """Evaluate `weights` on local data; return the number of examples and metrics."""
        ...


@runtime_checkable
class DPTrainer(Trainer, Protocol):
    def train_dp(self, weights: Weights, config: Config, data: Any, dp: DPRound) -> TrainOutput:
        """`train` with record-level DP-SGD from `dp` (see the module docstring)."""
        ...


class TrainerBase:
    """Defaults for the less interesting parts of `Trainer`."""

    data_file = "train.npz"

    def init_weights(self, seed: int) -> Weights:
        raise NotImplementedError(
            "this trainer has no init_weights(seed); give the job an initial model"
        )

    def load_data(self, path: Path | None) -> Any:
        if path is None:
            raise ValueError("this trainer needs a dataset, and the round names none")
        file = path / self.data_file
        if not file.is_file():
            raise ValueError(f"dataset file {file} does not exist")
        with np.load(file, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    def evaluate(self, weights: Weights, config: Config, data: Any) -> EvalOutput:
        return 0, {}
