"""``fl-sandbox``: run a local OCM fleet (``up``) or the federated learning demo (``demo``).

``up`` starts the hub and N managed clusters, prints one line when they are ready (with
the kubeconfig paths) and runs until SIGINT or SIGTERM, then stops everything. Bad options,
and a ``--dir`` another sandbox is running in, get one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from fl_kube.process import EXIT_USAGE, on_stop_signals

PROG = "fl-sandbox"
# The upstream OCM CRDs beside the repository, served (with validation and printer columns)
# when no --crd-dir is given and they are there.
SHARED_CRD_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "ocm-crds"
EXIT_FAILED = 1


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _crd_dir(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory of CRD YAML files")
    if not any(path.glob("*.yaml")) and not any(path.glob("*.yml")):
        raise argparse.ArgumentTypeError(f"{text!r} holds no .yaml files")
    return path


def _workdir(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    return path


def build_parser(*, with_demo: bool = False) -> argparse.ArgumentParser:
    """The parser; the demo's own options are registered only when ``with_demo``."""
    parser = _Parser(prog=PROG, description="A local Open Cluster Management fleet.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO on stderr")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    up = commands.add_parser("up", help="start a hub and managed clusters until interrupted")
    up.add_argument(
        "--clusters",
        type=_positive_int,
        default=3,
        help="managed clusters (default 3, as the digits sample expects)",
    )
    up.add_argument("--dir", type=_workdir, required=True, help="folder for kubeconfigs and data")
    up.add_argument(
        "--no-hub-manager",
        dest="hub_manager",
        action="store_false",
        help="do not run the hub manager in process (start fl-hub-manager yourself)",
    )
    up.add_argument(
        "--no-agents",
        dest="agents",
        action="store_false",
        help="do not run the spoke agents in process (start fl-spoke-agent yourself)",
    )
    up.add_argument(
        "--authorize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="API servers over https that authenticate every request and enforce RBAC, so "
        "each kubeconfig (an agent's too) may do only what its identity is granted "
        "(default on; needs the openssl command)",
    )
    up.add_argument(
        "--light",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="light clusters, cheap enough for a thousand on a small machine (README: The "
        "sandbox at scale); default: on above 20 clusters",
    )
    up.add_argument(
        "--crd-dir",
        type=_crd_dir,
        action="append",
        default=[],
        help="upstream OCM CRDs to serve with validation (repeatable; default "
        f"{SHARED_CRD_DIR} when it exists)",
    )
    demo = commands.add_parser("demo", help="train the digits example across the sandbox")
    if with_demo:
        add_arguments = getattr(_demo_module(), "add_demo_arguments", None)
        if add_arguments is not None:
            add_arguments(demo)
    return parser


def _demo_module() -> Any:
    try:
        return importlib.import_module("fl_sandbox.demo")
    except ImportError as exc:
        raise SystemExit(f"{PROG}: the demo is not available: {exc}") from None


def ready_line(sandbox: Any) -> str:
    """The one line ``up`` prints when the fleet is ready."""
    clusters = " ".join(f"{n}={sandbox.cluster_kubeconfig(n)}" for n in sandbox.cluster_names)
    rbac = "RBAC enforced" if sandbox.authorize else "no authorization"
    return f"{PROG} ready: hub kubeconfig {sandbox.hub_kubeconfig}; clusters {clusters}; {rbac}"


async def run_up(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Start the sandbox, print the ready line, wait for SIGINT/SIGTERM, stop."""
    from fl_sandbox.sandbox import Sandbox, SandboxBusy

    stream = out or sys.stdout
    if args.authorize and shutil.which("openssl") is None:
        print(
            f"{PROG}: --authorize serves https (kubectl sends credentials only over TLS) and "
            "needs the openssl command: install openssl or pass --no-authorize",
            file=sys.stderr,
        )
        return EXIT_FAILED
    stopping = asyncio.Event()
    with on_stop_signals(stopping.set):
        crd_dirs = args.crd_dir or ([SHARED_CRD_DIR] if SHARED_CRD_DIR.is_dir() else [])
        sandbox = Sandbox(
            workdir=args.dir,
            clusters=args.clusters,
            crd_dirs=crd_dirs,
            hub_manager=args.hub_manager,
            agents=args.agents,
            authorize=args.authorize,
            tls=args.authorize,
            light=args.light,
            start_timeout=max(30.0, float(args.clusters)),
        )
        try:
            start = asyncio.create_task(sandbox.start())
            waiter = asyncio.create_task(stopping.wait())
            done, _ = await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if start not in done:
                start.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await start
                return 0
            waiter.cancel()
            try:
                start.result()
            except SandboxBusy as exc:
                print(f"{PROG}: --dir {exc}", file=sys.stderr)
                return EXIT_USAGE
            except Exception as exc:
                print(f"{PROG}: could not start the sandbox: {exc}", file=sys.stderr)
                return EXIT_FAILED
            print(ready_line(sandbox), file=stream, flush=True)
            await stopping.wait()
            return 0
        finally:
            await sandbox.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fl-sandbox``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_demo="demo" in arguments)
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "up":
        return _exit_quickly(asyncio.run(run_up(args)))
    run_demo = getattr(_demo_module(), "run_demo", None)
    if run_demo is None:
        print(f"{PROG}: the demo is not available yet", file=sys.stderr)
        return EXIT_FAILED
    return _exit_quickly(int(asyncio.run(run_demo(args))))


def _exit_quickly(code: int) -> int:
    """Everything is stopped and written: spare the interpreter's exit the garbage
    collections over the whole heap (seconds on a busy machine); the OS frees it."""
    gc.freeze()
    return code
