"""`python -m benchmarks --section secagg`: the cost of secure aggregation (SecAgg+) against
plain FedAvg over the same float32 updates, per round, clients simulated in this process.

For N = 3, 10, 50 clients of P = 1M parameters, with 0 % and 20 % of the clients dropping
after key sharing (the costly case: the hub rebuilds their masking keys and removes their
pairwise masks), and k = min(N - 1, 8) neighbours; for N = 50 also the default
k = 2 * ceil(log2 N) and full SecAgg (k = N - 1), to show that a client's cost follows k,
not N. Measured:

- client: seconds per client for each stage (mean over clients), bytes a surviving client
  sends and gets (plain FedAvg: P * 4 up);
- hub: seconds to sum the masked vectors as they arrive and to unmask (rebuild the seeds,
  remove the masks, dequantize, divide, cut into tensors), against our streaming FedAvg
  (`fl_core.strategies` FedAvg: `add` per update, then `result`) on the same updates;
- bytes the hub receives, against N * P * 4 for plain FedAvg;
- the share of rounds that cannot be unmasked at that dropout rate (too many of some
  client's neighbours gone), over random graphs and random dropped sets.

Each case simulates one round (client times: the mean over the clients), then replays the
hub's side `--repeats` times (default 5), each back to back with plain FedAvg: hub times are
the best of the repeats, "x plain" the median of the back-to-back ratios.
Results go to benchmarks/results/secagg.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import report as report_file
from fl_contract.weights import describe
from fl_core.privacy.secagg import (
    HubInputs,
    Layout,
    SecAggParams,
    add_masked,
    decode_masked,
    flatten,
    neighbours,
    new_sum,
    short_of_shares,
    simulate,
    unflatten,
    unmask,
)
from fl_core.strategies import make_strategy

RESULTS = Path(__file__).resolve().parent / "results" / "secagg.json"
PARAMS = 1_000_000
MAX_WEIGHT = 1000.0


def _cases(quick: bool) -> list[tuple[int, int, float]]:
    """(N, k, dropout fraction)."""
    cases: list[tuple[int, int, float]] = []
    for n in (3, 10) if quick else (3, 10, 50):
        ks = [min(n - 1, 8)]
        if n == 50:
            ks += [SecAggParams.for_participants(n).num_shares, n - 1]
        for k in ks:
            for drop in (0.0, 0.2):
                cases.append((n, k, drop))
    return cases


def _models(n: int, params: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    rng = np.random.default_rng(0)
    sizes = {"layer1.weight": params * 6 // 10, "layer2.weight": params * 3 // 10}
    sizes["layer3.weight"] = params - sum(sizes.values()) - 1000
    sizes["layer3.bias"] = 1000
    base = {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in sizes.items()}
    models = {
        f"cluster{i:02d}": {k: a + np.float32(i * 1e-3) for k, a in base.items()} for i in range(n)
    }
    examples = {name: float(rng.integers(100, int(MAX_WEIGHT))) for name in models}
    return models, examples


def _plain(models: dict[str, dict[str, np.ndarray]], examples: dict[str, float]) -> float:
    global_model = next(iter(models.values()))
    start = time.perf_counter()
    agg = make_strategy("FedAvg", {}).begin_round(global_model, round_number=1)
    for name, model in models.items():
        agg.add(model, num_examples=int(examples[name]), client=name)
    agg.result()
    return time.perf_counter() - start


def _hub(inputs: HubInputs, layout: Layout) -> tuple[float, float]:
    """(seconds to sum the masked uploads, seconds to unmask and cut the mean into tensors)."""
    start = time.perf_counter()
    acc = new_sum(inputs.params, inputs.length)
    for name in inputs.survivors:
        add_masked(acc, decode_masked(inputs.masked[name], inputs.params, inputs.length))
    summed = time.perf_counter()
    weighted, total = unmask(
        inputs.params,
        acc,
        inputs.revealed,
        inputs.survivors,
        inputs.dropped,
        inputs.public_keys,
        inputs.graph,
        inputs.context,
    )
    unflatten(weighted / total, layout)
    return summed - start, time.perf_counter() - summed


def _failure_rate(params: SecAggParams, n: int, drop: float, trials: int = 400) -> float:
    """The share of rounds that cannot be unmasked when round(n * drop) random clients drop
    after key sharing (every survivor reveals), over random graphs."""
    if not drop:
        return 0.0
    rng = np.random.default_rng(7)
    names = [f"cluster{i:02d}" for i in range(n)]
    failed = 0
    for trial in range(trials):
        graph = neighbours(names, params.num_shares, trial.to_bytes(4, "big"))
        gone = set(rng.choice(names, size=round(n * drop), replace=False).tolist())
        alive = [name for name in names if name not in gone]
        failed += bool(short_of_shares(params, graph, alive, sorted(gone), alive))
    return failed / trials


def _case(n: int, k: int, drop: float, repeats: int) -> dict[str, Any]:
    models, examples = _models(n, PARAMS)
    names = sorted(models)
    params = SecAggParams.for_participants(n, num_shares=k, max_weight=MAX_WEIGHT)
    gone = names[: round(n * drop)]
    alive = [name for name in names if name not in gone]
    layout = describe(models[names[0]])
    vectors = {name: flatten(m) for name, m in models.items()}
    sim = simulate(vectors, examples, params, drop_before_mask=gone, keep_hub_inputs=True)
    assert sim.hub_inputs is not None
    del vectors
    # The hub's side replayed `repeats` times, each back to back with plain FedAvg over the
    # same survivors' updates (same cache state, same load from the rest of the machine).
    sums, unmasks, plains, ratios = [], [], [], []
    for _ in range(repeats):
        summed, unmasked = _hub(sim.hub_inputs, layout)
        plain = _plain({a: models[a] for a in alive}, examples)
        sums.append(summed)
        unmasks.append(unmasked)
        plains.append(plain)
        ratios.append((summed + unmasked) / plain)
    client = {stage: float(np.mean(list(t.values()))) for stage, t in sim.client_seconds.items()}
    return {
        "n": n,
        "params": PARAMS,
        "k": k,
        "threshold": params.threshold,
        "dropout": drop,
        "dropped": len(gone),
        "round_failure_rate": _failure_rate(params, n, drop),
        "client_s": client,
        "client_total_s": sum(client.values()),
        "hub_sum_s": min(sums),
        "hub_unmask_s": min(unmasks),
        "hub_s": min(s + u for s, u in zip(sums, unmasks, strict=True)),
        "plain_hub_s": min(plains),
        # The median of the back-to-back ratios: robust to load that comes and goes.
        "hub_vs_plain": float(np.median(ratios)),
        # What one surviving client sends and gets, on average.
        "client_bytes_up": sim.bytes_up["keys"] / n
        + sim.bytes_up["share_keys"] / n
        + sim.bytes_up["mask"] / len(alive)
        + sim.bytes_up["reveal"] / len(sim.revealers),
        "client_bytes_down": sim.bytes_down["share_keys"] / n
        + sim.bytes_down["mask"] / len(alive)
        + sim.bytes_down["reveal"] / len(sim.revealers),
        "hub_bytes_in": sum(sim.bytes_up.values()),
        "plain_hub_bytes_in": len(alive) * PARAMS * 4,
    }


def run(*, quick: bool = False, repeats: int = 5) -> dict[str, Any]:
    small, small_examples = _models(2, 10_000)
    _plain(small, small_examples)  # one-time set-up (BLAS pinning) out of the first row
    started = time.perf_counter()
    load_at_start = list(os.getloadavg())
    rows: list[dict[str, Any]] = []
    for n, k, drop in _cases(quick):
        row = _case(n, k, drop, repeats)
        rows.append(row)
        print(_line(row), flush=True)
    return {
        "machine": report_file.machine(load_at_start),
        "seconds_total": round(time.perf_counter() - started, 1),
        "rows": rows,
    }


def _line(row: dict[str, Any]) -> str:
    def fix(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 4)
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    return json.dumps({k: fix(v) for k, v in row.items()})


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"{'N':>3} {'k':>3} {'t':>3} {'drop':>5} {'fail':>5} | {'mask s':>7} {'share s':>7} {'reveal s':>8} "
        f"{'up MB':>6} | {'hub sum s':>9} {'unmask s':>8} {'hub s':>7} {'plain s':>7} "
        f"{'x plain':>7} | {'hub in MB':>9} {'plain MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        c = r["client_s"]
        lines.append(
            f"{r['n']:>3} {r['k']:>3} {r['threshold']:>3} {r['dropout']:>5.0%} "
            f"{r['round_failure_rate']:>5.1%} | "
            f"{c['mask']:>7.4f} {c['share_keys']:>7.4f} {c['reveal']:>8.4f} "
            f"{r['client_bytes_up'] / 1e6:>6.2f} | {r['hub_sum_s']:>9.4f} {r['hub_unmask_s']:>8.4f} "
            f"{r['hub_s']:>7.4f} {r['plain_hub_s']:>7.4f} {r['hub_vs_plain']:>6.2f}x | "
            f"{r['hub_bytes_in'] / 1e6:>9.1f} {r['plain_hub_bytes_in'] / 1e6:>8.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.secagg", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N = 3 and 10 only")
    parser.add_argument("--repeats", type=int, default=5, help="hub replays per case")
    args = parser.parse_args(argv)
    report = run(quick=args.quick, repeats=args.repeats)
    report_file.write(RESULTS, report)
    print()
    print(table(report["rows"]))
    load = report["machine"]["load_average_at_start"][0]
    print(
        f"\nP = {PARAMS:,} float32 parameters (plain FedAvg: {PARAMS * 4 / 1e6:.2f} MB up per "
        f"client); k neighbours, t threshold; fail: rounds that cannot be unmasked at that "
        f"dropout (random graphs and dropouts); load average {load:.1f} at start on "
        f"{os.cpu_count()} CPUs"
    )
    print(f"written {RESULTS} in {report['seconds_total']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
