"""The sandbox's Job runner: batch/v1 Jobs run as local processes."""

from fl_sandbox.jobs.runner import JobRunner

__all__ = ["JobRunner"]
