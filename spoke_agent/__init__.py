"""The federated-learning add-on agent that runs in each managed cluster."""
