"""The Flower runtime: what a Flower app is given and how its replies are read.

Apps are written as a Flower user writes them (into the test's folder) and run through
`run_round`, as `fl-train` runs them; failures go through the real `fl-train` process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fl_contract import keys, naming
from fl_contract.models import JobRef, ModelRef, RoundSpec, StoreConfig, TrainingFailure
from fl_contract.weights import decode_weights, encode_weights, sha256_hex
from fl_core.runtime import TrainingError, run_round

pytest.importorskip("flwr", reason="flwr is not installed (pip install -e '.[dev]' brings it)")
from fl_core.runtime import flower  # only once flwr is known to be installed

REPO = Path(__file__).resolve().parents[2]
NODE_CONFIG = {"partition-id": 1, "num-partitions": 3}
_apps = itertools.count()

AppWriter = Callable[..., Any]


def _spec(tmp_path: Path, *, round_number: int = 1, **kw: Any) -> RoundSpec:
    store = StoreConfig(uri=f"file://{tmp_path}/models")
    update = naming.update_key(
        namespace="team-a", job="flwr", round_number=round_number, cluster="cluster2"
    )
    return RoundSpec(
        job=JobRef(namespace="team-a", name="flwr", uid="uid-7"),
        cluster="cluster2",
        round=round_number,
        update_uri=f"{store.uri}/{update}",
        store=store,
        image="trainer:dev",
        framework="flower",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        **kw,
    )


def _global_model(tmp_path: Path, weights: dict[str, np.ndarray]) -> ModelRef:
    path = tmp_path / "models" / "global.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_weights(weights)
    path.write_bytes(data)
    return ModelRef(uri=path.as_uri(), sha256=sha256_hex(data))


@pytest.fixture
def write_app(tmp_path: Path) -> Iterator[AppWriter]:
    """write_app(source, pyproject=None, attr="app", initial=None) -> a loaded FlowerApp;
    the module gets a fresh name so apps of different tests never share an import."""
    written: list[str] = []

    def write(
        source: str, *, pyproject: str | None = None, attr: str = "app", initial: str | None = None
    ) -> Any:
        module = f"flower_test_app_{next(_apps)}"
        folder = tmp_path / "app"
        folder.mkdir(exist_ok=True)
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        if pyproject is not None:
            (folder / "pyproject.toml").write_text(textwrap.dedent(pyproject))
        written.append(module)
        return flower.load_app(
            app_dir=folder,
            client_app=f"{module}:{attr}",
            initial_arrays=f"{module}:{initial}" if initial else None,
        )

    yield write
    for module in written:
        sys.modules.pop(module, None)


async def _run(spec: RoundSpec, app: Any, node_config: dict[str, Any] | None = None) -> Any:
    trainer = flower.FlowerTrainer(app, spec, node_config=node_config or {})
    return await run_round(spec, trainer, dataset_path=None)


def _update(result: Any) -> dict[str, np.ndarray]:
    return decode_weights(Path(result.update_uri.removeprefix("file://")).read_bytes())


RECORDING_APP = """
    import json, os
    import numpy as np
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()
    seen = []

    def record(msg, context):
        content = msg.content
        seen.append({
            "type": msg.metadata.message_type,
            "group": msg.metadata.group_id,
            "dst": msg.metadata.dst_node_id,
            "node_id": context.node_id,
            "run_id": context.run_id,
            "records": {
                "arrays": sorted(content.array_records),
                "configs": sorted(content.config_records),
                "metrics": sorted(content.metric_records),
            },
            "array_names": list(content["arrays"]),
            "dtypes": {k: str(a.numpy().dtype) for k, a in content["arrays"].items()},
            "config": dict(content["config"]),
            "run_config": dict(context.run_config),
            "node_config": dict(context.node_config),
        })
        with open(os.environ["SEEN_FILE"], "w") as handle:
            json.dump(seen, handle)

    @app.train()
    def train(msg, context):
        record(msg, context)
        arrays = {k: a.numpy() * 2 for k, a in msg.content["arrays"].items()}
        reply = RecordDict({
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": 5, "train_acc": 0.5, "hist": [1.0, 2.0]}),
        })
        return Message(reply, reply_to=msg)

    @app.evaluate()
    def evaluate(msg, context):
        record(msg, context)
        metrics = MetricRecord({"num-examples": 4, "eval_acc": 0.75})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)
"""

PYPROJECT = """
    [tool.flwr.app.components]
    clientapp = "ignored:app"

    [tool.flwr.app.config]
    local-epochs = 1
    batch-size = 32

    [tool.flwr.app.config.model]
    depth = 3
"""


async def test_a_message_api_app_gets_what_flower_would_give_it(
    tmp_path: Path, write_app: AppWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEEN_FILE", str(tmp_path / "seen.json"))
    app = write_app(RECORDING_APP, pyproject=PYPROJECT)
    start: dict[str, np.ndarray] = {
        "layer.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "layer.bias": np.ones(3, dtype=np.float64),
    }
    spec = _spec(
        tmp_path,
        round_number=2,
        global_model=_global_model(tmp_path, start),
        training_config={"local-epochs": 2, "lr": 0.5},
        proximal_mu=0.1,
    )
    result = await _run(spec, app, NODE_CONFIG)

    train, evaluate = json.loads((tmp_path / "seen.json").read_text())
    assert [train["type"], evaluate["type"]] == ["train", "evaluate"]
    assert train["records"] == {"arrays": ["arrays"], "configs": ["config"], "metrics": []}
    assert train["array_names"] == ["layer.bias", "layer.weight"]
    assert train["dtypes"] == {"layer.weight": "float32", "layer.bias": "float64"}
    assert train["config"] == {"local-epochs": 2, "lr": 0.5, "server-round": 2, "proximal-mu": 0.1}
    # pyproject defaults (nested tables flattened), then the job's trainingConfig
    assert train["run_config"] == {"local-epochs": 2, "batch-size": 32, "model.depth": 3, "lr": 0.5}
    assert train["node_config"] == NODE_CONFIG
    assert train["group"] == "2"
    assert train["dst"] == train["node_id"] == evaluate["node_id"]
    assert train["run_id"] == evaluate["run_id"] > 0

    # the reply: the update keeps names and dtypes; num-examples is the count; the list
    # metric is not a number and is dropped; the evaluate reply's metrics join in
    assert result.num_examples == 5
    assert result.metrics == {"train_acc": 0.5, "eval_acc": 0.75, "eval_examples": 4.0}
    update = _update(result)
    assert {k: v.dtype for k, v in update.items()} == {k: v.dtype for k, v in start.items()}
    np.testing.assert_array_equal(update["layer.weight"], start["layer.weight"] * 2)
    # the app's evaluate saw the trained model
    assert evaluate["config"]["server-round"] == 2


LEGACY_APP = """
    import numpy as np
    from flwr.client import NumPyClient
    from flwr.clientapp import ClientApp

    class Client(NumPyClient):
        def __init__(self, context):
            self.context = context
        def get_parameters(self, config):
            return [np.full((2, 2), 3.0, np.float32), np.zeros(2)]
        def fit(self, parameters, config):
            step = float(config["lr"]) * int(config["server-round"])
            metrics = {
                "mu": config.get("proximal_mu", 0.0),
                "pid": self.context.node_config["partition-id"],
            }
            return [p - step if i == 0 else p + step for i, p in enumerate(parameters)], 7, metrics
        def evaluate(self, parameters, config):
            return 0.25, 3, {"accuracy": 0.5}

    def client_fn(context):
        return Client(context).to_client()

    app = ClientApp(client_fn=client_fn)
"""


@pytest.mark.parametrize("attr", ["client_fn", "app"])
async def test_a_legacy_numpy_client_trains_from_its_own_parameters(
    tmp_path: Path, write_app: AppWriter, attr: str
) -> None:
    app = write_app(LEGACY_APP, attr=attr)
    assert app.legacy
    spec = _spec(tmp_path, training_config={"lr": 0.5}, proximal_mu=0.2)
    result = await _run(spec, app, NODE_CONFIG)
    assert result.num_examples == 7
    assert result.metrics == {
        "mu": 0.2,
        "pid": 1.0,
        "loss": 0.25,
        "accuracy": 0.5,
        "eval_examples": 3.0,
    }
    update = _update(result)
    # get_parameters gave the first model (a list: arrays named 0, 1 in its order)
    np.testing.assert_array_equal(update["0"], np.full((2, 2), 2.5, np.float32))
    np.testing.assert_array_equal(update["1"], np.full(2, 0.5))
    assert update["0"].dtype == np.float32

    # round 2 from that model: positions kept (10 sorts before 2 by name, not by position)
    many = {str(i): np.full(1, float(i)) for i in range(12)}
    spec = _spec(
        tmp_path,
        round_number=2,
        global_model=_global_model(tmp_path, many),
        training_config={"lr": 0.0},
    )
    second = _update(await _run(spec, app, NODE_CONFIG))
    assert [float(second[str(i)][0]) for i in range(12)] == [float(i) for i in range(12)]


INITIAL_APP = """
    import numpy as np
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg, context):
        metrics = MetricRecord({"num-examples": 1})
        return Message(RecordDict({"arrays": msg.content["arrays"], "metrics": metrics}), reply_to=msg)

    def as_record():
        return ArrayRecord({"w": Array(np.random.rand(3))})

    def as_mapping(context):
        return {"w": np.random.rand(3) * context.run_config["scale"]}

    def as_list():
        return [np.random.rand(3)]

    class Net:
        def state_dict(self):
            return {"w": np.random.rand(3)}
"""


@pytest.mark.parametrize(
    ("initial", "name", "scale"),
    [("as_record", "w", 1), ("as_mapping", "w", 2), ("as_list", "0", 1), ("Net", "w", 1)],
)
async def test_the_first_model_comes_from_a_named_function_seeded_by_the_job(
    tmp_path: Path, write_app: AppWriter, initial: str, name: str, scale: int
) -> None:
    app = write_app(INITIAL_APP, initial=initial)
    spec = _spec(tmp_path, seed=11, training_config={"scale": 2})
    update = _update(await _run(spec, app))
    # what every cluster builds: the app's own generator seeded with the job's seed
    np.random.seed(11)
    expected = np.random.rand(3) * scale
    assert list(update) == [name]
    np.testing.assert_array_equal(update[name], expected)


async def test_a_client_app_without_a_first_model_says_how_to_give_one(
    tmp_path: Path, write_app: AppWriter
) -> None:
    app = write_app(INITIAL_APP)
    with pytest.raises(TrainingError, match=r"initialModel.*--initial-arrays"):
        await _run(_spec(tmp_path), app)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("None", "returned NoneType, not a Message"),
        (
            "Message(RecordDict({'metrics': MetricRecord({'num-examples': 1})}), reply_to=msg)",
            r"exactly one ArrayRecord .*ArrayRecord \[\], MetricRecord \['metrics'\]",
        ),
        (
            "Message(RecordDict({'arrays': arrays}), reply_to=msg)",
            "exactly one MetricRecord holding 'num-examples'",
        ),
        (
            "Message(RecordDict({'arrays': arrays, 'm': MetricRecord({'n': 1})}), reply_to=msg)",
            r"has no 'num-examples' .*\['n'\]",
        ),
        (
            "Message(RecordDict({'arrays': arrays, 'm': MetricRecord({'num-examples': 2.5})}),"
            " reply_to=msg)",
            "num-examples=2.5 is not a number of examples",
        ),
        (
            "Message(RecordDict({'arrays': ArrayRecord({'w': Array(np.full(2, np.nan))}),"
            " 'm': MetricRecord({'num-examples': 2})}), reply_to=msg)",
            r"NonFinite.*'w' holds NaN",
        ),
        (
            "Message(RecordDict({'arrays': ArrayRecord({'v': Array(np.zeros(2))}),"
            " 'm': MetricRecord({'num-examples': 2})}), reply_to=msg)",
            r"NamesMismatch.*missing 'w', unexpected 'v'",
        ),
        ("Message(Error(code=0, reason='out of memory'), reply_to=msg)", "error: out of memory"),
    ],
)
async def test_a_reply_flower_could_not_aggregate_fails_the_round(
    tmp_path: Path, write_app: AppWriter, reply: str, message: str
) -> None:
    source = f"""
        import numpy as np
        from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
        from flwr.clientapp import ClientApp

        app = ClientApp()

        @app.train()
        def train(msg, context):
            arrays = msg.content["arrays"]
            return {reply}
    """
    app = write_app(source)
    spec = _spec(tmp_path, global_model=_global_model(tmp_path, {"w": np.zeros(2)}))
    with pytest.raises(TrainingError, match=message):
        await _run(spec, app)
    assert not (tmp_path / "models" / "team-a").exists()  # nothing published


# -- through fl-train, as the Job runs it ------------------------------------------------


def _fl_train(
    tmp_path: Path, spec: RoundSpec, *args: str, preamble: str = ""
) -> tuple[subprocess.CompletedProcess[str], TrainingFailure | None]:
    (tmp_path / "spec.json").write_text(spec.to_json())
    result = tmp_path / "termination-log"
    env = {
        **os.environ,
        keys.ENV_ROUND_SPEC_PATH: str(tmp_path / "spec.json"),
        keys.ENV_RESULT_PATH: str(result),
        keys.ENV_NODE_CONFIG: json.dumps(NODE_CONFIG),
        "PYTHONPATH": str(REPO),
    }
    code = f"{preamble}\nimport sys\nfrom fl_core.runtime.__main__ import main\nsys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    record = TrainingFailure.from_json(result.read_text()) if proc.returncode else None
    return proc, record


def _write(folder: Path, name: str, source: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(source))


def test_fl_train_runs_the_app_its_pyproject_names(tmp_path: Path) -> None:
    """The example app from its folder: the ClientApp from pyproject.toml, the first model
    from --initial-arrays, node_config from FL_NODE_CONFIG."""
    proc, _ = _fl_train(
        tmp_path,
        _spec(tmp_path),
        "--app-dir",
        str(REPO / "examples" / "flower-digits"),
        "--initial-arrays",
        "flower_digits.task:initial_arrays",
    )
    assert proc.returncode == 0, proc.stderr
    assert "359 examples" in proc.stderr.splitlines()[-1]  # partition 1 of 3, as digits' cluster2


def test_an_app_that_cannot_be_imported_says_so_in_the_failure_record(tmp_path: Path) -> None:
    _write(tmp_path / "app", "broken.py", "import no_such_package_xyz\n")
    proc, record = _fl_train(
        tmp_path, _spec(tmp_path), "--app-dir", str(tmp_path / "app"), "--client-app", "broken:app"
    )
    assert proc.returncode == 2
    assert record is not None
    assert record.summary().startswith("ImportError: No module named 'no_such_package_xyz'")
    assert "--client-app 'broken:app'" in record.message


def test_an_exception_in_the_app_reaches_the_failure_record(tmp_path: Path) -> None:
    _write(
        tmp_path / "app",
        "failing.py",
        """
        import sys
        from flwr.clientapp import ClientApp

        app = ClientApp()

        @app.train()
        def train(msg, context):
            print("loss diverged at step 12", file=sys.stderr)
            raise FloatingPointError("learning rate 5.0 is too high")
        """,
    )
    spec = _spec(tmp_path, global_model=_global_model(tmp_path, {"w": np.zeros(2)}))
    proc, record = _fl_train(
        tmp_path, spec, "--app-dir", str(tmp_path / "app"), "--client-app", "failing:app"
    )
    assert proc.returncode == 1
    assert record is not None
    assert record.summary() == "FloatingPointError: learning rate 5.0 is too high"
    assert "loss diverged at step 12" in record.stderr


@pytest.mark.parametrize(
    ("args", "framework", "message"),
    [
        (["--example", "digits"], "flower", "drop --trainer/--example"),
        (["--client-app", "x:app"], None, "for Flower jobs only"),
        ([], "flower", "no Flower ClientApp named"),
    ],
)
def test_options_that_do_not_fit_the_framework_exit_2(
    tmp_path: Path, args: list[str], framework: str | None, message: str
) -> None:
    spec = _spec(tmp_path).model_copy(update={"framework": framework})
    proc, record = _fl_train(tmp_path, spec, *args)
    assert proc.returncode == 2, proc.stderr
    assert record is not None
    assert message in record.message


def test_without_flwr_a_flower_job_says_what_to_install(tmp_path: Path) -> None:
    proc, record = _fl_train(
        tmp_path,
        _spec(tmp_path),
        "--client-app",
        "x:app",
        preamble="import sys\nsys.modules['flwr'] = None",
    )
    assert proc.returncode == 2
    assert record is not None
    assert record.failure == "ImportError"
    assert "pip install 'ocm-federated-learning[flower]'" in record.message


def test_the_hub_manager_and_the_agent_never_import_flwr() -> None:
    code = (
        "import sys, hub_manager.__main__, spoke_agent.__main__, fl_core.runtime.__main__\n"
        "sys.exit('flwr' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr or "flwr was imported"


def test_node_config_must_be_a_json_object_of_scalars() -> None:
    assert flower.node_config_from(None) == {}
    assert flower.node_config_from('{"partition-id": 2}') == {"partition-id": 2}
    for bad in ("[1]", '{"a": [1]}', "{nope"):
        with pytest.raises(TrainingError, match="FL_NODE_CONFIG"):
            flower.node_config_from(bad)
