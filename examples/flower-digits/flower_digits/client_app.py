"""The ClientApp (Flower's Message API)."""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flower_digits import task

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    new, examples, loss = task.train(
        task.from_record(msg.content["arrays"]),
        context,
        server_round=int(config["server-round"]),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
    )
    metrics = MetricRecord({"train_loss": loss, "num-examples": examples})
    return Message(RecordDict({"arrays": task.to_record(new), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    examples, metrics = task.evaluate(task.from_record(msg.content["arrays"]), context)
    record = MetricRecord({**metrics, "num-examples": examples})
    return Message(RecordDict({"metrics": record}), reply_to=msg)
