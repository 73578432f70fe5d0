"""`fl-spoke-agent`: flags, each with the environment variable an AddOnTemplate sets."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import ValidationError

from spoke_agent.app import run_agent
from spoke_agent.settings import DEFAULT_HUB_KUBECONFIG, DEFAULT_METRICS_BIND, AgentSettings

PROG = "fl-spoke-agent"
EXIT_USAGE = 2

# field name -> (flag, environment variables, in order of preference)
_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cluster_name": ("--cluster-name", ("CLUSTER_NAME",)),
    "hub_kubeconfig": ("--hub-kubeconfig", ("HUB_KUBECONFIG",)),
    "kubeconfig": ("--kubeconfig", ("KUBECONFIG",)),
    "namespace": ("--namespace", ("POD_NAMESPACE", "AGENT_NAMESPACE")),
    "datasets": ("--datasets", ("DATASETS_FILE",)),
    "metrics_bind_address": ("--metrics-bind-address", ("METRICS_BIND_ADDRESS",)),
}


class UsageError(Exception):
    """Invalid input on the command line or in the environment: one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
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
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="[env LOG_LEVEL; default INFO]",
    )
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
    try:
        settings = AgentSettings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        flag = _FLAGS.get(field, (field, ()))[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"invalid {flag} {values.get(field)!r}: {msg}") from None
    for path, flag in (
        (settings.hub_kubeconfig, "--hub-kubeconfig"),
        (settings.kubeconfig, "--kubeconfig"),
    ):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file; pass the kubeconfig file's path")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args, os.environ)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_run_until_signal(settings))
    return 0


async def _run_until_signal(settings: AgentSettings) -> None:
    task = asyncio.create_task(run_agent(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


if __name__ == "__main__":
    sys.exit(main())
