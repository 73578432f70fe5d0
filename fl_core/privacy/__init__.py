"""Privacy protections of federated jobs: differential privacy and secure aggregation."""
