"""`python -m benchmarks --section privacy_utility`: what record-level DP costs on digits.

The reference task (3 clusters, Dirichlet partitions, FedAvg weighted by examples, 10
rounds, 5 local epochs of batch 32, learning rate 0.1) trained with the digits trainer's
own DP-SGD (`DigitsTrainer.train_dp`: Poisson batches at rate 32 / the cluster's samples,
per-example clipping, Gaussian noise), for several noise multipliers and without DP. Epsilon
at delta = 1e-5 is the largest of the clusters', from the same accountant as the hub's.
Noise is seeded (one generator per cluster and round) so the table is reproducible.
Results go to benchmarks/results/privacy_utility.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report as report_file
from fl_contract.weights import Weights
from fl_core.examples import digits
from fl_core.privacy.dp.accountant import Spent, spent_epsilon
from fl_core.privacy.dp.dpsgd import DPRound, DPSGDParameters

RESULTS = Path(__file__).resolve().parent / "results" / "privacy_utility.json"
CLUSTERS = 3
DELTA = 1e-5
CLIP = 1.0
NOISE_MULTIPLIERS = (0.7, 1.0, 2.0, 4.0)


def run_job(
    noise_multiplier: float | None, *, rounds: int = digits.ROUNDS, clip: float = CLIP
) -> dict[str, Any]:
    """One federated job in process; None: no DP (the reference loop's own training)."""
    x_train, y_train, _, _ = digits.load_split()
    parts = digits.partition(y_train, clusters=CLUSTERS)
    trainer = digits.DigitsTrainer()
    weights: Weights = digits.init_weights()
    spent = [Spent(0.0, 0) for _ in parts]
    accuracy: list[float] = []
    epsilon: list[float] = []
    for r in range(1, rounds + 1):
        models, counts = [], []
        for i, index in enumerate(parts):
            data = {"x": x_train[index], "y": y_train[index], "client_index": np.int64(i)}
            config = {"round": r, "client_index": i}
            if noise_multiplier is None:
                new, n, _ = trainer.train(weights, config, data)
            else:
                params = DPSGDParameters(
                    clip_norm=clip,
                    noise_multiplier=noise_multiplier,
                    batch_size=digits.BATCH_SIZE,
                    epochs=digits.LOCAL_EPOCHS,
                )
                dp = DPRound(params, rng=np.random.default_rng(1000 * r + i))
                new, n, _ = trainer.train_dp(weights, config, data, dp)
                assert dp.sgd is not None
                spent[i] = spent[i].then(dp.sgd.sampling_rate, dp.sgd.steps_taken)
            models.append(new)
            counts.append(n)
        total = sum(counts)
        weights = {
            k: np.asarray(sum(n * m[k] for n, m in zip(counts, models, strict=True))) / total
            for k in weights
        }
        accuracy.append(digits.evaluate_global(weights)["accuracy"])
        if noise_multiplier is not None:
            epsilon.append(
                max(spent_epsilon(s, noise_multiplier=noise_multiplier, delta=DELTA) for s in spent)
            )
    return {
        "noise_multiplier": noise_multiplier,
        "clip_norm": clip if noise_multiplier is not None else None,
        "epsilon": epsilon[-1] if epsilon else None,
        "final_accuracy": accuracy[-1],
        "accuracy_per_round": accuracy,
        "epsilon_per_round": epsilon,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'noise multiplier':>16} {'clip':>5} | {'epsilon (delta=1e-5)':>21} | {'accuracy':>8}"
    lines = [head, "-" * len(head)]
    for row in rows:
        noise = "no DP" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:g}"
        clip = "-" if row["clip_norm"] is None else f"{row['clip_norm']:g}"
        eps = "inf" if row["epsilon"] is None else f"{row['epsilon']:.2f}"
        lines.append(f"{noise:>16} {clip:>5} | {eps:>21} | {row['final_accuracy']:>8.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.privacy_utility")
    parser.add_argument("--rounds", type=int, default=digits.ROUNDS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_at_start = list(os.getloadavg())
    rows = [run_job(None, rounds=args.rounds)]
    rows += [run_job(z, rounds=args.rounds) for z in NOISE_MULTIPLIERS]
    report = {
        "task": (
            f"digits, {CLUSTERS} clusters (Dirichlet 0.5), FedAvg, {args.rounds} rounds, "
            f"{digits.LOCAL_EPOCHS} local epochs, batch {digits.BATCH_SIZE}, record-level DP-SGD"
        ),
        "delta": DELTA,
        "accountant": "RDP (dp-accounting), Poisson-subsampled Gaussian",
        "load_average_at_start": load_at_start,
        "seconds_total": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    report_file.write(RESULTS, report)
    print(table(rows))
    print(f"written {RESULTS} in {report['seconds_total']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
