"""The demo's live progress: one line rewritten in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TextIO

REPORTED = ("Accepted", "Rejected", "Failed")


@dataclass(frozen=True)
class RoundDone:
    round: int
    accuracy: float | None
    loss: float | None
    seconds: float | None


@dataclass(frozen=True)
class JobState:
    """What the FederatedLearning status says about progress, reduced to what is shown."""

    phase: str
    round: int
    rounds: int
    attempt: int
    clusters: int
    reported: int
    done: tuple[RoundDone, ...]

    @classmethod
    def of(cls, obj: dict[str, Any], *, rounds: int) -> JobState:
        status = obj.get("status") or {}
        participants = status.get("participants") or []
        # Above the hub's cap the list shows some participants; the summary counts them all.
        summary = status.get("participantSummary") or {}
        states: dict[str, int] = summary.get("states") or {}
        done: dict[int, RoundDone] = {}
        for entry in status.get("history") or []:
            number = int(entry.get("round", 0))
            done[number] = RoundDone(
                round=number,
                accuracy=_number(entry.get("accuracy")),
                loss=_number(entry.get("loss")),
                seconds=_number(entry.get("durationSeconds")),
            )
        return cls(
            phase=str(status.get("phase") or "Pending"),
            round=int(status.get("round") or 0),
            rounds=rounds,
            attempt=int(status.get("attempt") or 1),
            clusters=int(summary.get("total") or 0)
            or len(participants)
            or int(status.get("clusters") or 0),
            reported=sum(int(states.get(s) or 0) for s in REPORTED)
            if summary
            else sum(1 for p in participants if p.get("state") in REPORTED),
            done=tuple(done[n] for n in sorted(done)),
        )

    def key(self) -> tuple[str, int, int, int]:
        return (self.phase, self.round, self.attempt, self.reported)

    def line(self) -> str:
        if self.phase in ("Pending", "Waiting") or self.round == 0:
            return f"{self.phase}: waiting for the placement and the agents"
        parts = [f"round {self.round}/{self.rounds}"]
        if self.attempt > 1:
            parts.append(f"attempt {self.attempt}")
        parts.append(f"{self.reported}/{self.clusters} clusters reported")
        latest = self.done[-1] if self.done else None
        if latest is not None and latest.accuracy is not None:
            parts.append(f"accuracy {latest.accuracy:.4f} after round {latest.round}")
        return f"{self.phase}: " + ", ".join(parts)


class Progress:
    """Step lines, round lines and a live status line (redrawn in place on a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        isatty = getattr(out, "isatty", None)
        self._tty = bool(isatty()) if callable(isatty) else False
        self._live = False
        self._last_key = ""
        self._rounds_shown = 0

    def step(self, text: str) -> None:
        self._clear()
        self._print(f"- {text}")

    def update(self, state: JobState) -> None:
        for done in state.done[self._rounds_shown :]:
            self._clear()
            self._print(_round_line(done, state.rounds))
        self._rounds_shown = max(self._rounds_shown, len(state.done))
        line = state.line()
        # A terminal redraws on any change; a log gets a line when the round, the attempt
        # or the number of reports moves (not again for the accuracy a round line showed).
        key = line if self._tty else repr(state.key())
        if key == self._last_key and not (self._tty and not self._live):
            return
        self._last_key = key
        if self._tty:
            self._out.write("\r\033[K  " + line)
            self._out.flush()
            self._live = True
        else:
            self._print(f"  {line}")

    def finish(self) -> None:
        self._clear()

    def _clear(self) -> None:
        if self._live:
            self._out.write("\r\033[K")
            self._out.flush()
            self._live = False
            self._last_key = ""

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()


def _round_line(done: RoundDone, rounds: int) -> str:
    parts = [f"  round {done.round}/{rounds} done"]
    if done.accuracy is not None:
        parts.append(f"accuracy {done.accuracy:.4f}")
    if done.loss is not None:
        parts.append(f"loss {done.loss:.4f}")
    if done.seconds is not None:
        parts.append(f"{done.seconds:.1f}s")
    return ", ".join(parts)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
