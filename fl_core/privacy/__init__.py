"""Privacy protections of federated jobs: secure aggregation (`secagg`: the hub learns only
the weighted sum of the participants' updates, never one in clear) and differential
privacy (`dp`: DP-SGD, clipping and noise, and the accountant)."""
