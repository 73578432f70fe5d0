"""Naming user code on `fl-train`'s command line: `package.module:attr`, and what a bad name
reports (exit 2, the kind of error in the failure record)."""

from __future__ import annotations

import importlib


class UsageError(Exception):
    """Bad command-line input (exit 2). `failure` names the kind of error in the record."""

    def __init__(self, message: str, *, failure: str = "UsageError") -> None:
        super().__init__(message)
        self.failure = failure


def import_target(target: str, *, flag: str) -> object:
    """The object `module:attr` names (attr may be dotted); UsageError with one line if not."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{flag} {target!r}: use the form package.module:Attribute")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        # "ImportError: No module named 'nosuch' (cannot import --trainer 'nosuch:T')"
        raise UsageError(
            f"{exc} (cannot import {flag} {target!r})", failure="ImportError"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(
                f"module {module_name!r} has no attribute {attr!r} ({flag} {target!r})",
                failure="AttributeError",
            )
        obj = getattr(obj, part)
    return obj
