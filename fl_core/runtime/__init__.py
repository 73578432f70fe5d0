"""The training runtime: what runs inside a training Job (`fl-train`).

User API: implement `Trainer` (or subclass `TrainerBase`), see `fl_core.runtime.api`.
"""

from fl_core.runtime.api import Config, EvalOutput, Trainer, TrainerBase, TrainOutput
from fl_core.runtime.runner import TrainingError, run_round

__all__ = [
    "Config",
    "EvalOutput",
    "TrainOutput",
    "Trainer",
    "TrainerBase",
    "TrainingError",
    "run_round",
]
