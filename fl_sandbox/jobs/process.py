"""Run one container as a local process group, with a deadline, and read how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from fl_sandbox.jobs.forkserver import ForkServer, ForkServerError
from fl_sandbox.jobs.podenv import LaunchPlan

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4096  # kubelet's limit on the termination message
FALLBACK_LOG_BYTES = 2048  # FallbackToLogsOnError: at most 2048 bytes ...
FALLBACK_LOG_LINES = 80  # ... or 80 lines of the log, whichever is smaller


@dataclass(frozen=True)
class Outcome:
    """How the container ended, in the terms of ``containerStatuses[].state.terminated``."""

    exit_code: int
    reason: str  # Completed, Error, DeadlineExceeded, StartError
    message: str
    started_at: dt.datetime
    finished_at: dt.datetime

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and self.reason == "Completed"


class _Process(Protocol):
    """A started container process: asyncio's, or one forked by the fork server."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


async def run_container(
    plan: LaunchPlan,
    *,
    log_file: Path,
    deadline: float | None,
    grace: float,
    on_started: Callable[[dt.datetime], Awaitable[None]] | None = None,
    fork_server: ForkServer | None = None,
) -> Outcome:
    """Start ``plan.argv``, wait until it exits or ``deadline`` (loop time) passes.

    The process leads its own process group, so a deadline or a cancellation kills
    everything it started (SIGTERM, then SIGKILL after ``grace`` seconds). An `fl-train`
    command is forked from ``fork_server`` when one is given; anything else, or a fork
    server that is not running, starts a fresh process.
    """
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(log_file.parent.mkdir, parents=True, exist_ok=True)
    log_handle = await asyncio.to_thread(log_file.open, "ab")
    started = now_utc()
    try:
        try:
            process = await _start(
                plan, log_file=log_file, log_handle=log_handle, fork_server=fork_server
            )
        except OSError as exc:
            message = f"failed to start {plan.argv[0]!r}: {exc.strerror or exc}"
            log_handle.write((message + "\n").encode())
            return Outcome(128, "StartError", message, started, now_utc())
        timed_out = False
        try:
            if on_started is not None:
                await on_started(started)
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            async with asyncio.timeout(remaining):
                await process.wait()
        except TimeoutError:
            timed_out = True
            await kill_group(process, grace=grace)
        except BaseException:  # cancelled (Job deleted, runner stopping) or a failing callback
            await kill_group(process, grace=grace)
            raise
        finally:
            _signal_group(process.pid, signal.SIGKILL)  # leftovers of the process group
    finally:
        log_handle.close()
    finished = now_utc()
    code = process.returncode if process.returncode is not None else -signal.SIGKILL
    exit_code = 128 - code if code < 0 else code
    message = await asyncio.to_thread(
        read_termination_message, plan, log_file=log_file, failed=exit_code != 0
    )
    if timed_out:
        return Outcome(exit_code, "DeadlineExceeded", message, started, finished)
    return Outcome(
        exit_code, "Completed" if exit_code == 0 else "Error", message, started, finished
    )


async def _start(
    plan: LaunchPlan, *, log_file: Path, log_handle: BinaryIO, fork_server: ForkServer | None
) -> _Process:
    entry = None if fork_server is None else fork_server.entry_point(plan)
    if fork_server is not None and entry is not None:
        try:
            return await fork_server.spawn(plan, entry=entry, log_file=log_file)
        except ForkServerError as exc:
            log.warning("%s; starting %s as a new process", exc, plan.argv[0])
    return await asyncio.create_subprocess_exec(
        *plan.argv,
        cwd=plan.cwd,
        env=plan.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log_handle,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )


async def kill_group(process: _Process, *, grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still alive after ``grace``."""
    if process.returncode is not None:
        return
    _signal_group(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await process.wait()
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await process.wait()


def read_termination_message(plan: LaunchPlan, *, log_file: Path, failed: bool) -> str:
    """The termination message file, or the log tail (FallbackToLogsOnError, on failure)."""
    try:
        with plan.termination_file.open("rb") as handle:
            data = handle.read(MAX_MESSAGE_BYTES)
    except OSError:
        data = b""
    if not data.strip() and failed and plan.termination_policy == "FallbackToLogsOnError":
        data = _log_tail(log_file)
    return data.decode("utf-8", "replace")


def _log_tail(log_file: Path) -> bytes:
    try:
        with log_file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - FALLBACK_LOG_BYTES, 0))
            tail = handle.read()
    except OSError:
        return b""
    lines = tail.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
    return b"".join(lines)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
