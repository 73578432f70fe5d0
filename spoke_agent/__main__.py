"""`fl-spoke-agent`: flags, each with the environment variable an AddOnTemplate sets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fl_kube.errors import ApiError
from fl_kube.process import (
    OneLineParser,
    UsageError,
    add_log_level_argument,
    metrics_listening,
    run_main,
    validate_settings,
)
from spoke_agent.app import run_agent
from spoke_agent.cleanup import run_cleanup
from spoke_agent.settings import DEFAULT_HUB_KUBECONFIG, DEFAULT_METRICS_BIND, AgentSettings

PROG = "fl-spoke-agent"

# field name -> (flag, environment variables, in order of preference)
_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cluster_name": ("--cluster-name", ("CLUSTER_NAME",)),
    "hub_kubeconfig": ("--hub-kubeconfig", ("HUB_KUBECONFIG",)),
    "kubeconfig": ("--kubeconfig", ("KUBECONFIG",)),
    "namespace": ("--namespace", ("POD_NAMESPACE", "AGENT_NAMESPACE")),
    "datasets": ("--datasets", ("DATASETS_FILE",)),
    "metrics_bind_address": ("--metrics-bind-address", ("METRICS_BIND_ADDRESS",)),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        allow_abbrev=False,  # `--clean` must not pass for `--cleanup`
        description=(
            "Federated-learning add-on agent for one managed cluster: publishes dataset "
            "ClusterClaims, runs round training Jobs, reports to the hub."
        ),
    )
    parser.add_argument("--cluster-name", help="managed cluster name [env CLUSTER_NAME]")
    parser.add_argument(
        "--hub-kubeconfig",
        help=f"hub kubeconfig of the add-on [env HUB_KUBECONFIG; default {DEFAULT_HUB_KUBECONFIG}]",
    )
    parser.add_argument(
        "--kubeconfig", help="managed cluster kubeconfig [env KUBECONFIG; default in-cluster]"
    )
    parser.add_argument(
        "--namespace", help="add-on install namespace [env POD_NAMESPACE or AGENT_NAMESPACE]"
    )
    parser.add_argument("--datasets", help="dataset catalogue YAML [env DATASETS_FILE]")
    parser.add_argument(
        "--metrics-bind-address",
        help=f"metrics/health address, 0 disables [env METRICS_BIND_ADDRESS; default {DEFAULT_METRICS_BIND}]",
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="withdraw this agent's dataset claims and health Lease, then exit (the "
        "add-on's pre-delete hook Job); needs no hub kubeconfig",
    )
    add_log_level_argument(parser)
    return parser


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> AgentSettings:
    """Flags win over environment variables; errors name the flag and what to do."""
    values: dict[str, object] = {}
    for field, (_flag, env_names) in _FLAGS.items():
        value = getattr(args, field)
        if value is None:
            value = next((environ[e] for e in env_names if environ.get(e)), None)
        if value is not None:
            values[field] = value
    for field in ("cluster_name", "namespace"):
        if field not in values:
            flag, env_names = _FLAGS[field]
            raise UsageError(f"{flag} is required (or set {' or '.join(env_names)})")
    flags = {field: flag for field, (flag, _env) in _FLAGS.items()}
    settings = validate_settings(AgentSettings, values, flags=flags)
    checked = [(settings.kubeconfig, "--kubeconfig")]
    if not getattr(args, "cleanup", False):
        checked.append((settings.hub_kubeconfig, "--hub-kubeconfig"))
    for path, flag in checked:
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file; pass the kubeconfig file's path")
    return settings


async def _cleanup(settings: AgentSettings) -> None:
    try:
        await run_cleanup(settings.kubeconfig, settings.namespace)
    except (TimeoutError, ApiError) as exc:  # one line; the Job's retry tries again
        print(f"{PROG} --cleanup: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    cleanup = "--cleanup" in (sys.argv[1:] if argv is None else argv)
    return run_main(parser, argv, settings_from=settings_from, run=_cleanup if cleanup else _run)


async def _run(settings: AgentSettings) -> None:
    await metrics_listening(run_agent(settings), bind=settings.metrics_bind_address)


if __name__ == "__main__":
    sys.exit(main())
