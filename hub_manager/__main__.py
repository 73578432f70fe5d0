"""`fl-hub-manager`: flags (each with the environment variable a Deployment may set)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fl_kube.process import (
    OneLineParser,
    UsageError,
    add_log_level_argument,
    metrics_listening,
    parse_bool,
    run_main,
    validate_settings,
)
from hub_manager.settings import DEFAULT_LEASE_NAMESPACE, DEFAULT_METRICS_BIND, HubSettings

PROG = "fl-hub-manager"

# field name -> (flag, environment variable)
_FLAGS: dict[str, tuple[str, str]] = {
    "kubeconfig": ("--kubeconfig", "KUBECONFIG"),
    "metrics_bind_address": ("--metrics-bind-address", "METRICS_BIND_ADDRESS"),
    "leader_election": ("--leader-elect", "LEADER_ELECT"),
    "leader_election_namespace": ("--leader-election-namespace", "POD_NAMESPACE"),
    "identity": ("--identity", "POD_NAME"),
    "addon_templates_dir": ("--addon-templates", "ADDON_TEMPLATES_DIR"),
    "file_store_root": ("--file-store-root", "FILE_STORE_ROOT"),
    "workers": ("--workers", "WORKERS"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description=(
            "Federated-learning hub manager: registers the add-on, grants each cluster's "
            "agent its own status, and drives FederatedLearning jobs round by round."
        ),
    )
    parser.add_argument("--kubeconfig", help="hub kubeconfig [env KUBECONFIG; default in-cluster]")
    parser.add_argument(
        "--metrics-bind-address",
        help=f"metrics/health address, 0 disables [env METRICS_BIND_ADDRESS; default {DEFAULT_METRICS_BIND}]",
    )
    parser.add_argument(
        "--leader-elect",
        dest="leader_election",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="contend for a Lease so one replica drives jobs [env LEADER_ELECT; default on]",
    )
    parser.add_argument(
        "--leader-election-namespace",
        help=f"namespace of the Lease [env POD_NAMESPACE; default {DEFAULT_LEASE_NAMESPACE}]",
    )
    parser.add_argument("--identity", help="Lease holder identity [env POD_NAME; default host-pid]")
    parser.add_argument(
        "--addon-templates",
        dest="addon_templates_dir",
        help="folder of add-on YAML applied at start [env ADDON_TEMPLATES_DIR]",
    )
    parser.add_argument(
        "--no-addon-templates",
        action="store_true",
        help="do not apply add-on YAML at start (installed by other means)",
    )
    parser.add_argument(
        "--file-store-root",
        help="root of file:// model stores on this machine [env FILE_STORE_ROOT]",
    )
    parser.add_argument("--workers", type=int, help="jobs reconciled in parallel [env WORKERS]")
    add_log_level_argument(parser)
    return parser


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> HubSettings:
    """Flags win over environment variables; errors name the flag and what to do."""
    values: dict[str, object] = {}
    for field, (_flag, env) in _FLAGS.items():
        value = getattr(args, field)
        if value is None and environ.get(env):
            value = environ[env]
            if field == "leader_election":
                value = parse_bool(value, name=env)
        if value is not None:
            values[field] = value
    if args.no_addon_templates:
        values["addon_templates_dir"] = None
    flags = {field: flag for field, (flag, _env) in _FLAGS.items()}
    settings = validate_settings(HubSettings, values, flags=flags)
    if settings.kubeconfig is not None and not Path(settings.kubeconfig).is_file():
        raise UsageError(f"--kubeconfig {settings.kubeconfig}: no such file; pass its path")
    templates = settings.addon_templates_dir
    if "addon_templates_dir" in values and templates is not None and not templates.is_dir():
        raise UsageError(f"--addon-templates {templates}: no such folder")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), argv, settings_from=settings_from, run=_run)


async def _run(settings: HubSettings) -> None:
    from hub_manager.app import run_hub_manager

    await metrics_listening(run_hub_manager(settings), bind=settings.metrics_bind_address)


if __name__ == "__main__":
    sys.exit(main())
