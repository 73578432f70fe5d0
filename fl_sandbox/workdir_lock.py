"""One sandbox per folder: a second one would overwrite the first one's kubeconfigs, data
and model store."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class SandboxBusy(RuntimeError):
    """Another sandbox runs in this workdir (its kubeconfigs and data would be overwritten)."""


class WorkdirLock:
    """An exclusive ``flock`` on ``<workdir>/.fl-sandbox.lock``, holding the owner's pid.

    The kernel drops the lock when its holder exits, however it exits, so a crashed sandbox
    never leaves a stale lock behind.
    """

    def __init__(self, workdir: Path) -> None:
        self.path = workdir / ".fl-sandbox.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SandboxBusy(
                f"{self.path.parent} is in use by another sandbox (pid {holder}): stop it or "
                "choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
