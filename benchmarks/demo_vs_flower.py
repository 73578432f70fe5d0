"""`make demo` against Flower's simulation of the same task, paired on this machine.

    python -m benchmarks --section demo_vs_flower [--pairs 3]

Ours: the installed demo command, `fl-sandbox demo --clusters 3 --rounds 10`, end to end
(its own process: start, the sandbox, the job, the report, shutdown). Flower's:
`python -m benchmarks.flower_digits_sim`, the same task in `flwr.simulation.run_simulation`
(see that module). The two alternate, ours first, `--pairs` times; each run's wall time is
measured around the command, and its CPU time (user + sys) both as `getrusage(RUSAGE_CHILDREN)`
counts it and by polling its process tree (see `_timed`; the larger is reported). The
medians, their ratios, both final accuracies and whether our final model is the reference
one go to benchmarks/results/demo_vs_flower.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report as report_file

RESULTS = Path(__file__).resolve().parent / "results" / "demo_vs_flower.json"
REFERENCE_SHA256 = "3f44ca9ce7f9d543204510619ad00d4946dca72c70d612ff80b99e0a4bdf22e4"
CLUSTERS, ROUNDS = 3, 10


def _timed(argv: list[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall and CPU seconds of one command run to completion, and its stdout.

    ``cpu_s``: user + sys that ``getrusage(RUSAGE_CHILDREN)`` counts (the command and the
    descendants it waited for). ``cpu_polled_s``: every descendant seen alive by a poll
    every 0.1 s, its last user + sys (catches daemons nobody waits for, such as Ray's;
    misses processes that live less than a poll). ``cpu_max_s`` is the larger: both are
    lower bounds of the true total.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        polled = _poll_cpu(proc)
        returncode = proc.wait()
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(argv[:3])} ... exited {returncode}: {tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_polled_s": round(polled, 3),
        "cpu_max_s": round(max(cpu, polled), 3),
        "stdout": stdout,
    }


def _poll_cpu(proc: subprocess.Popen[bytes]) -> float:
    """Sum of the last CPU times seen of ``proc`` and every descendant, until it exits."""
    try:
        import psutil
    except ImportError:
        proc.wait()
        return 0.0
    seen: dict[tuple[int, float], float] = {}
    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return 0.0
    while proc.poll() is None:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for member in family:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                seen[(member.pid, member.create_time())] = times.user + times.system
        time.sleep(0.1)
    return sum(seen.values())


def run_ours(output: Path) -> dict[str, Any]:
    demo = Path(sys.executable).parent / "fl-sandbox"
    argv = [str(demo), "demo", "--clusters", str(CLUSTERS), "--rounds", str(ROUNDS)]
    timed = _timed([*argv, "--output", str(output)])
    del timed["stdout"]
    summary = json.loads((output / "summary.json").read_text())
    return {
        **timed,
        "final_accuracy": summary["final_accuracy"],
        "model_sha256": summary["model_sha256"],
    }


def run_flower() -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.flower_digits_sim"]
    argv += ["--clusters", str(CLUSTERS), "--rounds", str(ROUNDS)]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    timed = _timed(argv, env=env)
    result = json.loads(timed.pop("stdout").strip().splitlines()[-1])
    return {
        **timed,
        "final_accuracy": result["final_accuracy"],
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(float(run[key]) for run in runs)), 3)


def run(pairs: int = 3) -> dict[str, Any]:
    ours: list[dict[str, Any]] = []
    flower: list[dict[str, Any]] = []
    load_at_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="fl-bench-demo-") as scratch:
        for pair in range(pairs):
            ours.append(run_ours(Path(scratch) / f"demo-{pair}"))
            print(f"pair {pair + 1}: ours   {json.dumps(ours[-1])}", flush=True)
            flower.append(run_flower())
            print(f"pair {pair + 1}: flower {json.dumps(flower[-1])}", flush=True)
    report = {
        "task": f"digits, {CLUSTERS} clients, Dirichlet(0.5), {ROUNDS} rounds of FedAvg",
        "ours_command": "fl-sandbox demo --clusters 3 --rounds 10",
        "flower_command": "python -m benchmarks.flower_digits_sim (run_simulation, Ray)",
        "pairs": pairs,
        "ours_wall_s": _median(ours, "wall_s"),
        "flower_wall_s": _median(flower, "wall_s"),
        "ours_cpu_s": _median(ours, "cpu_max_s"),
        "flower_cpu_s": _median(flower, "cpu_max_s"),
        "ours_cpu_rusage_s": _median(ours, "cpu_s"),
        "flower_cpu_rusage_s": _median(flower, "cpu_s"),
        "ours_cpu_polled_s": _median(ours, "cpu_polled_s"),
        "flower_cpu_polled_s": _median(flower, "cpu_polled_s"),
        "ours_final_accuracy": ours[-1]["final_accuracy"],
        "flower_final_accuracy": flower[-1]["final_accuracy"],
        "ours_model_sha256_is_reference": all(r["model_sha256"] == REFERENCE_SHA256 for r in ours),
        "runs": {"ours": ours, "flower": flower},
        "machine": report_file.machine(load_at_start),
    }
    report["wall_ratio"] = round(report["ours_wall_s"] / report["flower_wall_s"], 3)
    report["cpu_ratio"] = round(report["ours_cpu_s"] / max(report["flower_cpu_s"], 1e-9), 3)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.demo_vs_flower", description=__doc__
    )
    parser.add_argument("--pairs", type=int, default=3, help="alternating runs of each (default 3)")
    args = parser.parse_args(argv)
    report = run(pairs=args.pairs)
    report_file.write(RESULTS, report)
    print(
        f"demo {report['ours_wall_s']} s wall, {report['ours_cpu_s']} CPU-s; Flower "
        f"{report['flower_wall_s']} s wall, {report['flower_cpu_s']} CPU-s; wall ratio "
        f"{report['wall_ratio']}, CPU ratio {report['cpu_ratio']} (medians of {args.pairs}, "
        f"load {report['machine']['load_average_at_start'][0]:.1f} on "
        f"{report['machine']['cpus']} CPUs); accuracy {report['ours_final_accuracy']:.4f} vs "
        f"{report['flower_final_accuracy']:.4f}"
    )
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
