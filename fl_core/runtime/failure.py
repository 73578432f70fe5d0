"""Why a round failed, as `fl-train` leaves it in the termination message.

A Job's pod is gone by the time anyone on the hub asks, and nobody there can read its logs;
the termination message survives in the pod status, where the agent reads it. So on a
failure `fl-train` writes a `TrainingFailure` record there: the exception's type and message
and the last lines the process wrote to stderr (what the trainer printed or logged), bounded
to the kubelet's 4096 bytes.
"""

from __future__ import annotations

import io
from collections import deque
from typing import TextIO

from fl_contract.models import MAX_RESULT_BYTES, TrainingFailure, redact_presigned

TAIL_LINES = 20
MAX_LINE_CHARS = 400
MAX_TAIL_CHARS = 2048
MAX_MESSAGE_CHARS = 1024


class StderrTail(io.TextIOBase):
    """A stderr that writes through and remembers its last lines."""

    def __init__(self, stream: TextIO, *, lines: int = TAIL_LINES) -> None:
        super().__init__()
        self._stream = stream
        self._lines: deque[str] = deque(maxlen=lines)
        self._partial = ""

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        pieces = (self._partial + text).split("\n")
        self._partial = pieces.pop()[-MAX_LINE_CHARS:]
        self._lines.extend(p[:MAX_LINE_CHARS] for p in pieces)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self._stream, "encoding", "utf-8"))

    def tail(self) -> str:
        """The last lines written (blank ones dropped), oldest first."""
        lines = [*self._lines, self._partial]
        return "\n".join(line.rstrip() for line in lines if line.strip())


def failure_record(failure: str, message: str, *, stderr: str = "") -> TrainingFailure:
    """A record that fits a termination message: the message and the tail are cut (the
    tail from its start, keeping the newest lines) until it does."""
    message = " ".join(redact_presigned(message).split())
    stderr = redact_presigned(stderr)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    tail = stderr[-MAX_TAIL_CHARS:]
    while True:
        record = TrainingFailure(failure=failure[:128], message=message, stderr=tail)
        if len(record.model_dump_json().encode()) <= MAX_RESULT_BYTES or not tail:
            return record
        tail = tail[len(tail) // 4 :]
