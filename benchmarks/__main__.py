"""`python -m benchmarks`: every section (``--section aggregation|control_plane`` for one;
the control plane's is benchmarks/control_plane.py). Aggregation: FedAvg aggregation (ours, Flower's, the copy bound) for
N = 10, 100 updates of P = 1M, 10M float32 parameters, and the ingest of one update.

Inputs are safetensors files written once to a temporary folder (set BENCH_TMPDIR to
choose it; 100 x 10M float32 is 4 GB) and read back from the page cache. Every method of
every case runs in a fresh process so that its peak RSS is its own. Results go to
benchmarks/results/aggregation.json and a table on stdout. The other sections are modules
of their own (`SECTIONS`); `--section NAME` runs one alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import control_plane, demo_vs_flower, hub_memory, privacy_utility, secagg
from benchmarks import report as report_file
from fl_contract.weights import encode_weights

RESULTS = Path(__file__).resolve().parent / "results" / "aggregation.json"
CASES = [(10, 1_000_000), (100, 1_000_000), (10, 10_000_000), (100, 10_000_000)]
INGEST_PARAMS = [1_000_000, 10_000_000]


def _layers(params: int) -> dict[str, int]:
    """A model-like split of P parameters over four tensors."""
    big, mid, bias = params * 6 // 10, params * 3 // 10, 1000
    return {
        "layer1.weight": big,
        "layer2.weight": mid,
        "layer3.weight": params - big - mid - bias,
        "layer3.bias": bias,
    }


def _write_updates(folder: Path, *, n: int, params: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = {k: rng.standard_normal(size).astype(np.float32) for k, size in _layers(params).items()}
    for i in range(n):
        path = folder / f"update-{i:03d}.safetensors"
        if path.exists():
            continue
        update = {k: a + np.float32(i * 1e-3) for k, a in base.items()}
        path.write_bytes(encode_weights(update))


def _run(method: str, folder: Path, n: int, repeats: int) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.worker", method, str(folder), str(n), str(repeats)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{method} n={n} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _available_mb() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().available) / 2**20
    except ImportError:
        return float("inf")


def _has_flower() -> bool:
    try:
        import flwr.server.strategy.aggregate  # noqa: F401
    except ImportError:
        return False
    return True


# Each section takes (quick, its own options: what follows `--section NAME` on the line).
SECTIONS: dict[str, Callable[[bool, list[str]], int]] = {
    "aggregation": lambda quick, rest: aggregation(quick=quick),
    "secagg": lambda quick, rest: secagg.main(["--quick"] if quick else []),
    "privacy_utility": lambda quick, rest: privacy_utility.main([]),
    "hub_memory": lambda quick, rest: hub_memory.main(
        rest or ["--clusters", "100" if quick else "1000"]
    ),
    "demo_vs_flower": lambda quick, rest: demo_vs_flower.main([]),
    "control_plane": lambda quick, rest: control_plane.main(
        rest or (["--sizes", "10,100"] if quick else [])
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        epilog="options after --section NAME go to that section (e.g. --section control_plane "
        "--sizes 10,100)",
    )
    parser.add_argument("--quick", action="store_true", help="the smaller cases only")
    parser.add_argument(
        "--section",
        choices=("all", *SECTIONS),
        default="all",
        help="one section (default: every one, in this order)",
    )
    args, rest = parser.parse_known_args()
    if rest and args.section == "all":
        parser.error(f"unrecognized arguments: {' '.join(rest)} (section options need --section)")
    names = list(SECTIONS) if args.section == "all" else [args.section]
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        failed |= SECTIONS[name](args.quick, rest)
        print()
    return failed


def aggregation(*, quick: bool) -> int:
    """FedAvg aggregation and ingest (see the module docstring)."""
    cases = [c for c in CASES if not quick or c[1] <= 1_000_000]
    flower_ok = _has_flower()
    root = Path(tempfile.mkdtemp(prefix="fl-bench-", dir=os.environ.get("BENCH_TMPDIR")))
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    load_at_start = list(os.getloadavg())
    try:
        for n, params in cases:
            folder = root / f"p{params}"
            _write_updates(folder, n=n, params=params)
            gb = n * params * 4 / 1e9
            repeats = 5 if gb <= 1.0 else 1
            row: dict[str, Any] = {
                "case": "aggregate",
                "n": n,
                "params": params,
                "input_gb": round(gb, 3),
            }
            # Timings from one process running ours and copy interleaved (same cache state,
            # same load from the rest of the machine); peaks from each alone.
            pair = _run("paired", folder, n, repeats)
            ours = _run("ours", folder, n, 1)
            cp = _run("copy", folder, n, 1)
            row.update(ours_s=pair["ours_s"], copy_s=pair["copy_s"])
            row.update(ours_alone_s=ours["seconds"], copy_alone_s=cp["seconds"])
            row.update(ours_peak_mb=ours["peak_rss_mb"], copy_peak_mb=cp["peak_rss_mb"])
            row.update(base_rss_mb=ours["base_rss_mb"])
            need_mb = 2.2 * gb * 1000 + 500
            if not flower_ok:
                row.update(flower_s=None, flower_peak_mb=None, note="flwr not installed")
            elif need_mb > _available_mb():
                row.update(
                    flower_s=None,
                    flower_peak_mb=None,
                    note=f"Flower skipped: needs ~{need_mb:.0f} MB",
                )
            else:
                fl = _run("flower", folder, n, repeats)
                row.update(flower_s=fl["seconds"], flower_peak_mb=fl["peak_rss_mb"])
            rows.append(row)
            print(_line(row), flush=True)
        for params in INGEST_PARAMS if not quick else INGEST_PARAMS[:1]:
            folder = root / f"p{params}"
            _write_updates(folder, n=1, params=params)
            result = _run("ingest", folder, 1, 9)
            row = {"case": "ingest", "n": 1, "params": params, **result}
            rows.append(row)
            print(_line(row), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report = {
        "machine": report_file.machine(load_at_start),
        "seconds_total": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    report_file.write(RESULTS, report)
    print()
    print(table(rows))
    print(f"\nload average {load_at_start[0]:.1f} at start on {os.cpu_count()} CPUs")
    print(f"written {RESULTS} in {report['seconds_total']} s")
    return 0


def _gbs(row: dict[str, Any], key: str) -> str:
    seconds = row.get(key)
    if not seconds:
        return "-"
    return f"{row['n'] * row['params'] * 4 / 1e9 / seconds:.1f}"


def _line(row: dict[str, Any]) -> str:
    return json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'N':>4} {'P':>6} | {'ours s':>8} {'flower s':>9} {'copy s':>8} | {'ours GB/s':>9} "
        f"{'flwr GB/s':>9} {'copy GB/s':>9} | {'x flower':>8} {'/ copy':>6} | "
        f"{'ours MB':>8} {'flwr MB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["case"] != "aggregate":
            continue
        speed = f"{r['flower_s'] / r['ours_s']:.1f}x" if r.get("flower_s") else "-"
        flower_s = f"{r['flower_s']:.4f}" if r.get("flower_s") else "-"
        flower_mb = f"{r['flower_peak_mb']:.0f}" if r.get("flower_peak_mb") else "-"
        lines.append(
            f"{r['n']:>4} {r['params'] // 1_000_000:>5}M | {r['ours_s']:>8.4f} {flower_s:>9} "
            f"{r['copy_s']:>8.4f} | {_gbs(r, 'ours_s'):>9} {_gbs(r, 'flower_s'):>9} "
            f"{_gbs(r, 'copy_s'):>9} | {speed:>8} {r['ours_s'] / r['copy_s']:>6.2f} | "
            f"{r['ours_peak_mb']:>8.0f} {flower_mb:>8}"
        )
    lines.append("")
    lines.append(
        f"{'ingest P':>10} | {'ingest s':>9} {'sha256 s':>9} | {'ingest/sha256 speed':>20}"
    )
    for r in rows:
        if r["case"] == "ingest":
            lines.append(
                f"{r['params'] // 1_000_000:>9}M | {r['ingest_s']:>9.4f} {r['sha256_s']:>9.4f} | "
                f"{r['sha256_s'] / r['ingest_s']:>19.0%}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
