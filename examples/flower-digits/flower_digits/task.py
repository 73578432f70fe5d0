"""The model, the data of one partition and the local training, shared by both clients.

The task itself is `fl_core.examples.digits` (softmax regression, Dirichlet partitions,
5 epochs of SGD per round): the app adds only the Flower side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, Context

from fl_core.examples import digits

Arrays = dict[str, npt.NDArray[Any]]


def initial_arrays() -> ArrayRecord:
    """The first global model: W (64x10) and b (10), zeros."""
    return to_record(digits.init_weights())


def to_record(weights: Arrays) -> ArrayRecord:
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in weights.items()})


def from_record(record: ArrayRecord) -> Arrays:
    return {name: array.numpy() for name, array in record.items()}


def load_partition(context: Context) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """This node's share of the training split: partition `partition-id` of
    `num-partitions` (what Flower's simulation gives every node; on a cluster, its dataset
    catalogue entry's nodeConfig)."""
    partition_id = int(context.node_config["partition-id"])
    partitions = int(context.node_config["num-partitions"])
    x, y, _, _ = digits.load_split()
    index = digits.partition(y, clusters=partitions)[partition_id]
    return x[index], y[index]


def train(
    weights: Arrays, context: Context, *, server_round: int, proximal_mu: float = 0.0
) -> tuple[Arrays, int, float]:
    """Local SGD from `weights`; the new weights, the examples seen, the last epoch's loss."""
    x, y = load_partition(context)
    config = context.run_config
    new, loss = digits.local_train(
        weights,
        x,
        y,
        rng=digits.client_rng(server_round, int(context.node_config["partition-id"])),
        epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        learning_rate=float(config["learning-rate"]),
        proximal_mu=proximal_mu,
    )
    return new, len(y), loss


def evaluate(weights: Arrays, context: Context) -> tuple[int, dict[str, float]]:
    x, y = load_partition(context)
    return len(y), digits.evaluate_arrays(weights, x, y)
