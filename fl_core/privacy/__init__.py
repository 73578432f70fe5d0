"""Privacy mechanisms for federated rounds: secure aggregation (`secagg`), so the hub
learns only the weighted sum of the participants' updates, never one update in clear."""
