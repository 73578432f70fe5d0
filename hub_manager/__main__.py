"""`fl-hub-manager`: flags (each with the environment variable a Deployment may set)."""

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
from typing import NoReturn

from pydantic import ValidationError

from hub_manager.settings import DEFAULT_LEASE_NAMESPACE, DEFAULT_METRICS_BIND, HubSettings

PROG = "fl-hub-manager"
EXIT_USAGE = 2

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


class UsageError(Exception):
    """Invalid input on the command line or in the environment: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One clear line and exit 2, without the usage dump."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="[env LOG_LEVEL; default INFO]",
    )
    return parser


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> HubSettings:
    """Flags win over environment variables; errors name the flag and what to do."""
    values: dict[str, object] = {}
    for field, (_flag, env) in _FLAGS.items():
        value = getattr(args, field)
        if value is None and environ.get(env):
            value = environ[env]
            if field == "leader_election":
                value = _boolean(value, env=env)
        if value is not None:
            values[field] = value
    if args.no_addon_templates:
        values["addon_templates_dir"] = None
    try:
        settings = HubSettings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        flag = _FLAGS.get(field, (field, ""))[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"invalid {flag} {values.get(field)!r}: {msg}") from None
    if settings.kubeconfig is not None and not Path(settings.kubeconfig).is_file():
        raise UsageError(f"--kubeconfig {settings.kubeconfig}: no such file; pass its path")
    templates = settings.addon_templates_dir
    if "addon_templates_dir" in values and templates is not None and not templates.is_dir():
        raise UsageError(f"--addon-templates {templates}: no such folder")
    return settings


def _boolean(value: str, *, env: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"invalid {env} {value!r}: use true or false")


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


async def _run_until_signal(settings: HubSettings) -> None:
    from hub_manager.app import run_hub_manager

    task = asyncio.create_task(run_hub_manager(settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


if __name__ == "__main__":
    sys.exit(main())
