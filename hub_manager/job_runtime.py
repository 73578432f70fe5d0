"""In-memory state of one job between reconciles, rebuilt from status and store at will.

Nothing here is needed to resume: a restarted manager (or one that lost the lease) builds
a fresh runtime from the CR status and the model store. It only saves work: the strategy
object, the current global weights and the open round session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_contract import naming
from fl_contract.models import ModelRef, StoreConfig
from fl_contract.weights import Weights, decode_weights
from fl_core.store import ModelStore, open_store
from fl_core.strategies import Strategy, make_strategy
from hub_manager.aggregation import RoundSession
from hub_manager.crd_spec import FederatedLearningSpec


def server_state_key(*, namespace: str, job: str, round_number: int) -> str:
    """Store key of the strategy's server state after round `round_number`."""
    model = naming.model_key(namespace=namespace, job=job, round_number=round_number)
    return model.rsplit("/", 1)[0] + "/server-state.safetensors"


@dataclass
class JobRuntime:
    uid: str
    generation: int
    spec: FederatedLearningSpec
    store_config: StoreConfig
    store: ModelStore
    strategy: Strategy
    evaluate: Callable[[Weights], dict[str, float]] | None
    strategy_round: int = 0  # server state loaded/advanced up to this round
    global_round: int = -1  # the round whose model `global_weights` is (-1: not loaded)
    global_weights: Weights | None = None
    session: RoundSession | None = None
    refused_attempt: tuple[int, int] = (0, 0)  # the (round, attempt) `refused` belongs to
    refused: dict[str, str] = field(default_factory=dict)  # cluster -> why its spec was refused

    async def close(self) -> None:
        await self.store.close()


def build_strategy(spec: FederatedLearningSpec) -> Strategy:
    """ValueError (naming the parameter) when the strategy's parameters are wrong."""
    return make_strategy(spec.server.strategy.name, spec.server.strategy.parameters)


def open_job_store(config: StoreConfig, *, file_root: Path | None) -> ModelStore:
    """The job's store; s3:// credentials come from the manager's environment (AWS_*)."""
    return open_store(config, file_root=file_root)


async def load_weights(store: ModelStore, ref: ModelRef) -> Weights:
    return decode_weights(await store.get_buffer(ref.uri, sha256=ref.sha256))


def model_ref(value: Any) -> ModelRef | None:
    """A `{uri, sha256}` mapping from a status or spec as a ModelRef (None if incomplete)."""
    if isinstance(value, dict) and value.get("uri") and value.get("sha256"):
        return ModelRef(uri=str(value["uri"]), sha256=str(value["sha256"]))
    return None
