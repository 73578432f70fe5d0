"""What the demo leaves behind: the table of rounds, summary.json and accuracy.png."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RoundRow:
    """One round of the job, as the hub manager recorded it in status.history."""

    round: int
    accuracy: float | None
    loss: float | None
    participants: int
    seconds: float | None
    epsilon: float | None = None  # differential privacy spent up to this round


def rounds_from_history(history: Sequence[Mapping[str, Any]]) -> list[RoundRow]:
    """The last entry of each round (a retried round keeps only its final attempt)."""
    by_round: dict[int, RoundRow] = {}
    for entry in history:
        number = int(entry["round"])
        by_round[number] = RoundRow(
            round=number,
            accuracy=_number(entry.get("accuracy")),
            loss=_number(entry.get("loss")),
            participants=int(entry.get("participants") or entry.get("accepted") or 0),
            seconds=_number(entry.get("durationSeconds")),
            epsilon=_number(entry.get("epsilon")),
        )
    return [by_round[n] for n in sorted(by_round)]


def format_table(rows: Sequence[RoundRow]) -> str:
    """A plain-text table, one line per round."""
    private = any(row.epsilon is not None for row in rows)
    head = f"{'round':>5}  {'accuracy':>8}  {'loss':>8}  {'clusters':>8}  {'seconds':>7}"
    lines = [head + (f"  {'epsilon':>8}" if private else "")]
    for row in rows:
        lines.append(
            f"{row.round:>5}  {_fixed(row.accuracy, 4):>8}  {_fixed(row.loss, 4):>8}  "
            f"{row.participants:>8}  {_fixed(row.seconds, 2):>7}"
            + (f"  {_fixed(row.epsilon, 3):>8}" if private else "")
        )
    return "\n".join(lines)


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    """summary.json, written to a temporary name first so a reader never sees half of it."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(summary, indent=2) + "\n")
    temp.replace(path)


def summary_document(
    *,
    rows: Sequence[RoundRow],
    model_uri: str,
    model_sha256: str,
    clusters: Sequence[str],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    final = rows[-1].accuracy if rows else None
    return {
        "final_accuracy": final,
        "rounds": [_row_document(row) for row in rows],
        "model_uri": model_uri,
        "model_sha256": model_sha256,
        "clusters": len(clusters),
        "cluster_names": list(clusters),
        **extra,
    }


def load_pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (a second of imports: the demo loads it
    while the job runs)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _row_document(row: RoundRow) -> dict[str, Any]:
    """A round of summary.json; `epsilon` only for jobs with differential privacy."""
    document = asdict(row)
    if row.epsilon is None:
        del document["epsilon"]
    return document


def plot_rounds(
    path: Path, *, rows: Sequence[RoundRow], baseline: float | None, title: str
) -> None:
    """Accuracy and loss per round, with the centralised baseline's accuracy as a line."""
    plt = load_pyplot()

    rounds = [row.round for row in rows]
    figure, accuracy_axis = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    try:
        accuracy_axis.plot(
            rounds,
            [_nan(row.accuracy) for row in rows],
            marker="o",
            color="tab:blue",
            label="federated accuracy",
        )
        if baseline is not None:
            accuracy_axis.axhline(
                baseline,
                color="tab:green",
                linestyle="--",
                label=f"centralised baseline ({baseline:.4f})",
            )
        accuracy_axis.set_xlabel("round")
        accuracy_axis.set_ylabel("test accuracy", color="tab:blue")
        accuracy_axis.set_xticks(rounds)
        accuracy_axis.grid(alpha=0.3)
        loss_axis = accuracy_axis.twinx()
        loss_axis.plot(
            rounds,
            [_nan(row.loss) for row in rows],
            marker="s",
            color="tab:red",
            label="federated loss",
        )
        loss_axis.set_ylabel("test loss", color="tab:red")
        _finish(figure, accuracy_axis, loss_axis, title=title, path=path)
    finally:
        plt.close(figure)


def plot_privacy(path: Path, *, rows: Sequence[RoundRow], budget: float | None, title: str) -> None:
    """Epsilon spent (largest of any cluster) and accuracy per round, with the budget."""
    plt = load_pyplot()

    rounds = [row.round for row in rows]
    figure, epsilon_axis = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    try:
        epsilon_axis.plot(
            rounds,
            [_nan(row.epsilon) for row in rows],
            marker="o",
            color="tab:purple",
            label="epsilon (delta 1e-5)",
        )
        if budget is not None:
            epsilon_axis.axhline(
                budget, color="tab:purple", linestyle="--", label=f"maxEpsilon ({budget:g})"
            )
        epsilon_axis.set_xlabel("round")
        epsilon_axis.set_ylabel("epsilon", color="tab:purple")
        epsilon_axis.set_ylim(bottom=0)
        epsilon_axis.set_xticks(rounds)
        epsilon_axis.grid(alpha=0.3)
        accuracy_axis = epsilon_axis.twinx()
        accuracy_axis.plot(
            rounds,
            [_nan(row.accuracy) for row in rows],
            marker="s",
            color="tab:blue",
            label="test accuracy",
        )
        accuracy_axis.set_ylabel("test accuracy", color="tab:blue")
        _finish(figure, epsilon_axis, accuracy_axis, title=title, path=path)
    finally:
        plt.close(figure)


def _finish(figure: Any, left: Any, right: Any, *, title: str, path: Path) -> None:
    """One legend below a two-axis plot, its title, and the file written atomically."""
    handles, labels = left.get_legend_handles_labels()
    more_handles, more_labels = right.get_legend_handles_labels()
    left.legend(
        handles + more_handles,
        labels + more_labels,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncol=3,
        frameon=False,
    )
    left.set_title(title)
    figure.tight_layout()
    temp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temp)
    temp.replace(path)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
