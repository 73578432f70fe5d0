"""Hub-side evaluators of a global model, by task name."""

from __future__ import annotations

from collections.abc import Callable

from fl_contract.weights import Weights

Evaluator = Callable[[Weights], dict[str, float]]


def _digits() -> Evaluator:
    from fl_core.examples.digits import evaluate_global

    return evaluate_global


_EVALUATORS: dict[str, Callable[[], Evaluator]] = {"digits": _digits}
EVALUATOR_NAMES: tuple[str, ...] = tuple(_EVALUATORS)


def get_evaluator(name: str) -> Evaluator:
    """The evaluator for a task (`digits`); ValueError naming the known ones otherwise."""
    factory = _EVALUATORS.get(name)
    if factory is None:
        raise ValueError(f"no evaluator named {name!r}; known: {', '.join(EVALUATOR_NAMES)}")
    return factory()
