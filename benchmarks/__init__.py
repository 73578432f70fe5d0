"""Benchmarks (`make bench`): FedAvg aggregation against Flower and the memory bound, and
the hub's ingest of one update against plain sha256."""
