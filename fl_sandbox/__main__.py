"""``python -m fl_sandbox`` and the ``fl-sandbox`` console script."""

from __future__ import annotations

import sys

from fl_sandbox.cli import main

if __name__ == "__main__":
    sys.exit(main())
