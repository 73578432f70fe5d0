"""What the controller entry points share as processes: settings types, usage errors and
the run until a stop signal.

A bad flag or environment variable is one line on stderr and exit code 2; SIGTERM (a
Pod being stopped) and SIGINT end the run cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Annotated, Any, NoReturn, TypeVar

from pydantic import AfterValidator, BaseModel, Field, ValidationError

from fl_kube.health import ListenError

EXIT_USAGE = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

S = TypeVar("S")
M = TypeVar("M", bound=BaseModel)

_BIND = re.compile(r"^(0|[^:\s]*:\d{1,5})$")


def _bind_address(value: str) -> str:
    if not _BIND.match(value):
        raise ValueError("use host:port, :port, or 0 to disable")
    return value


BindAddress = Annotated[str, AfterValidator(_bind_address)]
"""Where a HealthServer listens, in settings: ``host:port``, ``:port``, or ``0`` (off)."""
Seconds = Annotated[float, Field(gt=0)]
"""A positive duration in settings."""


def default_identity() -> str:
    """``host-pid``: unique per process and readable in a Lease's holder."""
    return f"{socket.gethostname()}-{os.getpid()}"


class UsageError(Exception):
    """Invalid input on the command line or in the environment: one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``prog: message (see --help)``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def parse_bool(value: str, *, name: str) -> bool:
    """A boolean environment variable (true/false, yes/no, on/off, 1/0); UsageError otherwise."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"invalid {name} {value!r}: use true or false")


def validate_settings(
    model: type[M], values: Mapping[str, object], *, flags: Mapping[str, str]
) -> M:
    """The settings model from flag values; its first error as a UsageError naming the
    flag (``flags``: field name -> flag)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        flag = flags.get(field, field)
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise UsageError(f"invalid {flag} {values.get(field)!r}: {msg}") from None


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="[env LOG_LEVEL; default INFO]",
    )


@contextlib.contextmanager
def on_stop_signals(callback: Callable[[], object]) -> Iterator[None]:
    """Call ``callback`` on SIGTERM or SIGINT while inside; the handlers go on exit."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work``; SIGTERM or SIGINT cancels it, which is a clean end."""
    task = asyncio.create_task(work)
    with on_stop_signals(task.cancel), contextlib.suppress(asyncio.CancelledError):
        await task


def run_main(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    *,
    settings_from: Callable[[argparse.Namespace, Mapping[str, str]], S],
    run: Callable[[S], Coroutine[Any, Any, None]],
) -> int:
    """Parse the flags and read the settings (flags over the environment; a UsageError,
    then or while starting, is one line and exit 2), log at ``--log-level``, then run until
    SIGTERM or SIGINT."""
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args, os.environ)
    except UsageError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    try:
        asyncio.run(run_until_signalled(run(settings)))
    except UsageError as exc:  # found only on start, such as a port in use
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


async def metrics_listening(work: Awaitable[None], *, bind: str) -> None:
    """Run ``work``; its metrics server failing to listen is a UsageError naming the flag."""
    try:
        await work
    except ListenError as exc:
        raise UsageError(
            f"--metrics-bind-address {bind}: {exc}; free the port or choose another"
        ) from None
