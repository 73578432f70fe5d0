"""The same client as a legacy NumPyClient (`client_fn`), as older Flower apps are written.

The model travels as a list: [W, b].
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context
from flwr.client import Client, NumPyClient
from flwr.clientapp import ClientApp

from fl_core.examples import digits
from flower_digits import task


class DigitsClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context

    def get_parameters(self, config: dict[str, Any]) -> list[Any]:
        weights = digits.init_weights()
        return [weights["W"], weights["b"]]

    def fit(
        self, parameters: list[Any], config: dict[str, Any]
    ) -> tuple[list[Any], int, dict[str, Any]]:
        new, examples, loss = task.train(
            {"W": parameters[0], "b": parameters[1]},
            self.context,
            server_round=int(config["server-round"]),
            proximal_mu=float(config.get("proximal_mu", 0.0)),
        )
        return [new["W"], new["b"]], examples, {"train_loss": loss}

    def evaluate(
        self, parameters: list[Any], config: dict[str, Any]
    ) -> tuple[float, int, dict[str, Any]]:
        examples, metrics = task.evaluate({"W": parameters[0], "b": parameters[1]}, self.context)
        return metrics["loss"], examples, {"accuracy": metrics["accuracy"]}


def client_fn(context: Context) -> Client:
    return DigitsClient(context).to_client()


app = ClientApp(client_fn=client_fn)
