"""In-memory state of one job between reconciles, rebuilt from status and store at will.

Nothing here is needed to resume: a restarted manager (or one that lost the lease) builds
a fresh runtime from the CR status and the model store. It only saves work: the strategy
object, the current global weights and the open round session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fl_contract import naming
from fl_contract.models import ModelRef, StoreConfig
from fl_contract.weights import Weights, WeightsFormatError, decode_weights
from fl_core.evaluation import get_evaluator
from fl_core.privacy.dp.central import ClusterDPStrategy
from fl_core.store import IntegrityError, ModelStore, ObjectNotFound, StoreError, open_store
from fl_core.strategies import Strategy, make_strategy
from hub_manager.aggregation import RoundSession
from hub_manager.crd_spec import FederatedLearningSpec, SpecError, parse_spec
from hub_manager.work import oversized_round_spec, store_config

if TYPE_CHECKING:
    from hub_manager.secure_rounds import SecureSession


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
    session: RoundSession | SecureSession | None = None
    refused_attempt: tuple[int, int] = (0, 0)  # the (round, attempt) `refused` belongs to
    refused: dict[str, str] = field(default_factory=dict)  # cluster -> why its spec was refused

    async def close(self) -> None:
        await self.store.close()


def build_strategy(spec: FederatedLearningSpec) -> Strategy:
    """ValueError (naming the parameter) when the strategy's parameters are wrong."""
    strategy = make_strategy(spec.server.strategy.name, spec.server.strategy.parameters)
    dp = spec.privacy.differential_privacy
    if dp is not None and dp.level == "Cluster" and spec.privacy.secure is None:
        # The hub sees each update, so it clips them and adds the noise itself (under secure
        # aggregation each cluster clips its own and adds its share of the noise).
        return ClusterDPStrategy(strategy, clip=dp.clip_norm, noise_multiplier=dp.noise_multiplier)
    return strategy


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


async def open_runtime(
    obj: dict[str, Any], *, default_store_path: str, file_store_root: Path | None
) -> JobRuntime:
    """The runtime of a job's current spec. SpecError names every field the user must fix,
    including what only the store can tell (an unusable initial model); a store that cannot
    be reached raises StoreError (temporary)."""
    spec = parse_spec(obj.get("spec"))
    problems: list[str] = []
    strategy: Strategy | None = None
    try:
        strategy = build_strategy(spec)
    except ValueError as exc:
        problems.append(f"spec.server.strategy.parameters: {exc}")
    evaluate = None
    if spec.server.evaluator:
        try:
            evaluate = get_evaluator(spec.server.evaluator)
        except (ValueError, KeyError) as exc:
            problems.append(f"spec.server.evaluation.evaluator: {exc}")
    config = store_config(spec, default_path=default_store_path, file_store_root=file_store_root)
    store: ModelStore | None = None
    try:
        store = open_job_store(config, file_root=None)
    except StoreError as exc:
        problems.append(f"spec.server.storage: {exc}")
    try:
        if store is not None:
            oversized = oversized_round_spec(obj, spec, store=config, uri_for=store.uri_for)
            if oversized:
                problems.append(oversized)
        if problems or store is None or strategy is None:
            raise SpecError(problems)
        runtime = JobRuntime(
            uid=str(obj["metadata"]["uid"]),
            generation=int(obj["metadata"].get("generation") or 0),
            spec=spec,
            store_config=config,
            store=store,
            strategy=strategy,
            evaluate=evaluate,
        )
        problem = await _load_initial_model(runtime, obj)
        if problem:
            raise SpecError([problem])
    except BaseException:
        if store is not None:
            await store.close()
        raise
    return runtime


async def _load_initial_model(runtime: JobRuntime, obj: dict[str, Any]) -> str | None:
    """Check spec.server.initialModel before round 1 (a weights file in the job's store with
    that sha256) and keep it loaded as round 1's global model. Returns the problem with its
    field path; store faults propagate (temporary)."""
    ref = runtime.spec.server.initial_model
    published = int(((obj.get("status") or {}).get("model") or {}).get("round") or 0)
    if ref is None or published > 0:
        return None
    field_ = "spec.server.initialModel"
    store = runtime.store
    try:
        store.key_for(ref.uri)
    except StoreError:
        return (
            f"{field_}.uri: {ref.uri!r} is not in the job's model store {store.base_uri}; "
            "copy the model into that store and give its URI there"
        )
    try:
        runtime.global_weights = await load_weights(store, ref)
    except ObjectNotFound:
        return f"{field_}.uri: there is no model at {ref.uri}; upload it, or fix the URI"
    except IntegrityError as exc:
        return f"{field_}.sha256: {exc}; give the sha256 of the file you meant"
    except WeightsFormatError as exc:
        return f"{field_}.uri: {ref.uri} is not a safetensors weights file: {exc}"
    runtime.global_round = 0
    return None
