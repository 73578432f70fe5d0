"""`fl-train` as the Job runs it: a real process, env vars, a file:// store."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from fl_contract import keys, naming
from fl_contract.models import (
    MAX_RESULT_BYTES,
    JobRef,
    ModelRef,
    RoundSpec,
    StoreConfig,
    TrainingFailure,
    TrainingResult,
)
from fl_contract.weights import decode_weights, encode_weights, sha256_hex
from fl_core.examples import digits
from fl_core.runtime import TrainerBase, run_round
from fl_core.runtime.__main__ import main as train_main
from fl_core.store import open_store
from hub_manager.store_access import AccessGranter

REPO = Path(__file__).resolve().parents[2]


def _spec(
    tmp_path: Path, *, round_number: int = 1, global_model: ModelRef | None = None, **kw: object
) -> RoundSpec:
    store = StoreConfig(uri=f"file://{tmp_path}/models")
    update = naming.update_key(
        namespace="team-a", job="digits", round_number=round_number, cluster="cluster2"
    )
    return RoundSpec(
        job=JobRef(namespace="team-a", name="digits", uid="uid-1"),
        cluster="cluster2",
        round=round_number,
        global_model=global_model,
        update_uri=f"{store.uri}/{update}",
        store=store,
        image="trainer:dev",
        dataset="digits",
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        **kw,
    )


def _run(
    tmp_path: Path, spec: RoundSpec | None, *args: str, dataset: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    spec_file = tmp_path / "round-spec.json"
    if spec is not None:
        spec_file.write_text(spec.to_json())
    result = tmp_path / "termination-log"
    env = {
        **os.environ,
        keys.ENV_ROUND_SPEC_PATH: str(spec_file),
        keys.ENV_RESULT_PATH: str(result),
        keys.ENV_WORK_DIR: str(tmp_path),
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
    }
    if dataset is not None:
        env[keys.ENV_DATASET_PATH] = str(dataset)
    proc = subprocess.run(
        [sys.executable, "-m", "fl_core.runtime", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc, result


def test_round_one_from_seed_then_round_two_from_the_global_model(tmp_path: Path) -> None:
    folders = digits.prepare_cluster_datasets(tmp_path / "data", clusters=3)
    proc, result_file = _run(tmp_path, _spec(tmp_path), "--example", "digits", dataset=folders[1])
    assert proc.returncode == 0, proc.stderr
    result = TrainingResult.from_json(result_file.read_text())
    assert result.num_examples == 359
    assert {"train_loss", "accuracy", "loss", "eval_examples"} <= set(result.metrics)
    path = tmp_path / "models/team-a/digits/rounds/1/updates/cluster2.safetensors"
    assert sha256_hex(path.read_bytes()) == result.sha256
    update = decode_weights(path.read_bytes())
    # the Job's update equals the example trained directly (same seed, round and client index)
    part = digits.DigitsTrainer().load_data(folders[1])
    expected, _ = digits.local_train(
        digits.init_weights(), part["x"], part["y"], rng=digits.client_rng(1, 1)
    )
    np.testing.assert_allclose(update["W"], expected["W"])

    ref = ModelRef(uri=result.update_uri, sha256=result.sha256)
    proc, result_file = _run(
        tmp_path, _spec(tmp_path, round_number=2, global_model=ref), dataset=folders[1]
    )
    assert proc.returncode == 0, proc.stderr
    second = TrainingResult.from_json(result_file.read_text())
    assert second.update_uri.endswith("/rounds/2/updates/cluster2.safetensors")
    assert second.sha256 != result.sha256


def test_corrupt_global_model_leaves_a_failure_record(tmp_path: Path) -> None:
    folders = digits.prepare_cluster_datasets(tmp_path / "data", clusters=2)
    model = tmp_path / "models/team-a/digits/rounds/1/global.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(encode_weights(digits.init_weights()))
    ref = ModelRef(uri=f"file://{model}", sha256="0" * 64)
    proc, result_file = _run(
        tmp_path,
        _spec(tmp_path, round_number=2, global_model=ref),
        "--example",
        "digits",
        dataset=folders[0],
    )
    assert proc.returncode == 1
    record = TrainingFailure.from_json(result_file.read_text())
    assert record.failure == "IntegrityError"
    assert "sha256 is " in record.message
    assert proc.stderr.strip().splitlines()[-1] == f"fl-train: {record.summary()}"
    assert not (tmp_path / "models/team-a/digits/rounds/2").exists()


def test_a_trainer_that_cannot_be_imported_says_so_in_the_failure_record(
    tmp_path: Path,
) -> None:
    proc, result_file = _run(tmp_path, _spec(tmp_path), "--trainer", "nosuch:Trainer")
    assert proc.returncode == 2
    record = TrainingFailure.from_json(result_file.read_text())
    assert record.summary().startswith("ImportError: No module named 'nosuch'")
    assert "--trainer 'nosuch:Trainer'" in record.message


def test_the_failure_record_carries_the_last_lines_of_stderr(tmp_path: Path) -> None:
    """What the trainer printed or logged before it failed travels with the failure, the
    newest lines kept, bounded to the termination message's 4096 bytes."""
    (tmp_path / "noisy_trainer.py").write_text(
        textwrap.dedent(
            """
            import logging, sys, warnings
            from fl_core.runtime import TrainerBase

            class Noisy(TrainerBase):
                def init_weights(self, seed):
                    return {}
                def load_data(self, path):
                    for i in range(400):
                        print(f"loading shard {i:03d} " + "x" * 40, file=sys.stderr)
                    logging.getLogger("noisy").warning("shard 400 is empty")
                    warnings.warn("falling back to the CPU")
                    raise FileNotFoundError("/data/train.npz has no rows")
                def train(self, weights, config, data):
                    return weights, 0, {}
            """
        )
    )
    proc, result_file = _run(tmp_path, _spec(tmp_path), "--trainer", "noisy_trainer:Noisy")
    assert proc.returncode == 1
    raw = result_file.read_bytes()
    assert len(raw) <= MAX_RESULT_BYTES
    record = TrainingFailure.from_json(raw)
    assert record.summary() == "FileNotFoundError: /data/train.npz has no rows"
    lines = record.stderr.splitlines()
    assert "shard 400 is empty" in lines[-3]
    assert "falling back to the CPU" in record.stderr
    assert lines[0].startswith("loading shard 3")  # the oldest lines gave way
    assert "loading shard 399" in record.stderr
    assert "loading shard 399" in proc.stderr  # written through to the pod's log as well


@pytest.mark.parametrize(
    ("args", "failure", "message"),
    [
        (["--example", "mnist"], "UsageError", "invalid choice"),
        (["--trainer", "nocolon"], "UsageError", "package.module:Attribute"),
        (["--trainer", "no_such_module_xyz:T"], "ImportError", "cannot import"),
        (["--trainer", "json:NoSuch"], "AttributeError", "has no attribute 'NoSuch'"),
        (["--example", "digits", "--trainer", "a:b"], "UsageError", "not allowed with"),
    ],
)
def test_invalid_command_line_exits_2_with_one_line(
    tmp_path: Path,
    args: list[str],
    failure: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(keys.ENV_ROUND_SPEC_PATH, str(tmp_path / "spec.json"))
    monkeypatch.setenv(keys.ENV_RESULT_PATH, str(tmp_path / "result"))
    assert train_main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    record = TrainingFailure.from_json((tmp_path / "result").read_text())
    assert (record.failure, lines[0]) == (failure, f"fl-train: {record.summary()}")


def test_missing_environment_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(keys.ENV_ROUND_SPEC_PATH, raising=False)
    assert train_main(["--example", "digits"]) == 2
    assert "FL_ROUND_SPEC_PATH must be set" in capsys.readouterr().err


def test_user_trainer_from_module_attr(tmp_path: Path) -> None:
    (tmp_path / "my_trainer.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from fl_core.runtime import TrainerBase

            class Halve(TrainerBase):
                def init_weights(self, seed):
                    return {"w": np.full(4, float(seed), dtype=np.float32)}
                def load_data(self, path):
                    return None
                def train(self, weights, config, data):
                    return {"w": weights["w"] / 2 + config["bias"]}, 7, {"mu": config["proximal_mu"]}
            """
        )
    )
    spec = _spec(tmp_path, seed=4, training_config={"bias": 1.0}, proximal_mu=0.25, evaluate=False)
    proc, result_file = _run(tmp_path, spec, "--trainer", "my_trainer:Halve")
    assert proc.returncode == 0, proc.stderr
    result = TrainingResult.from_json(result_file.read_text())
    assert result.num_examples == 7
    assert result.metrics == {"mu": 0.25}
    path = Path(result.update_uri[len("file://") :])
    np.testing.assert_array_equal(
        decode_weights(path.read_bytes())["w"], np.full(4, 3.0, np.float32)
    )


class _WrongShape(TrainerBase):
    def init_weights(self, seed: int) -> dict[str, np.ndarray]:
        return {"w": np.zeros(3)}

    def load_data(self, path: Path | None) -> None:
        return None

    def train(self, weights, config, data):  # type: ignore[no-untyped-def]
        return {"w": np.zeros(4)}, 1, {}


async def test_a_trainer_that_changes_shapes_is_refused_before_publishing(tmp_path: Path) -> None:
    spec = _spec(tmp_path, evaluate=False)
    with pytest.raises(Exception, match="ShapeMismatch"):
        await run_round(spec, _WrongShape(), dataset_path=None)
    assert not await open_store(spec.store).exists(spec.update_uri)


class _Scale(TrainerBase):
    def init_weights(self, seed: int) -> dict[str, np.ndarray]:
        return {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}

    def load_data(self, path: Path | None) -> None:
        return None

    def train(self, weights, config, data):  # type: ignore[no-untyped-def]
        return {"w": weights["w"] * 2}, 3, {"steps": 1.0}


async def test_round_against_s3(
    s3_config: StoreConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same round with an S3 store (moto over HTTP): the hub signs, the round runs on
    its presigned URLs alone, with no credentials in the environment."""
    store = open_store(s3_config)
    initial = await store.put(
        "team-a/digits/rounds/0/global.safetensors", encode_weights(_Scale().init_weights(0))
    )
    spec = _spec(tmp_path, global_model=initial, evaluate=False).model_copy(
        update={
            "store": s3_config,
            "update_uri": store.uri_for("team-a/digits/rounds/1/updates/cluster2.safetensors"),
        }
    )
    spec = await AccessGranter().grant(spec, store=store, current_work=None)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    result = await run_round(spec, _Scale(), dataset_path=None)
    assert result.update_uri == spec.update_uri  # the URI, not the URL
    data = await store.get(result.update_uri, sha256=result.sha256)
    np.testing.assert_array_equal(
        decode_weights(data)["w"], np.arange(6, dtype=np.float32).reshape(2, 3) * 2
    )
    assert result.num_examples == 3
