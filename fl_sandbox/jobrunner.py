"""The sandbox Job runner (see ``fl_sandbox.jobs``): Jobs on one cluster as local processes."""

from fl_sandbox.jobs.runner import JobRunner

__all__ = ["JobRunner"]
