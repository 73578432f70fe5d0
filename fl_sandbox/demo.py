"""`fl-sandbox demo`: the reference federated job, end to end, on a local fleet.

Starts the sandbox (a hub and N managed clusters, the hub manager and one agent per
cluster, all in this process), lets the add-on install the way an admin installs it, waits
for every cluster's `digits` dataset claim to reach the hub, applies
`deploy/samples/digits-fedavg.yaml` (adjusted by the options) through the API, and follows
the FederatedLearning object to Completed. Everything goes through the API servers, as on
a real hub; the outputs land in `--output` (summary.json, accuracy.png).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import yaml

from fl_contract import keys, naming
from fl_kube import Conflict, Gone, KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.demo_progress import JobState, Progress
from fl_sandbox.demo_report import (
    format_table,
    load_pyplot,
    plot_privacy,
    plot_rounds,
    rounds_from_history,
    summary_document,
    write_summary,
)

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SAMPLE: Final = REPO_ROOT / "deploy" / "samples" / "digits-fedavg.yaml"
PROG: Final = "fl-sandbox demo"
EXIT_USAGE: Final = 2
EXIT_FAILED: Final = 1
NAMESPACE: Final = "default"  # where `kubectl apply -f` would put the sample
FIELD_MANAGER: Final = "fl-sandbox-demo"
DATASET: Final = "digits"
MAX_CLUSTERS: Final = 100  # above 20 the sandbox's clusters are light
MAX_ROUNDS: Final = 100
DEFAULT_PARTITION: Final = "dirichlet"
DEFAULT_ALPHA: Final = 0.5
# Parameters a strategy cannot do without (the others have defaults in fl_core).
REQUIRED_PARAMETERS: Final[dict[str, dict[str, float]]] = {"FedProx": {"proximalMu": 0.01}}
# Krum keeps n - f - 2 > 0 updates: with f = 0 it needs three clusters.
MIN_CLUSTERS: Final = {"Krum": 3, "MultiKrum": 3}


class UsageError(Exception):
    """An invalid option: one line naming it and what to do; exit 2."""


DP_DELTA = 1e-5


class DemoError(Exception):
    """The demo could not finish (the job failed, or did not complete in time); exit 1."""


@dataclass(frozen=True)
class DemoOptions:
    clusters: int
    rounds: int
    strategy: str
    partition: str
    alpha: float
    output: Path
    timeout: float
    # Record-level DP (None: off): noise multiplier, clip norm, budget.
    dp_noise_multiplier: float | None = None
    dp_clip: float = 1.0
    dp_max_epsilon: float | None = None


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (the CLI registers the `demo` subcommand with these)."""
    parser.add_argument("--clusters", type=int, default=3, help="managed clusters (default 3)")
    parser.add_argument("--rounds", type=int, default=10, help="federated rounds (default 10)")
    parser.add_argument(
        "--strategy", default="FedAvg", help="aggregation strategy (default FedAvg)"
    )
    parser.add_argument(
        "--partition",
        default=DEFAULT_PARTITION,
        help="how the digits training split is shared out: dirichlet (default) or iid",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help=f"Dirichlet concentration, with --partition dirichlet (default {DEFAULT_ALPHA})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        help="folder for summary.json, accuracy.png and the sandbox (default demo-output)",
    )
    parser.add_argument(
        "--dp-noise-multiplier",
        type=float,
        default=None,
        help="train with record-level differential privacy (DP-SGD) at this noise multiplier",
    )
    parser.add_argument(
        "--dp-clip",
        type=float,
        default=None,
        help="with --dp-noise-multiplier: per-example gradient clip norm (default 1.0)",
    )
    parser.add_argument(
        "--dp-max-epsilon",
        type=float,
        default=None,
        help="with --dp-noise-multiplier: the budget at delta 1e-5; the job stops before it",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="give up when the job has not completed after this many seconds (default 600)",
    )


def options_from(args: argparse.Namespace) -> DemoOptions:
    """Check every option; UsageError names the first bad one and what to do."""
    from fl_core.strategies import STRATEGY_NAMES

    clusters, rounds = int(args.clusters), int(args.rounds)
    if not 1 <= clusters <= MAX_CLUSTERS:
        raise UsageError(f"--clusters {clusters}: use a number from 1 to {MAX_CLUSTERS}")
    if not 1 <= rounds <= MAX_ROUNDS:
        raise UsageError(f"--rounds {rounds}: use a number from 1 to {MAX_ROUNDS}")
    strategy = str(args.strategy)
    if strategy not in STRATEGY_NAMES:
        raise UsageError(f"--strategy {strategy}: unknown; use one of {', '.join(STRATEGY_NAMES)}")
    if clusters < MIN_CLUSTERS.get(strategy, 1):
        raise UsageError(
            f"--strategy {strategy} needs at least {MIN_CLUSTERS[strategy]} clusters; "
            f"raise --clusters"
        )
    partition = str(args.partition)
    if partition not in ("dirichlet", "iid"):
        raise UsageError(f"--partition {partition}: use dirichlet or iid")
    alpha = DEFAULT_ALPHA if args.alpha is None else float(args.alpha)
    if args.alpha is not None and partition != "dirichlet":
        raise UsageError("--alpha applies to --partition dirichlet only; drop it for iid")
    if not (math.isfinite(alpha) and alpha > 0):
        raise UsageError(f"--alpha {args.alpha}: use a positive number, e.g. 0.5")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: exists and is not a folder; choose another path")
    timeout = float(args.timeout)
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout {args.timeout}: use a positive number of seconds")
    dp = _dp_options(args)
    return DemoOptions(
        dp_noise_multiplier=dp[0],
        dp_clip=dp[1],
        dp_max_epsilon=dp[2],
        clusters=clusters,
        rounds=rounds,
        strategy=strategy,
        partition=partition,
        alpha=alpha,
        output=output,
        timeout=timeout,
    )


def _dp_options(args: argparse.Namespace) -> tuple[float | None, float, float | None]:
    noise = getattr(args, "dp_noise_multiplier", None)
    clip = getattr(args, "dp_clip", None)
    budget = getattr(args, "dp_max_epsilon", None)
    if noise is None:
        if clip is not None or budget is not None:
            raise UsageError("--dp-clip and --dp-max-epsilon need --dp-noise-multiplier")
        return None, 1.0, None
    for flag, value in (
        ("--dp-noise-multiplier", noise),
        ("--dp-clip", clip),
        ("--dp-max-epsilon", budget),
    ):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"{flag} {value}: use a positive number, e.g. 1.0")
    return float(noise), float(clip if clip is not None else 1.0), budget


async def run_demo(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Run the demo; 0 when the job completed, 1 when it did not, 2 for bad options."""
    try:
        options = options_from(args)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        await run(options, out=out or sys.stdout)
    except DemoError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


async def run(options: DemoOptions, *, out: TextIO) -> dict[str, Any]:
    """The whole demo; returns the summary it wrote."""
    from fl_sandbox.sandbox import Sandbox

    started = time.monotonic()
    progress = Progress(out)
    output = options.output.resolve()
    workdir = output / "sandbox"
    await asyncio.to_thread(shutil.rmtree, workdir, True)
    output.mkdir(parents=True, exist_ok=True)

    progress.step(f"Starting a hub and {options.clusters} managed clusters in {workdir}")
    sandbox = Sandbox(
        workdir=workdir,
        clusters=options.clusters,
        hub_manager=True,
        agents=True,
        start_timeout=max(30.0, float(options.clusters)),
    )
    async with sandbox:
        hub = sandbox.hub_api
        assert hub is not None
        namespaces = sorted({sandbox.agent_namespace(c) for c in sandbox.cluster_names})
        progress.step(
            f"Add-on {keys.ADDON_NAME} enabled on {', '.join(sandbox.cluster_names)} "
            f"(agents in {', '.join(namespaces)})"
        )
        counts: dict[str, int] | None = None
        if (options.partition, options.alpha) != (DEFAULT_PARTITION, DEFAULT_ALPHA):
            counts = await _repartition(sandbox, options)
        samples = await _wait_for_claims(
            hub, sandbox.cluster_names, within=options.timeout, counts=counts
        )
        # What start-up built (modules, servers, controllers) lives until exit: the garbage
        # collector's full sweeps during the job need not walk it again and again.
        gc.freeze()
        progress.step(
            "Dataset claims on the hub: "
            + ", ".join(f"{c} {DATASET} ({samples[c]})" for c in sandbox.cluster_names)
        )
        job = _job(options)
        name = str(job["metadata"]["name"])
        await _ensure_namespace(hub, NAMESPACE)
        await hub.apply(r.FEDERATED_LEARNING, job, field_manager=FIELD_MANAGER)
        progress.step(
            f"Applied FederatedLearning {NAMESPACE}/{name}: {options.strategy}, "
            f"{options.rounds} rounds over {options.clusters} clusters"
        )
        # The report's own work (the baseline, loading matplotlib) runs while the job does:
        # the loop mostly waits for the clusters' training Jobs meanwhile.
        baseline = asyncio.ensure_future(asyncio.to_thread(_report_ahead, options.rounds))
        try:
            final = await _follow_in_time(
                hub, name=name, options=options, progress=progress, started=started
            )
        except BaseException:
            baseline.cancel()
            raise
    progress.finish()
    return await _report(
        options, final=final, out=out, output=output, started=started, baseline=await baseline
    )


async def _follow_in_time(
    hub: KubeApi, *, name: str, options: DemoOptions, progress: Progress, started: float
) -> dict[str, Any]:
    """The completed job; DemoError when it failed or missed ``--timeout``."""
    remaining = options.timeout - (time.monotonic() - started)
    try:
        async with asyncio.timeout(max(remaining, 1.0)):
            return await _follow(hub, name=name, rounds=options.rounds, progress=progress)
    except TimeoutError:
        latest = await hub.get(r.FEDERATED_LEARNING, name, namespace=NAMESPACE)
        raise DemoError(
            f"FederatedLearning {NAMESPACE}/{name} did not complete within "
            f"{options.timeout:.0f}s ({_where(latest)}); raise --timeout, or run "
            "`fl-sandbox up` and look at `kubectl get fl -o yaml`"
        ) from None


def _report_ahead(rounds: int) -> float:
    """The centralised baseline's accuracy, with pyplot loaded for the plot."""
    from fl_core.examples.digits import centralised_baseline

    load_pyplot()
    return centralised_baseline(rounds)


async def _report(
    options: DemoOptions,
    *,
    final: dict[str, Any],
    out: TextIO,
    output: Path,
    started: float,
    baseline: float,
) -> dict[str, Any]:
    status = final.get("status") or {}
    rows = rounds_from_history(status.get("history") or [])
    model = status.get("model") or {}
    elapsed = time.monotonic() - started
    summary = summary_document(
        rows=rows,
        model_uri=str(model.get("uri", "")),
        model_sha256=str(model.get("sha256", "")),
        clusters=[f"cluster{i}" for i in range(1, options.clusters + 1)],
        extra={
            "strategy": options.strategy,
            "partition": options.partition,
            "alpha": options.alpha if options.partition == "dirichlet" else None,
            "centralised_accuracy": baseline,
            "job": f"{NAMESPACE}/{final['metadata']['name']}",
            "wall_seconds": round(elapsed, 2),
            **_privacy_summary(status),
        },
    )
    summary_path = output / "summary.json"
    plot_path = output / "accuracy.png"
    await asyncio.to_thread(write_summary, summary_path, summary)
    title = f"{options.strategy} over {options.clusters} clusters, digits"
    await asyncio.to_thread(plot_rounds, plot_path, rows=rows, baseline=baseline, title=title)
    outputs = [summary_path, plot_path]
    if options.dp_noise_multiplier is not None:
        privacy_path = output / "privacy.png"
        await asyncio.to_thread(
            plot_privacy,
            privacy_path,
            rows=rows,
            budget=options.dp_max_epsilon,
            title=f"record-level DP, noise multiplier {options.dp_noise_multiplier:g}, "
            f"clip {options.dp_clip:g}",
        )
        outputs.append(privacy_path)

    print("", file=out)
    print(format_table(rows), file=out)
    print("", file=out)
    final_accuracy = summary["final_accuracy"]
    if final_accuracy is not None:
        print(
            f"final accuracy {final_accuracy:.4f} (centralised baseline {baseline:.4f})",
            file=out,
        )
    print(f"model   {summary['model_uri']}", file=out)
    print(f"sha256  {summary['model_sha256']}", file=out)
    if "epsilon" in summary:
        print(f"epsilon {summary['epsilon']:.4g} at delta {DP_DELTA:g}", file=out)
    print(f"outputs {', '.join(str(p) for p in outputs)}", file=out)
    print(f"done in {elapsed:.1f}s", file=out)
    return summary


def _privacy_summary(status: dict[str, Any]) -> dict[str, Any]:
    """summary.json's privacy part: epsilon spent and how (none without DP)."""
    privacy = status.get("privacy")
    if not privacy:
        return {}
    stopped = next(
        (c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Succeeded"),
        None,
    )
    return {"epsilon": privacy.get("epsilon"), "privacy": privacy, "completion_reason": stopped}


def _job(options: DemoOptions) -> dict[str, Any]:
    """The reference sample, adjusted by the options."""
    (job,) = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d]
    job["metadata"]["namespace"] = NAMESPACE
    server = job["spec"]["server"]
    server["rounds"] = options.rounds
    server["minAvailableClients"] = options.clusters
    server["strategy"] = {"name": options.strategy}
    parameters = REQUIRED_PARAMETERS.get(options.strategy)
    if parameters:
        server["strategy"]["parameters"] = dict(parameters)
    if options.dp_noise_multiplier is not None:
        dp: dict[str, Any] = {
            "level": "Record",
            "noiseMultiplier": options.dp_noise_multiplier,
            "clipNorm": options.dp_clip,
            "delta": DP_DELTA,
        }
        if options.dp_max_epsilon is not None:
            dp["maxEpsilon"] = options.dp_max_epsilon
        job["spec"]["privacy"] = {"differentialPrivacy": dp}
    return dict(job)


async def _repartition(sandbox: Any, options: DemoOptions) -> dict[str, int]:
    """Give each cluster its share under the chosen partition (the sandbox wrote the
    default one); the agents re-read their catalogue and update the claims. Returns each
    cluster's new sample count."""
    from fl_core.examples.digits import prepare_cluster_datasets

    root = sandbox.workdir / "partition"
    folders = await asyncio.to_thread(
        prepare_cluster_datasets,
        root,
        clusters=options.clusters,
        partition="iid" if options.partition == "iid" else "dirichlet",
        alpha=options.alpha,
    )
    counts: dict[str, int] = {}
    for cluster, folder in zip(sandbox.cluster_names, folders, strict=True):
        target = Path(sandbox.dataset_dir(cluster)) / "train.npz"
        await asyncio.to_thread((Path(folder) / "train.npz").replace, target)
        catalogue_path = Path(sandbox.catalogue_path(cluster))
        text = await asyncio.to_thread(catalogue_path.read_text)
        catalogue = yaml.safe_load(text) or {}
        counts[cluster] = await asyncio.to_thread(_count, target)
        for entry in catalogue.get("datasets") or []:
            if entry.get("name") == DATASET:
                entry["samples"] = counts[cluster]
        temp = catalogue_path.with_name(f".{catalogue_path.name}.tmp")
        await asyncio.to_thread(temp.write_text, yaml.safe_dump(catalogue, sort_keys=False))
        await asyncio.to_thread(temp.replace, catalogue_path)
    return counts


def _count(path: Path) -> int:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return int(data["y"].shape[0])


async def _wait_for_claims(
    hub: KubeApi, clusters: list[str], *, within: float, counts: dict[str, int] | None = None
) -> dict[str, str]:
    """Each cluster's dataset claim as the hub sees it (ManagedCluster status); with
    ``counts``, once every claim shows its cluster's new sample count (an agent re-reads its
    catalogue on its own schedule: a job started before would train on more examples than
    the agent believes the cluster holds)."""
    claim = naming.dataset_claim_name(DATASET)

    async def claims() -> dict[str, str] | None:
        listed = await hub.list(r.MANAGED_CLUSTER)
        found: dict[str, str] = {}
        for cluster in listed.items:
            for entry in (cluster.get("status") or {}).get("clusterClaims") or []:
                if entry.get("name") == claim:
                    found[str(cluster["metadata"]["name"])] = str(entry.get("value", ""))
        if counts is not None and any(
            f"samples={counts[c]}" not in found.get(c, "").split(",") for c in clusters
        ):
            return None
        return found if set(clusters) <= set(found) else None

    found: dict[str, str] = await wait_for(
        claims, timeout=within, interval=0.1, message=f"clusters did not publish {claim}"
    )
    return found


def _where(obj: dict[str, Any]) -> str:
    """Where a job stands: its phase, round and each participant's state."""
    status = obj.get("status") or {}
    states = ", ".join(
        f"{p.get('cluster')} {p.get('state')}" for p in status.get("participants") or []
    )
    where = f"{status.get('phase') or 'no status'}, round {status.get('round') or 0}"
    return f"{where}: {states}" if states else where


async def _ensure_namespace(api: KubeApi, name: str) -> None:
    with contextlib.suppress(Conflict):
        await api.create(r.NAMESPACE, {"metadata": {"name": name}})


async def _follow(hub: KubeApi, *, name: str, rounds: int, progress: Progress) -> dict[str, Any]:
    """Watch the job to Completed (returned) or Failed (DemoError), showing progress."""
    obj = await hub.get(r.FEDERATED_LEARNING, name, namespace=NAMESPACE)
    while True:
        state = JobState.of(obj, rounds=rounds)
        progress.update(state)
        if state.phase in ("Completed", "Failed"):
            break
        obj = await _next(hub, obj)
    if state.phase == "Failed":
        message = (obj.get("status") or {}).get("message") or "no message"
        raise DemoError(f"FederatedLearning {NAMESPACE}/{name} failed: {message}")
    return obj


async def _next(hub: KubeApi, obj: dict[str, Any]) -> dict[str, Any]:
    """The object after its next change (or a fresh read when the watch ends or expired)."""
    name = str(obj["metadata"]["name"])
    stream = hub.watch(
        r.FEDERATED_LEARNING,
        namespace=NAMESPACE,
        resource_version=str(obj["metadata"]["resourceVersion"]),
        field_selector=f"metadata.name={name}",
        timeout_seconds=60,
    )
    with contextlib.suppress(Gone):
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                if event.type in ("ADDED", "MODIFIED"):
                    return dict(event.object)
                if event.type == "DELETED":
                    raise DemoError(f"FederatedLearning {NAMESPACE}/{name} was deleted")
    return await hub.get(r.FEDERATED_LEARNING, name, namespace=NAMESPACE)
