"""A fork server for `fl-train` containers: the sandbox's emulation of a cheap container start.

A fresh `fl-train` process spends most of a small round importing numpy and pydantic. The
sandbox instead keeps one server process that has imported the training runtime once, and
forks it for each container whose command is `fl-train` of this environment. The forked
child becomes what a fresh process would be, as far as the Job can tell: its own session
(so the runner kills its process group on a deadline or a deletion exactly as before),
stdin from /dev/null, stdout and stderr appended to the pod's log file, the working folder
of the launch plan, `os.environ` replaced by the container's environment (with its
PYTHONPATH on `sys.path` and PYTHONUNBUFFERED honoured), numpy's global generator reseeded,
and `sys.exit(main())` of the console script's entry point, so its exit status is the one
the script would have. The server reaps every child and reports its exit status;
everything else (other commands, or the server not running) starts a fresh process.

Protocol: JSON lines over the server's stdin and stdout. The server first says
``{"ready": pid}`` (or ``{"error": ...}`` when it cannot import the runtime); then each
request ``{"id", "entry", "argv", "env", "cwd", "log"}`` gets ``{"id", "pid"}`` once the
child leads its own session (or ``{"id", "errno", "error"}``) and later ``{"id", "exit"}``
with the exit status (negative: killed by that signal). When its stdin closes (the sandbox
stopped or died) the server kills its children's process groups and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import itertools
import json
import logging
import os
import selectors
import shutil
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from fl_sandbox.jobs.podenv import LaunchPlan

log = logging.getLogger(__name__)

# Console scripts of this environment that run in a forked child: name -> entry point.
ENTRY_POINTS: Final = {"fl-train": "fl_core.runtime.__main__:main"}
# What every `fl-train` round imports, loaded once in the server.
PRELOAD: Final = (
    "fl_core.runtime.__main__",
    "fl_core.examples.digits",
    "fl_core.store.file",
    "fl_contract.weights",
)


class ForkServerError(Exception):
    """The fork server is not running (it failed to start or exited)."""


class ForkedProcess:
    """A container process forked by the server; the parts of asyncio's ``Process`` that
    the runner uses (``pid``, ``returncode``, ``wait()``)."""

    def __init__(self, pid: int, exited: asyncio.Future[int]) -> None:
        self.pid = pid
        self._exited = exited

    @property
    def returncode(self) -> int | None:
        if not self._exited.done() or self._exited.exception() is not None:
            return None
        return self._exited.result()

    async def wait(self) -> int:
        """The exit status (negative: the signal that killed it); ForkServerError if the
        server exited first."""
        return await asyncio.shield(self._exited)


class ForkServer:
    """Starts and talks to the fork server process; one per sandbox, shared by its runners."""

    def __init__(
        self, *, preload: Sequence[str] = PRELOAD, env: Mapping[str, str] | None = None
    ) -> None:
        self._preload = list(preload)
        self._env = dict(os.environ if env is None else env)
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[int] | None = None
        self._started: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._scripts = {
            name: os.path.realpath(Path(sys.executable).parent / name) for name in ENTRY_POINTS
        }
        self.forked = 0  # children started (for tests and diagnostics)

    @property
    def pid(self) -> int | None:
        """The server's process id (the parent of every forked container)."""
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Launch the server; it imports the runtime in the background (``spawn`` waits)."""
        if self._process is not None:
            raise RuntimeError("the fork server is already started")
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            *self._preload,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
            cwd="/",
            start_new_session=True,  # a terminal's Ctrl-C is for the sandbox, which stops it
        )
        self._reader = asyncio.create_task(self._read(), name="fork-server-reader")

    async def wait_ready(self) -> int:
        """The server's pid once it has imported the runtime; ForkServerError if it cannot."""
        if self._ready is None:
            raise ForkServerError("the fork server is not started")
        return await asyncio.shield(self._ready)

    def entry_point(self, plan: LaunchPlan) -> str | None:
        """The entry point to run for this launch in a forked child, or None when the
        command is not one of ours (it then runs as a fresh process)."""
        if not plan.argv or self._process is None or self._process.returncode is not None:
            return None
        if self._ready is not None and self._ready.done() and self._ready.exception():
            return None  # it could not start
        name = Path(plan.argv[0]).name
        if name not in ENTRY_POINTS:
            return None
        found = shutil.which(plan.argv[0], path=plan.env.get("PATH", os.defpath))
        if found is None or os.path.realpath(found) != self._scripts[name]:
            return None
        return ENTRY_POINTS[name]

    async def spawn(self, plan: LaunchPlan, *, entry: str, log_file: Path) -> ForkedProcess:
        """Fork a child running ``entry`` as ``plan`` says; OSError as exec would raise it
        (e.g. a missing working folder), ForkServerError when the server is not running."""
        await self.wait_ready()
        process = self._process
        assert process is not None
        assert process.stdin is not None
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        started: asyncio.Future[int] = loop.create_future()
        exited: asyncio.Future[int] = loop.create_future()
        self._started[request_id] = started
        self._exits[request_id] = exited
        request = {
            "id": request_id,
            "entry": entry,
            "argv": [shutil.which(plan.argv[0], path=plan.env.get("PATH")), *plan.argv[1:]],
            "env": plan.env,
            "cwd": str(plan.cwd),
            "log": str(log_file),
        }
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            await process.stdin.drain()
            pid = await asyncio.shield(started)
        except (ConnectionError, ForkServerError) as exc:
            self._started.pop(request_id, None)
            self._exits.pop(request_id, None)
            raise ForkServerError(f"the fork server is not running: {exc}") from exc
        except asyncio.CancelledError:
            # Cancelled (the Job deleted) while the child starts: kill it once it has a pid.
            started.add_done_callback(_kill_started)
            raise
        self.forked += 1
        return ForkedProcess(pid, exited)

    async def stop(self) -> None:
        """Close the server's stdin (it kills its children and exits) and wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _read(self) -> None:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        assert self._ready is not None
        reason = "the fork server exited"
        try:
            while line := await process.stdout.readline():
                try:
                    reply = json.loads(line)
                except ValueError:
                    log.warning("fork server: unreadable reply %r", line[:200])
                    continue
                self._dispatch(reply)
        except (ValueError, ConnectionError) as exc:  # e.g. a line over the stream's limit
            reason = f"the fork server's replies were unreadable: {exc}"
        finally:
            error = ForkServerError(reason)
            if not self._ready.done():
                self._ready.set_exception(error)
            for future in [*self._started.values(), *self._exits.values()]:
                if not future.done():
                    future.set_exception(error)
            for future in (self._ready, *self._started.values(), *self._exits.values()):
                future.exception()  # retrieved here; whoever waits still gets it
            self._exits.clear()

    def _dispatch(self, reply: dict[str, Any]) -> None:
        assert self._ready is not None
        if "ready" in reply:
            self._ready.set_result(int(reply["ready"]))
            return
        request_id = reply.get("id")
        if request_id is None:  # the server could not start
            log.warning("fork server: %s", reply.get("error"))
            self._ready.set_exception(ForkServerError(str(reply.get("error"))))
            return
        started = self._started.pop(request_id, None) if "exit" not in reply else None
        if "pid" in reply and started is not None and not started.done():
            started.set_result(int(reply["pid"]))
        elif "error" in reply and started is not None and not started.done():
            code = int(reply.get("errno") or errno.EIO)
            started.set_exception(OSError(code, str(reply["error"])))
            self._exits.pop(request_id, None)
        elif "exit" in reply:
            exited = self._exits.pop(request_id, None)
            if exited is not None and not exited.done():
                exited.set_result(int(reply["exit"]))


def _kill_started(started: asyncio.Future[int]) -> None:
    if not started.cancelled() and started.exception() is None:
        with contextlib.suppress(OSError):
            os.killpg(started.result(), signal.SIGKILL)


# -- the server process ----------------------------------------------------------------


class _Server:
    """The loop of the server process: requests on stdin, SIGCHLD through a wakeup pipe."""

    def __init__(self) -> None:
        self.children: dict[int, int] = {}  # pid -> request id
        self.buffer = b""
        self.wake_read, self.wake_write = os.pipe()
        for fd in (self.wake_read, self.wake_write):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)  # a Python handler, so SIGCHLD wakes select
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _stop)
        self.selector = selectors.DefaultSelector()
        self.selector.register(0, selectors.EVENT_READ)
        self.selector.register(self.wake_read, selectors.EVENT_READ)

    def run(self) -> int:
        _reply({"ready": os.getpid()})
        try:
            while True:
                for key, _ in self.selector.select():
                    if key.fd == self.wake_read:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(self.wake_read, 512):
                                pass
                    elif not self.read_requests():
                        return 0
                self.reap()
        except (_Stop, BrokenPipeError):
            return 0
        finally:
            self.shutdown()

    def read_requests(self) -> bool:
        data = os.read(0, 1 << 16)
        if not data:
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.start(json.loads(line))
        return True

    def start(self, request: dict[str, Any]) -> None:
        request_id = request["id"]
        try:
            log_fd = os.open(
                request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
            )
        except OSError as exc:
            _reply({"id": request_id, "errno": exc.errno, "error": str(exc)})
            return
        try:
            if not os.path.isdir(request["cwd"]):
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), request["cwd"])
            ready_read, ready_write = os.pipe()
            pid = os.fork()
        except OSError as exc:
            os.close(log_fd)
            _reply({"id": request_id, "errno": exc.errno, "error": str(exc)})
            return
        if pid == 0:
            os.close(ready_read)
            _child(request, log_fd=log_fd, ready=ready_write, server=self)
        os.close(ready_write)
        os.close(log_fd)
        os.read(ready_read, 1)  # the child leads its own session: a killpg now reaches it
        os.close(ready_read)
        self.children[pid] = request_id
        _reply({"id": request_id, "pid": pid})

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            request_id = self.children.pop(pid, None)
            if request_id is not None:
                _reply({"id": request_id, "exit": os.waitstatus_to_exitcode(status)})

    def shutdown(self) -> None:
        """Kill every child's process group and reap them: nothing outlives the server."""
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()

    def close_in_child(self) -> None:
        signal.set_wakeup_fd(-1)
        self.selector.close()
        for fd in (self.wake_read, self.wake_write, _REPLY_FD[0]):
            os.close(fd)


class _Stop(Exception):
    pass


def _ignore(signum: int, frame: object) -> None:
    return None


def _stop(signum: int, frame: object) -> None:
    raise _Stop


def _reply(message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(_REPLY_FD[0], data) :]


# The pipe replies go to; stdout itself goes to stderr, so what an imported module prints
# cannot garble the protocol.
_REPLY_FD = [1]


def _child(request: dict[str, Any], *, log_fd: int, ready: int, server: _Server) -> NoReturn:
    """Become the container's process and run its entry point; never returns."""
    code = 1
    try:
        os.setsid()
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.write(ready, b".")
        os.close(ready)
        server.close_in_child()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.chdir(request["cwd"])
        _become(request)
        code = _run(str(request["entry"]))
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        _finalise()
        os._exit(code)


def _become(request: dict[str, Any]) -> None:
    """The interpreter state a fresh process would start with, from the container's env."""
    env: dict[str, str] = request["env"]
    os.environ.clear()
    os.environ.update(env)
    argv: list[str] = request["argv"]
    sys.argv = list(argv)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [str(Path(argv[0]).parent), *extra, *_BASE_PATH]
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    # The process's own standard streams, as a new interpreter opens them (never closed).
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    errors = "backslashreplace"
    sys.stderr = open(2, "w", encoding="utf-8", errors=errors, buffering=1, closefd=False)  # noqa: SIM115
    if unbuffered:
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    import tempfile

    tempfile.tempdir = None  # TMPDIR is the container's
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # as fresh as a new process's


def _run(entry: str) -> int:
    """``sys.exit(main())`` of a console script, and the exit status it gives."""
    module_name, _, attr = entry.partition(":")
    try:
        main = getattr(importlib.import_module(module_name), attr)
        sys.exit(main())
    except SystemExit as exc:
        return _exit_status(exc.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        return 1


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _finalise() -> None:
    """What interpreter exit does before the process ends: join threads, run atexit
    functions, flush stdio."""
    with contextlib.suppress(BaseException):
        shutdown = getattr(__import__("threading"), "_shutdown", None)
        if shutdown is not None:
            shutdown()
    with contextlib.suppress(BaseException):
        __import__("atexit")._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


_BASE_PATH: list[str] = []


def main(argv: Sequence[str] | None = None) -> int:
    """The server process: import the runtime, then serve until stdin closes."""
    modules = list(sys.argv[1:] if argv is None else argv)
    _REPLY_FD[0] = os.dup(1)
    os.dup2(2, 1)
    own = {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    _BASE_PATH[:] = [p for p in sys.path[1:] if p not in own]
    try:
        for module in modules:
            importlib.import_module(module)
    except Exception as exc:
        _reply({"error": f"cannot import {module}: {type(exc).__name__}: {exc}"})
        return 1
    return _Server().run()


if __name__ == "__main__":
    sys.exit(main())
