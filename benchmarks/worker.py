"""One benchmark case in a fresh process (so its peak RSS is its own).

    python -m benchmarks.worker METHOD FOLDER N

METHOD: ours | flower | copy | paired | ingest. Prints one JSON object: seconds (best of the
repeats), peak_rss_mb, base_rss_mb (after imports, before any data).

ours:   with the global model held and the round begun (accumulator allocated, as the
        copy's target), read each update file into one reused buffer (untimed, as for
        copy), then timed: decode zero-copy + FedAvg `add` (validation, in-place fold),
        and `result()`.
flower: load every file into lists of arrays (untimed, what Flower expects), then timed:
        `flwr.server.strategy.aggregate.aggregate`.
copy:   as ours, but the timed part copies the decoded views into one preallocated buffer:
        the memory-bandwidth bound for touching the same bytes.
paired: ours and copy interleaved update by update in one process (the timings reported;
        ours and copy alone give each one's peak RSS).
ingest: the hub's path for one update (`fl_core.ingest`), all timed: read the file while a
        helper thread hashes it, decode zero-copy, validate, stage into a warm accumulator,
        commit once the sha256 matches; against `hashlib.sha256` over the same bytes
        already in memory.
"""

from __future__ import annotations

import hashlib
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fl_contract.weights import decode_weights
from fl_core.ingest import ingest_file
from fl_core.strategies import make_strategy

COUNTS_SEED = 1234


def _rss_mb() -> float:
    """Peak RSS of this process image (VmHWM). Not getrusage's ru_maxrss: Linux carries
    that over fork and exec, so it would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _files(folder: Path, n: int) -> list[Path]:
    return [folder / f"update-{i:03d}.safetensors" for i in range(n)]


def _counts(n: int) -> list[int]:
    rng = np.random.default_rng(COUNTS_SEED)
    return [int(c) for c in rng.integers(100, 10_000, size=n)]


def _read_into(path: Path, buffer: memoryview) -> memoryview:
    with path.open("rb", buffering=0) as handle:
        size = handle.readinto(buffer)
        if handle.read(1):
            raise RuntimeError(f"{path} is larger than the buffer")
    return buffer[:size]


def ours(folder: Path, n: int, repeats: int) -> float:
    files, counts = _files(folder, n), _counts(n)
    buffer = np.empty(max(p.stat().st_size for p in files), np.uint8).data
    # The hub holds the current global model and starts the round (allocating the
    # accumulator) before updates arrive, as the copy's target is allocated beforehand.
    global_model = {k: np.array(a) for k, a in decode_weights(files[0].read_bytes()).items()}
    best = float("inf")
    for _ in range(repeats):
        agg = make_strategy("FedAvg").begin_round(global_model, round_number=1)
        spent = 0.0
        for i, path in enumerate(files):
            data = _read_into(path, buffer)
            start = time.perf_counter()
            agg.add(decode_weights(data), num_examples=counts[i], client=str(i))
            spent += time.perf_counter() - start
        start = time.perf_counter()
        agg.result()
        spent += time.perf_counter() - start
        best = min(best, spent)
    return best


def copy(folder: Path, n: int, repeats: int) -> float:
    files = _files(folder, n)
    buffer = np.empty(max(p.stat().st_size for p in files), np.uint8).data
    first = decode_weights(_read_into(files[0], buffer))
    target = {k: np.zeros_like(a) for k, a in first.items()}
    for array in target.values():
        array.fill(0)  # touched, like the accumulator
    best = float("inf")
    for _ in range(repeats):
        spent = 0.0
        for path in files:
            data = _read_into(path, buffer)
            start = time.perf_counter()
            for name, array in decode_weights(data).items():
                np.copyto(target[name], array)
            spent += time.perf_counter() - start
        best = min(best, spent)
    return best


def paired(folder: Path, n: int, repeats: int) -> dict[str, float]:
    """ours and copy interleaved update by update (alternating which goes first), so both
    see the same cache state and the same load from other processes on the machine."""
    files, counts = _files(folder, n), _counts(n)
    buffer = np.empty(max(p.stat().st_size for p in files), np.uint8).data
    global_model = {k: np.array(a) for k, a in decode_weights(files[0].read_bytes()).items()}
    target = {k: np.zeros_like(a) for k, a in global_model.items()}
    for array in target.values():
        array.fill(0)
    best_ours = best_copy = float("inf")
    for _ in range(repeats):
        agg = make_strategy("FedAvg").begin_round(global_model, round_number=1)
        spent_ours = spent_copy = 0.0
        for i, path in enumerate(files):
            data = _read_into(path, buffer)
            for step in (0, 1) if i % 2 == 0 else (1, 0):
                start = time.perf_counter()
                if step == 0:
                    for name, array in decode_weights(data).items():
                        np.copyto(target[name], array)
                    spent_copy += time.perf_counter() - start
                else:
                    agg.add(decode_weights(data), num_examples=counts[i], client=str(i))
                    spent_ours += time.perf_counter() - start
        start = time.perf_counter()
        agg.result()
        spent_ours += time.perf_counter() - start
        best_ours, best_copy = min(best_ours, spent_ours), min(best_copy, spent_copy)
    return {"ours_s": best_ours, "copy_s": best_copy}


def flower(folder: Path, n: int, repeats: int) -> float:
    from flwr.server.strategy.aggregate import aggregate
    from safetensors.numpy import load_file

    counts = _counts(n)
    results: list[tuple[list[Any], int]] = []
    for i, path in enumerate(_files(folder, n)):
        tensors = load_file(str(path))
        results.append(([tensors[k] for k in sorted(tensors)], counts[i]))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        aggregate(results)
        best = min(best, time.perf_counter() - start)
    return best


def ingest(folder: Path, repeats: int) -> dict[str, float]:
    (path,) = _files(folder, 1)
    raw = path.read_bytes()
    expected = hashlib.sha256(raw).hexdigest()
    agg = make_strategy("FedAvg").begin_round(None, round_number=1)
    agg.add(decode_weights(raw), num_examples=1, client="warm")  # the accumulator exists
    best_ingest = best_sha = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        ingest_file(path, sha256=expected, aggregator=agg, num_examples=10, client=f"c{r}")
        best_ingest = min(best_ingest, time.perf_counter() - start)
        start = time.perf_counter()
        hashlib.sha256(raw).hexdigest()
        best_sha = min(best_sha, time.perf_counter() - start)
    if agg.accepted != repeats + 1:
        raise RuntimeError("an ingested update was not counted")
    return {"ingest_s": best_ingest, "sha256_s": best_sha}


def main(argv: list[str]) -> int:
    method, folder, n, repeats = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    base = _rss_mb()
    out: dict[str, float] = {}
    if method == "ingest":
        out.update(ingest(folder, repeats))
    elif method == "paired":
        out.update(paired(folder, n, repeats))
    else:
        out["seconds"] = {"ours": ours, "copy": copy, "flower": flower}[method](folder, n, repeats)
    out["peak_rss_mb"] = _rss_mb()
    out["base_rss_mb"] = base
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
