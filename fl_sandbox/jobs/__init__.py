"""The sandbox's Job runner: batch/v1 Jobs run as local processes.

``JobRunner`` is imported on first use, so that the fork server (``forkserver``, a module
of this package) starts without the runner's API client stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fl_sandbox.jobs.runner import JobRunner

__all__ = ["JobRunner"]


def __getattr__(name: str) -> Any:
    if name == "JobRunner":
        from fl_sandbox.jobs.runner import JobRunner

        return JobRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
