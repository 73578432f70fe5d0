"""The ServerApp Flower's own runtime uses (`flwr run .`): FedAvg over every node, the
global model evaluated on the held-out test split after each round."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fl_core.examples import digits
from flower_digits import task

app = ServerApp()


def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    metrics = digits.evaluate_global(task.from_record(arrays))
    print(f"round {server_round}: test accuracy {metrics['accuracy']:.4f}", flush=True)
    return MetricRecord(metrics)


@app.main()
def main(grid: Grid, context: Context) -> None:
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0)
    strategy.start(
        grid=grid,
        initial_arrays=task.initial_arrays(),
        num_rounds=int(context.run_config["num-server-rounds"]),
        evaluate_fn=global_evaluate,
    )
