"""A Flower client app, unchanged, as the trainer of a round (`spec.framework: flower`).

The app gets what a Flower SuperNode would hand it, built from the round spec:

- one `Message` per step (type "train", then "evaluate"), its content a `RecordDict` with
  the global model as the `ArrayRecord` "arrays" (names and dtypes as stored; arrays named
  0, 1, ... in that order, others in name order) and the `ConfigRecord` "config": the job's
  `client.trainingConfig` plus "server-round" (1-based) and, under FedProx, "proximal-mu";
- a `Context`: `run_config` is the app's `[tool.flwr.app.config]` (pyproject.toml in the
  app folder, tables flattened with ".") updated with `client.trainingConfig`;
  `node_config` is the cluster's dataset catalogue entry's `nodeConfig` (FL_NODE_CONFIG);
  `state` starts empty in every round's Job; run and node ids are derived from the job and
  the cluster.

Its replies are read as Flower's strategies read them: exactly one `ArrayRecord` (the
update) and one `MetricRecord` holding "num-examples" (the example count); the other
metrics are the cluster's reported metrics. The evaluate reply's metrics join them, its
"num-examples" as `eval_examples`. A legacy app (`ClientApp(client_fn=...)`, or a bare
`client_fn(context)` returning a `NumPyClient` or `Client`) gets the Fit/Evaluate message
layout Flower's compatibility layer builds, with the same config ("proximal_mu" for
FedProx, as Flower's legacy strategy names it) and its model as a list (arrays named 0, 1, ...).

The first model, when the job names no `spec.server.initialModel`, comes from the app:
the function named by `--initial-arrays` (no argument, or the Context), which may return an
`ArrayRecord`, a mapping or list of arrays, or a module with `state_dict()`; a legacy app
without it answers `get_parameters`. Python's, numpy's and (when imported) torch's random
generators are seeded with the job's seed first, so every cluster builds the same model.

Only `fl-train` imports this module, and only for Flower jobs: flwr is a dependency of the
training image alone (`ocm-federated-learning[flower]`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import re
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common import (
    Code,
    EvaluateIns,
    FitIns,
    GetParametersIns,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import SUPERLINK_NODE_ID, MessageTypeLegacy
from flwr.compat.common.recorddict_compat import (
    evaluateins_to_recorddict,
    fitins_to_recorddict,
    getparametersins_to_recorddict,
    recorddict_to_evaluateres,
    recorddict_to_fitres,
    recorddict_to_getparametersres,
)

from fl_contract.models import RoundSpec, ScalarValue
from fl_contract.weights import Weights
from fl_core.runtime.api import Config, EvalOutput, TrainOutput
from fl_core.runtime.loading import UsageError, import_target
from fl_core.runtime.runner import TrainingError

# The Flower minor versions the tests ran against (the `flower` extra pins this range).
TESTED_FLWR = ((1, 32), (1, 42))
NUM_EXAMPLES = "num-examples"
SERVER_ROUND = "server-round"
ARRAYS = "arrays"
CONFIG = "config"
PYPROJECT = "pyproject.toml"
_ID_BITS = 63  # Flower's run and node ids are unsigned 64-bit; stay clear of the sign bit

UserConfig = dict[str, ScalarValue]


@dataclass(frozen=True)
class FlowerApp:
    """The user's client app, loaded: what `fl-train` runs for a Flower job."""

    app: ClientApp
    name: str  # how it was named, "package.module:app", for messages
    legacy: bool  # built from a client_fn: speaks the Fit/Evaluate message layout
    run_config: UserConfig  # the app's own defaults ([tool.flwr.app.config])
    initial_arrays: Callable[..., object] | None = None


def load_app(
    *, app_dir: Path | None, client_app: str | None, initial_arrays: str | None
) -> FlowerApp:
    """Import the ClientApp named on the command line or in the app's pyproject.toml.

    Like `flwr run`, the app folder (default: the working directory) goes first on
    sys.path. UsageError (exit 2) when nothing is named or the name does not resolve."""
    _warn_if_untested()
    folder = (app_dir or Path.cwd()).resolve()
    if app_dir is not None and not folder.is_dir():
        raise UsageError(f"--app-dir {app_dir}: no such folder")
    app_table = _table(_flwr_table(folder / PYPROJECT), "app")
    target = client_app or str(_table(app_table, "components").get("clientapp") or "")
    if not target:
        raise UsageError(
            "no Flower ClientApp named: give --client-app package.module:app, or --app-dir "
            f"the app folder whose {PYPROJECT} sets [tool.flwr.app.components] clientapp"
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    app, legacy = _as_client_app(import_target(target, flag="--client-app"), target)
    init: Callable[..., object] | None = None
    if initial_arrays is not None:
        found = import_target(initial_arrays, flag="--initial-arrays")
        if not callable(found):
            raise UsageError(
                f"--initial-arrays {initial_arrays!r} is a {type(found).__name__}; "
                "name a function (or class) that returns the first model",
                failure="TypeError",
            )
        init = found
    defaults = _flatten(_table(app_table, "config"), where=f"{folder / PYPROJECT}")
    return FlowerApp(app=app, name=target, legacy=legacy, run_config=defaults, initial_arrays=init)


def node_config_from(text: str | None) -> UserConfig:
    """FL_NODE_CONFIG (a JSON object of scalars, set by the agent) as a node_config."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainingError(f"FL_NODE_CONFIG is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, str | int | float | bool) for v in value.values()
    ):
        raise TrainingError("FL_NODE_CONFIG must be a JSON object of strings, numbers, booleans")
    return {str(k): v for k, v in value.items()}


class FlowerTrainer:
    """The `Trainer` that runs one round's steps through the Flower app."""

    def __init__(self, app: FlowerApp, spec: RoundSpec, *, node_config: UserConfig) -> None:
        self._app = app
        self._spec = spec
        self._node_id = _id64(spec.cluster)
        self.context = Context(
            run_id=_id64(spec.job.uid),
            node_id=self._node_id,
            node_config=dict(node_config),
            state=RecordDict(),
            run_config={**app.run_config, **spec.training_config},
        )

    # -- the Trainer protocol ----------------------------------------------------------

    def init_weights(self, seed: int) -> Weights:
        """The first model from the app (see the module docstring)."""
        init = self._app.initial_arrays
        if init is not None:
            _seed_generators(seed)
            value = init(self.context) if _takes_one_argument(init) else init()
            return _weights_of(value, where=f"--initial-arrays ({_name(init)})")
        if self._app.legacy:
            _seed_generators(seed)
            ins = GetParametersIns(config={})
            reply = self._send(
                MessageTypeLegacy.GET_PARAMETERS, getparametersins_to_recorddict(ins)
            )
            res = recorddict_to_getparametersres(reply.content, keep_input=False)
            self._check(res.status, "get_parameters", hint=_INITIAL_HINT)
            return _by_position(parameters_to_ndarrays(res.parameters))
        raise TrainingError(
            f"round 1 has no model to start from: the ClientApp {self._app.name!r} cannot "
            f"give one; {_INITIAL_HINT}"
        )

    def load_data(self, path: Path | None) -> None:
        """Nothing: a Flower app loads its own data (node_config, FL_DATASET_PATH)."""
        return None

    def train(self, weights: Weights, config: Config, data: Any) -> TrainOutput:
        if self._app.legacy:
            names = _ordered_names(weights)
            ins = FitIns(ndarrays_to_parameters([weights[n] for n in names]), self._config(True))
            reply = self._send(MessageType.TRAIN, fitins_to_recorddict(ins, keep_input=True))
            res = recorddict_to_fitres(reply.content, keep_input=False)
            self._check(res.status, "fit")
            arrays = parameters_to_ndarrays(res.parameters)
            if len(arrays) != len(names):
                raise TrainingError(
                    f"{self._where('fit')} returned {len(arrays)} arrays; the model has "
                    f"{len(names)}"
                )
            count = _count(res.num_examples, where=self._where("fit"))
            return dict(zip(names, arrays, strict=True)), count, _scalars(res.metrics)
        reply = self._send(MessageType.TRAIN, self._content(weights))
        content = reply.content
        if len(content.array_records) != 1:
            raise TrainingError(
                f"{self._where('train')} must reply with exactly one ArrayRecord (the "
                f"trained model); the reply holds {_shape(content)}"
            )
        (record,) = content.array_records.values()
        metrics = self._metric_record(content, "train")
        count = _count(metrics[NUM_EXAMPLES], where=self._where("train"))
        return _weights_of(record, where=self._where("train")), count, _scalars(metrics)

    def evaluate(self, weights: Weights, config: Config, data: Any) -> EvalOutput:
        if self._app.legacy:
            names = _ordered_names(weights)
            ins = EvaluateIns(
                ndarrays_to_parameters([weights[n] for n in names]), self._config(True)
            )
            reply = self._send(MessageType.EVALUATE, evaluateins_to_recorddict(ins, True))
            res = recorddict_to_evaluateres(reply.content)
            if res.status.code == Code.EVALUATE_NOT_IMPLEMENTED:
                return 0, {}
            self._check(res.status, "evaluate")
            reported = {"loss": res.loss, **_scalars(res.metrics)}
            return _count(res.num_examples, where=self._where("evaluate")), reported
        if not _registered(self._app.app, MessageType.EVALUATE):
            return 0, {}
        reply = self._send(MessageType.EVALUATE, self._content(weights))
        record = self._metric_record(reply.content, "evaluate")
        return _count(record[NUM_EXAMPLES], where=self._where("evaluate")), _scalars(record)

    # -- messages ----------------------------------------------------------------------

    def _config(self, legacy: bool = False) -> dict[str, Any]:
        config: dict[str, Any] = dict(self._spec.training_config)
        config[SERVER_ROUND] = self._spec.round
        if self._spec.proximal_mu > 0:
            config["proximal_mu" if legacy else "proximal-mu"] = self._spec.proximal_mu
        return config

    def _content(self, weights: Weights) -> RecordDict:
        arrays = ArrayRecord(
            {name: Array(np.asarray(weights[name])) for name in _ordered_names(weights)}
        )
        return RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord(self._config())})

    def _send(self, message_type: str, content: RecordDict) -> Message:
        """Deliver one message to the app as a SuperNode would; its reply, checked."""
        spec = self._spec
        left = (spec.deadline - datetime.now(UTC)).total_seconds()
        key = f"{spec.job.uid}/{spec.round}/{spec.attempt}/{spec.cluster}/{message_type}"
        # A message as a SuperNode delivers it: metadata set as the SuperLink sent it (the
        # public constructors build a sender's message, for a process with a task identity).
        message = Message(  # type: ignore[call-overload]
            content=content,
            metadata=Metadata(
                run_id=self.context.run_id,
                message_id=hashlib.sha256(key.encode()).hexdigest(),
                src_node_id=SUPERLINK_NODE_ID,
                dst_node_id=self._node_id,
                reply_to_message_id="",
                group_id=str(spec.round),
                created_at=time.time(),
                ttl=max(1.0, left),
                message_type=message_type,
            ),
        )
        reply = self._app.app(message, self.context)
        where = self._where(message_type)
        if not isinstance(reply, Message):
            raise TrainingError(f"{where} returned {type(reply).__name__}, not a Message")
        if reply.has_error():
            raise TrainingError(f"{where} replied with an error: {reply.error.reason}")
        return reply

    def _metric_record(self, content: RecordDict, step: str) -> MetricRecord:
        where = self._where(step)
        if len(content.metric_records) != 1:
            raise TrainingError(
                f"{where} must reply with exactly one MetricRecord holding {NUM_EXAMPLES!r}; "
                f"the reply holds {_shape(content)}"
            )
        (metrics,) = content.metric_records.values()
        if NUM_EXAMPLES not in metrics:
            raise TrainingError(
                f"{where}: the reply's MetricRecord has no {NUM_EXAMPLES!r} (the number of "
                f"examples, which weighs the update); it has {sorted(metrics)}"
            )
        return metrics

    def _check(self, status: Status, step: str, *, hint: str = "") -> None:
        if status.code != Code.OK:
            extra = f"; {hint}" if hint else ""
            raise TrainingError(f"{self._where(step)}: {status.code.name}: {status.message}{extra}")

    def _where(self, step: str) -> str:
        return f"the ClientApp {self._app.name!r} ({step})"


_INITIAL_HINT = (
    "set spec.server.initialModel, or name a function that returns the first model with "
    "--initial-arrays package.module:function in spec.client.args"
)


def _as_client_app(obj: object, target: str) -> tuple[ClientApp, bool]:
    if isinstance(obj, ClientApp):
        # A ClientApp(client_fn=...) answers the legacy layout; Flower keeps that handler
        # in `_call` (decorated apps leave it None).
        return obj, getattr(obj, "_call", None) is not None
    if inspect.isfunction(obj):  # a legacy client_fn(context) -> Client
        try:
            return ClientApp(client_fn=obj), True
        except ValueError as exc:
            raise UsageError(f"--client-app {target!r}: {exc}", failure="TypeError") from None
    raise UsageError(
        f"--client-app {target!r} is a {type(obj).__name__}: name a flwr ClientApp or a "
        "client_fn(context) that returns a Client or NumPyClient",
        failure="TypeError",
    )


def _registered(app: ClientApp, category: str) -> bool:
    """Whether a Message-API app has a function for `category` (Flower's own registry)."""
    funcs = getattr(app, "_registered_funcs", None)
    return funcs is None or f"{category}.default" in funcs


def _flwr_table(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it as TOML ({exc})") from None
    return dict(_table(_table(document, "tool"), "flwr"))


def _table(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, Mapping) else {}


def _flatten(table: Mapping[str, Any], *, where: str, prefix: str = "") -> UserConfig:
    """[tool.flwr.app.config] with nested tables joined by "." (as Flower does)."""
    flat: UserConfig = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, where=where, prefix=f"{name}."))
        elif isinstance(value, str | int | float | bool):
            flat[name] = value
        else:
            raise UsageError(
                f"{where}: [tool.flwr.app.config] {name} is a {type(value).__name__}; "
                "values must be strings, numbers or booleans"
            )
    return flat


def _ordered_names(weights: Mapping[str, Any]) -> list[str]:
    """Arrays named 0, 1, ... (a list model) in that order; named arrays by name."""
    names = list(weights)
    if all(name.isdigit() for name in names):
        return sorted(names, key=int)
    return sorted(names)


def _by_position(arrays: list[Any]) -> Weights:
    return {str(i): np.asarray(a) for i, a in enumerate(arrays)}


def _weights_of(value: object, *, where: str) -> Weights:
    """Named numpy arrays from what an app returns as a model."""
    if isinstance(value, ArrayRecord):
        try:
            return {name: array.numpy() for name, array in value.items()}
        except (TypeError, ValueError) as exc:
            raise TrainingError(
                f"{where}: the ArrayRecord cannot be read as arrays: {exc}"
            ) from None
    state_dict = getattr(value, "state_dict", None)
    if callable(state_dict):  # a torch module: its state_dict, tensors as numpy arrays
        return _weights_of(state_dict(), where=where)
    if isinstance(value, Mapping):
        return {str(k): _numpy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return _by_position(list(value))
    raise TrainingError(
        f"{where} gave a {type(value).__name__}; expected an ArrayRecord, a mapping or list of "
        "arrays, or a module with state_dict()"
    )


def _numpy(value: Any) -> Any:
    """A numpy array of a value: arrays as they are, tensors through `.numpy()` on the CPU."""
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if callable(detach):
        return np.asarray(detach().cpu().numpy())
    return np.asarray(value)


def _count(value: object, *, where: str) -> int:
    """An example count: a non-negative whole number (Flower allows a float weight)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrainingError(f"{where}: {NUM_EXAMPLES}={value!r} is not a number of examples")
    if not (value >= 0 and float(value).is_integer()):
        raise TrainingError(f"{where}: {NUM_EXAMPLES}={value!r} is not a number of examples")
    return int(value)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The reported metrics: scalar entries but the count; lists are dropped, said so."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if name == NUM_EXAMPLES:
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
        else:
            print(f"fl-train: metric {name!r} is not a number; not reported", file=sys.stderr)
    return out


def _shape(content: RecordDict) -> str:
    kinds = (
        ("ArrayRecord", content.array_records),
        ("MetricRecord", content.metric_records),
        ("ConfigRecord", content.config_records),
    )
    return ", ".join(f"{kind} {sorted(records)}" for kind, records in kinds)


def _seed_generators(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # the global generator an app may use
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _takes_one_argument(function: Callable[..., object]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


def _name(function: Callable[..., object]) -> str:
    return f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', '?')}"


def _id64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> (64 - _ID_BITS)


def _warn_if_untested() -> None:
    try:
        version = metadata.version("flwr")
    except metadata.PackageNotFoundError:
        return
    minor = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    low, high = TESTED_FLWR
    if not low <= minor <= high:
        print(
            f"fl-train: flwr {version} is installed; the Flower runtime is tested with "
            f"{low[0]}.{low[1]} to {high[0]}.{high[1]}",
            file=sys.stderr,
        )
