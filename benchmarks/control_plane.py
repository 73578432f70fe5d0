"""`python -m benchmarks --section control_plane`: the control plane's cost per round for
N = 10, 100, 300 and 1,000 managed clusters.

Each N runs in a fresh process: a sandbox (light clusters above 20: see fl_sandbox.sandbox)
with its API servers, emulated OCM controllers, Job runners and one in-process agent per
cluster, RBAC and TLS on; the hub manager as its own process (``fl-hub-manager``), so its
CPU seconds and peak RSS are its own (psutil). The job trains with
``benchmarks.noop_trainer:NoopTrainer`` (the model back unchanged, one example), so what
is timed is the control plane around the training process. Per N:

- round overhead: a round's wall time (the hub's ``history[].durationSeconds``) minus its
  slowest training Job's own run time (the Job's ``completionTime - startTime`` as its
  agent reports it in the round report; whole seconds, as the API gives them);
- time from the job's creation to the first and to the last round spec delivered (the
  round-spec ConfigMap created on a cluster, from the clusters' request tallies);
- hub manager CPU seconds per round, its RSS when ready and its peak (VmHWM);
- API requests per cluster per round, by the hub manager and by the agents (hub and own
  cluster), and by verb/resource; bytes of request bodies written per round;
- the FederatedLearning object's size at the end, the load average, the sandbox's own
  start time, RSS, idle CPU and CPU per cluster and round (the emulation's cost: API
  servers, OCM controllers, Job runners and agents share this one process).

Results go to benchmarks/results/control_plane.json (rows of other sizes already there are
kept) and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from benchmarks import report as report_file

RESULTS: Final = Path(__file__).resolve().parent / "results" / "control_plane.json"
REPO: Final = Path(__file__).resolve().parent.parent
SIZES: Final = (10, 100, 300, 1000)
ROUNDS: Final = 3
TIME_LIMIT: Final = 1800.0  # seconds per N (start, rounds and clean-up)
MANAGER_USER: Final = "fl-hub-manager"
NAMESPACE: Final = "bench"
JOB: Final = "control-plane"
WRITES: Final = ("create", "update", "patch", "delete", "deletecollection")
TRAINER: Final = "benchmarks.noop_trainer:NoopTrainer"


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use whole numbers, e.g. 10,100") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use cluster counts of at least 1")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks --section control_plane", description=__doc__
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(SIZES),
        help="cluster counts, comma separated (default 10,100,300,1000)",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per size (default 3)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=TIME_LIMIT,
        help=f"seconds allowed per size; a size over it is recorded as such (default {TIME_LIMIT:.0f})",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="write cProfile statistics of the hub manager and of the sandbox process "
        "(during the job) to this folder: hub-manager-N.prof, sandbox-N.prof",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # one size, in this process
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        row = asyncio.run(
            _measure(args.one, rounds=args.rounds, limit=args.time_limit, profile=args.profile)
        )
        print(json.dumps(row), flush=True)
        return 0
    return run(args.sizes, rounds=args.rounds, limit=args.time_limit, profile=args.profile)


def run(
    sizes: list[int],
    *,
    rounds: int = ROUNDS,
    limit: float = TIME_LIMIT,
    profile: Path | None = None,
) -> int:
    """Measure each size in its own process; merge the rows into the results file."""
    started = time.perf_counter()
    load_at_start = list(os.getloadavg())
    rows: list[dict[str, Any]] = []
    for n in sizes:
        command = [sys.executable, "-m", "benchmarks.control_plane", "--one", str(n)]
        command += ["--rounds", str(rounds), "--time-limit", str(limit)]
        if profile is not None:
            command += ["--profile", str(profile.resolve())]
        try:
            proc = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=limit + 300
            )
            lines = proc.stdout.strip().splitlines()
            if proc.returncode == 0 and lines:
                row = json.loads(lines[-1])
            else:
                tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
                row = {"clusters": n, "error": f"exit {proc.returncode}: {tail[0][:300]}"}
        except subprocess.TimeoutExpired:
            row = {"clusters": n, "error": f"over {limit + 300:.0f}s"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    previous: list[dict[str, Any]] = []
    if RESULTS.is_file():
        with contextlib.suppress(ValueError, KeyError):
            previous = list(json.loads(RESULTS.read_text())["rows"])
    done = {row["clusters"] for row in rows}
    merged = sorted(
        [row for row in previous if row.get("clusters") not in done] + rows,
        key=lambda row: int(row["clusters"]),
    )
    report = {
        "machine": report_file.machine(load_at_start, memory_gib=round(_total_memory() / 2**30, 1)),
        "seconds_total": round(time.perf_counter() - started, 1),
        "rows": merged,
    }
    report_file.write(RESULTS, report)
    print()
    print(table(merged))
    print(f"\nwritten {RESULTS} in {report['seconds_total']} s")
    return 0


def _total_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


# -- one size --------------------------------------------------------------------------


class _Manager:
    """``fl-hub-manager`` as its own process, with its own hub identity."""

    def __init__(self, sandbox: Any, workdir: Path, profile: Path | None = None) -> None:
        import psutil

        kubeconfig = workdir / "hub-manager.kubeconfig"
        sandbox.hub.write_kubeconfig(kubeconfig, user=MANAGER_USER, groups=("system:masters",))
        command = [str(Path(sys.executable).with_name("fl-hub-manager"))]
        if profile is not None:  # written when it stops (SIGTERM is a clean stop)
            command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "hub_manager"]
        self.log = (workdir / "hub-manager.log").open("wb")
        self.proc = subprocess.Popen(
            [
                *command,
                "--kubeconfig",
                str(kubeconfig),
                "--no-leader-elect",
                "--metrics-bind-address",
                "0",
                "--no-addon-templates",
                "--file-store-root",
                str(sandbox.model_store_dir),
                "--log-level",
                "WARNING",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return self.rss_mb()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _tallies(sandbox: Any) -> tuple[Counter[tuple[str, str, str]], Counter[tuple[str, str, str]]]:
    """(requests, body bytes) by (side, who, verb, resource) over the hub and every cluster."""
    from fl_sandbox.sandbox import AGENT_SPOKE_USER

    requests: Counter[tuple[str, str, str]] = Counter()
    written: Counter[tuple[str, str, str]] = Counter()
    servers = [("hub", sandbox.hub)] + [("spoke", s) for s in sandbox.spokes.values()]
    for side, server in servers:
        for (user, verb, resource), count in server.tally.requests.items():
            who = _who(side, user, AGENT_SPOKE_USER)
            requests[(who, verb, resource)] += count
        for (user, verb, resource), size in server.tally.body_bytes.items():
            who = _who(side, user, AGENT_SPOKE_USER)
            written[(who, verb, resource)] += size
    return requests, written


def _who(side: str, user: str, agent_spoke_user: str) -> str:
    if side == "hub" and user == MANAGER_USER:
        return "manager"
    if side == "hub" and user.startswith("system:open-cluster-management:cluster:"):
        return "agent-hub"
    if side == "spoke" and user == agent_spoke_user:
        return "agent-spoke"
    return f"{side}-other"  # emulated OCM controllers, Job runners, this benchmark


def _delta(after: Counter[Any], before: Counter[Any]) -> Counter[Any]:
    return Counter({k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})


def _job_body(n: int, rounds: int) -> dict[str, Any]:
    from fl_kube import resources as r

    return {
        "apiVersion": r.FEDERATED_LEARNING.api_version,
        "kind": r.FEDERATED_LEARNING.kind,
        "metadata": {"name": JOB, "namespace": NAMESPACE},
        "spec": {
            "framework": "other",
            "server": {
                "rounds": rounds,
                "minAvailableClients": n,
                "roundTimeout": "30m",
                "strategy": {"name": "FedAvg"},
            },
            "client": {
                "image": "ocm-federated-learning/trainer:bench",
                "command": ["fl-train"],
                "args": ["--trainer", TRAINER],
                "placement": {"clusterSets": ["global"]},
            },
        },
    }


async def _settled(counter: Any, *, quiet: float, within: float) -> None:
    """Until ``counter()`` has not changed for ``quiet`` seconds (or ``within`` passed)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    last, since = counter(), loop.time()
    while loop.time() < end:
        await asyncio.sleep(0.25)
        now = counter()
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet:
            return


async def _measure(
    n: int, *, rounds: int, limit: float, profile: Path | None = None
) -> dict[str, Any]:
    import cProfile

    import psutil

    from fl_sandbox.cli import SHARED_CRD_DIR
    from fl_sandbox.sandbox import Sandbox

    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    workdir = Path(tempfile.mkdtemp(prefix="fl-bench-cp-", dir=os.environ.get("BENCH_TMPDIR")))
    me = psutil.Process()
    row: dict[str, Any] = {"clusters": n, "rounds": rounds}
    row["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    sandbox = Sandbox(
        workdir=workdir,
        clusters=n,
        crd_dirs=[SHARED_CRD_DIR] if SHARED_CRD_DIR.is_dir() else [],
        agents=True,
        datasets=False,
        authorize=True,
        tls=True,
        start_timeout=max(60.0, 1.0 * n),
    )
    manager: _Manager | None = None
    try:
        async with asyncio.timeout(limit):
            t0, cpu0 = time.perf_counter(), me.cpu_times()
            await sandbox.start()
            row["light"] = sandbox.light
            row["sandbox_start_s"] = round(time.perf_counter() - t0, 1)
            cpu1 = me.cpu_times()
            row["sandbox_start_cpu_s"] = round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1)
            # Idle: once the agents' start-up requests have settled, before the manager runs.
            await _settled(lambda: sum(_tallies(sandbox)[0].values()), quiet=3.0, within=limit / 4)
            idle_cpu0, idle_t0 = me.cpu_times(), time.perf_counter()
            await asyncio.sleep(10.0)
            idle_cpu1 = me.cpu_times()
            busy = idle_cpu1.user + idle_cpu1.system - idle_cpu0.user - idle_cpu0.system
            row["sandbox_idle_cpu_ms_per_s_per_cluster"] = round(
                busy / (time.perf_counter() - idle_t0) / n * 1000, 3
            )
            manager = _Manager(
                sandbox, workdir, profile / f"hub-manager-{n}.prof" if profile else None
            )
            # Ready: its start-up (add-on registration, each cluster's RBAC) has settled.
            await _settled(
                lambda: sum(
                    v for (u, _, _), v in sandbox.hub.tally.requests.items() if u == MANAGER_USER
                ),
                quiet=3.0,
                within=limit / 2,
            )
            row["sandbox_rss_mb"] = round(me.memory_info().rss / 2**20)
            row["manager_rss_mb_ready"] = round(manager.rss_mb(), 1)
            cpu_ready = manager.cpu_seconds()
            requests0, written0 = _tallies(sandbox)
            profiler = cProfile.Profile() if profile is not None else None
            if profiler is not None:
                profiler.enable()
            job_cpu0 = me.cpu_times()
            await _run_job(sandbox, n=n, rounds=rounds, row=row, manager=manager)
            job_cpu1 = me.cpu_times()
            # The emulation's own cost (API servers, OCM controllers, Job runners, agents).
            row["sandbox_cpu_ms_per_cluster_round"] = round(
                (job_cpu1.user + job_cpu1.system - job_cpu0.user - job_cpu0.system)
                / (n * rounds)
                * 1000,
                1,
            )
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(profile / f"sandbox-{n}.prof")
            requests1, written1 = _tallies(sandbox)
            row["manager_cpu_s_per_round"] = round((manager.cpu_seconds() - cpu_ready) / rounds, 2)
            row["manager_rss_mb_peak"] = round(manager.peak_rss_mb(), 1)
            row["manager_rss_kb_per_cluster_above_ready"] = round(
                (row["manager_rss_mb_peak"] - row["manager_rss_mb_ready"]) * 1024 / n, 1
            )
            _requests_row(row, _delta(requests1, requests0), _delta(written1, written0), n, rounds)
    except Exception as exc:  # recorded with how far it got
        row["error"] = (
            f"not done within the time limit of {limit:.0f}s"
            if isinstance(exc, TimeoutError)
            else f"{type(exc).__name__}: {str(exc)[:300]}"
        )
        if manager is not None:
            row["manager_rss_mb_peak"] = round(manager.peak_rss_mb(), 1)
            row["manager_cpu_s_total"] = round(manager.cpu_seconds(), 1)
    finally:
        if manager is not None:
            manager.stop()
        row["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        await sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return row


async def _run_job(
    sandbox: Any, *, n: int, rounds: int, row: dict[str, Any], manager: _Manager
) -> None:
    """Create the job; follow it to Completed, recording when round specs reach clusters."""
    from fl_kube import Conflict
    from fl_kube import resources as r

    hub = sandbox.hub_api
    with contextlib.suppress(Conflict):
        await hub.create(r.NAMESPACE, {"metadata": {"name": NAMESPACE}})

    def specs_delivered() -> int:  # round-spec ConfigMaps the work agents created
        return sum(
            s.tally.requests.get(("admin", "create", "configmaps"), 0)
            for s in sandbox.spokes.values()
        )

    before = specs_delivered()
    created = time.perf_counter()
    await hub.create(r.FEDERATED_LEARNING, _job_body(n, rounds), namespace=NAMESPACE)
    first = last = None
    slowest: dict[int, float] = {}
    round_cpu: list[float] = []
    cpu_mark = manager.cpu_seconds()
    done_rounds = polls = 0
    while True:
        delivered = specs_delivered() - before
        if first is None and delivered >= 1:
            first = time.perf_counter() - created
            row["first_spec_delivered_s"] = round(first, 2)
        if last is None and delivered >= n:
            last = time.perf_counter() - created
            row["all_specs_delivered_s"] = round(last, 2)
        obj = await hub.get(r.FEDERATED_LEARNING, JOB, namespace=NAMESPACE)
        status = obj.get("status") or {}
        history = status.get("history") or []
        polls += 1
        # Reports are overwritten by the next round's: read them while the round runs (a
        # list of every add-on, so less often in large fleets).
        if first is not None and polls % (1 if n <= 100 else 16) == 0:
            await _reported_runs(hub, slowest)
        row["rounds_done"] = len(history)
        while done_rounds < len(history):
            done_rounds += 1
            now_cpu = manager.cpu_seconds()
            round_cpu.append(round(now_cpu - cpu_mark, 2))
            cpu_mark = now_cpu
        if status.get("phase") in ("Completed", "Failed"):
            await _reported_runs(hub, slowest)
            break
        await asyncio.sleep(0.2 if last is None else 0.5)
    row["job_wall_s"] = round(time.perf_counter() - created, 1)
    row["phase"] = status.get("phase")
    if status.get("phase") == "Failed":
        row["message"] = str(status.get("message") or "")[:300]
    row["first_spec_delivered_s"] = None if first is None else round(first, 2)
    row["all_specs_delivered_s"] = None if last is None else round(last, 2)
    row["manager_cpu_s_by_round"] = round_cpu
    row["round_wall_s"] = [float(e.get("durationSeconds") or 0) for e in history]
    row["round_accepted"] = [int(e.get("accepted") or 0) for e in history]
    row["status_bytes"] = len(json.dumps(obj, separators=(",", ":")).encode())
    job_s = [slowest.get(i + 1) for i in range(len(history))]
    row["slowest_job_s"] = job_s
    row["round_overhead_s"] = [
        round(wall - job, 2) if job is not None else None
        for wall, job in zip(row["round_wall_s"], job_s, strict=True)
    ]


def _requests_row(
    row: dict[str, Any],
    requests: Counter[tuple[str, str, str]],
    written: Counter[tuple[str, str, str]],
    n: int,
    rounds: int,
) -> None:
    per = float(n * rounds)
    by_who: Counter[str] = Counter()
    for (who, _verb, _res), count in requests.items():
        by_who[who] += count
    row["requests_per_cluster_round"] = {k: round(v / per, 2) for k, v in sorted(by_who.items())}
    detail: dict[str, dict[str, float]] = {}
    for (who, verb, res), count in sorted(requests.items(), key=lambda kv: -kv[1]):
        if who.endswith("-other") or count / per < 0.05:
            continue
        detail.setdefault(who, {})[f"{verb} {res or '(discovery)'}"] = round(count / per, 2)
    row["requests_per_cluster_round_by_verb"] = detail
    bytes_by_who: Counter[str] = Counter()
    for (who, verb, _res), size in written.items():
        if verb in WRITES:
            bytes_by_who[who] += size
    row["bytes_written_per_round"] = {k: v // rounds for k, v in sorted(bytes_by_who.items())}


async def _reported_runs(hub: Any, slowest: dict[int, float]) -> None:
    """Each round's slowest training Job run, from the agents' round reports on the hub
    (the Job's startTime to completionTime, whole seconds as the API gives them)."""
    from fl_contract import keys
    from fl_contract.models import RoundReport
    from fl_kube import resources as r

    listed = await hub.list(r.MANAGED_CLUSTER_ADDON)
    for mca in listed.items:
        for condition in (mca.get("status") or {}).get("conditions") or []:
            if not str(condition.get("type", "")).startswith(keys.ROUND_CONDITION_PREFIX):
                continue
            try:
                report = RoundReport.from_message(str(condition.get("message") or ""))
            except ValueError:
                continue
            if report.started_at is None or report.finished_at is None:
                continue
            seconds = (report.finished_at - report.started_at).total_seconds()
            slowest[report.round] = max(slowest.get(report.round, 0.0), seconds)


# -- output ----------------------------------------------------------------------------


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return sum(numbers) / len(numbers) if numbers else None


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'N':>5} | {'start s':>7} | {'round s':>7} {'ovh s':>6} | {'1st spec':>8} "
        f"{'all spec':>8} | {'mgr cpu/r':>9} {'mgr MB':>7} {'KB/cl':>6} | {'hub/cl/r':>8} "
        f"{'ag-hub':>6} {'ag-spk':>6} | {'KB wr/r':>8} | {'status KB':>9} | {'load':>5}"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        req = row.get("requests_per_cluster_round") or {}
        written = sum((row.get("bytes_written_per_round") or {}).values()) / 1024
        lines.append(
            f"{row['clusters']:>5} | {_fmt(row.get('sandbox_start_s'), '.0f'):>7} | "
            f"{_fmt(_mean(row.get('round_wall_s') or [])):>7} "
            f"{_fmt(_mean(row.get('round_overhead_s') or [])):>6} | "
            f"{_fmt(row.get('first_spec_delivered_s')):>8} "
            f"{_fmt(row.get('all_specs_delivered_s')):>8} | "
            f"{_fmt(row.get('manager_cpu_s_per_round')):>9} "
            f"{_fmt(row.get('manager_rss_mb_peak'), '.0f'):>7} "
            f"{_fmt(row.get('manager_rss_kb_per_cluster_above_ready'), '.0f'):>6} | "
            f"{_fmt(req.get('manager')):>8} {_fmt(req.get('agent-hub')):>6} "
            f"{_fmt(req.get('agent-spoke')):>6} | {written:>8.0f} | "
            f"{(row.get('status_bytes') or 0) / 1024:>9.1f} | "
            f"{_fmt((row.get('load_average_at_end') or [None])[0], '.1f'):>5}"
            + (f"  ({row['error']})" if row.get("error") else "")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
