"""The hub side of federated learning on OCM: add-on registration and the job controller."""
