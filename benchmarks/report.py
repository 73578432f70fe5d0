"""What every benchmark section records beside its rows, and how it writes its results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def machine(load_at_start: list[float], **extra: Any) -> dict[str, Any]:
    """The machine and its load at the start and now: numbers on a shared machine need it."""
    return {
        "cpus": os.cpu_count(),
        **extra,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
    }


def write(path: Path, report: dict[str, Any]) -> None:
    """The section's results file (indented JSON, kept in git)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
