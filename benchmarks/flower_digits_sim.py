"""The digits reference task in Flower's own simulation (`flwr.simulation.run_simulation`).

    python -m benchmarks.flower_digits_sim [--clusters 3] [--rounds 10]

The same task as `make demo`: the model, the split and the local training of
`fl_core.examples.digits` (softmax regression, Dirichlet(0.5) partitions, 5 epochs of SGD
from the same per-client seeds), a `ClientApp` per node given partition `partition-id`,
FedAvg over every node in every round in a `ServerApp`, the global model evaluated on the
held-out test split after each round. Prints one JSON line: the accuracy after each
round, the final one, and the seconds of `run_simulation` and of the whole command.
Needs `flwr[simulation]` (Ray, Flower's simulation backend).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

STARTED = time.monotonic()

import numpy as np  # noqa: E402
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402

from fl_core.examples import digits  # noqa: E402

client_app = ClientApp()


def to_record(weights: dict[str, Any]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in weights.items()})


def from_record(record: ArrayRecord) -> dict[str, Any]:
    return {name: array.numpy() for name, array in record.items()}


def node_partition(context: Context) -> tuple[int, Any, Any]:
    """(index, x, y): this node's share, the one the demo's cluster of that index holds."""
    index = int(context.node_config["partition-id"])
    x, y, _, _ = digits.load_split()
    part = digits.partition(y, clusters=int(context.node_config["num-partitions"]))[index]
    return index, x[part], y[part]


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    index, x, y = node_partition(context)
    server_round = int(str(msg.content.config_records["config"]["server-round"]))
    arrays = from_record(msg.content.array_records["arrays"])
    new, loss = digits.local_train(arrays, x, y, rng=digits.client_rng(server_round, index))
    metrics = MetricRecord({"train_loss": loss, "num-examples": len(y)})
    return Message(RecordDict({"arrays": to_record(new), "metrics": metrics}), reply_to=msg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flower_digits_sim")
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    accuracies: list[float] = []

    def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        metrics = digits.evaluate_global(from_record(arrays))
        if server_round > 0:
            accuracies.append(metrics["accuracy"])
        return MetricRecord(dict(metrics.items()))

    server_app = ServerApp()

    @server_app.main()
    def _server(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0)
        strategy.start(
            grid=grid,
            initial_arrays=to_record(digits.init_weights()),
            num_rounds=args.rounds,
            evaluate_fn=global_evaluate,
        )

    started = time.monotonic()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=args.clusters)
    result = {
        "accuracies": [round(a, 4) for a in accuracies],
        "final_accuracy": accuracies[-1] if accuracies else None,
        "simulation_seconds": round(time.monotonic() - started, 3),
        "process_seconds": round(time.monotonic() - STARTED, 3),
    }
    print(json.dumps(result), flush=True)
    return 0 if len(accuracies) == args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
