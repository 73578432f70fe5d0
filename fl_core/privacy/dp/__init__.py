"""Differential privacy: the accountant, DP-SGD for trainers, clipping and noise of updates.

`accountant` turns (noise multiplier, sampling rate, steps, delta) into epsilon with Google's
`dp-accounting`; `dpsgd` is record-level DP-SGD (Poisson-sampled batches, per-example
clipping, Gaussian noise) for trainers; `noise` is cluster-level clipping and noise of
whole updates, by the hub or spread over the clusters.
"""
