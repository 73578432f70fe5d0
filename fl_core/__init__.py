"""Federated learning core: the model store, aggregation strategies, the training runtime
that runs inside a Job, and the built-in digits example."""
