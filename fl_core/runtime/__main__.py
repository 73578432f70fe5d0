"""`fl-train`: run one federated round inside a training Job.

    fl-train [--example digits | --trainer package.module:Trainer]
    fl-train [--app-dir DIR] [--client-app package.module:app] [--initial-arrays MODULE:FN]

The second form is for Flower jobs (`framework: flower` in the round spec): it runs the
Flower ClientApp named by --client-app or by the app's pyproject.toml in --app-dir (default:
the working directory), see `fl_core.runtime.flower`. Reads FL_ROUND_SPEC_PATH (the round spec), FL_DATASET_PATH (the dataset folder, optional),
FL_WORK_DIR (scratch) and FL_RESULT_PATH (where the result record goes: the container's
termination message), FL_SECAGG_SECRETS_PATH (a secure round's client secrets, which mask
the update before it leaves the Job), plus FL_STORE_ROOT (optional: where a file:// store's folder is
mounted in this container) and FL_NODE_CONFIG (optional: a Flower app's node_config). Exit 0 with the result record written; exit 1 (the round
failed) or 2 (invalid command-line input) with a failure record written instead: the
error, its message and the last lines of stderr (`fl_core.runtime.failure`). Without --example or
--trainer the digits example runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import NoReturn

from fl_contract import keys
from fl_contract.models import MAX_RESULT_BYTES, RoundSpec
from fl_core.runtime.api import Trainer
from fl_core.runtime.failure import StderrTail, failure_record
from fl_core.runtime.loading import UsageError, import_target
from fl_core.runtime.runner import run_round

ENV_STORE_ROOT = "FL_STORE_ROOT"
EXAMPLES = ("digits",)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fl-train",
        description="Run one federated training round (the digits example by default).",
        epilog=(
            f"environment: {keys.ENV_ROUND_SPEC_PATH} (required), {keys.ENV_RESULT_PATH} "
            f"(required), {keys.ENV_DATASET_PATH}, {keys.ENV_WORK_DIR}, {ENV_STORE_ROOT}; "
            "exit 0 done, 1 failed (reason in the result file), 2 bad input"
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--example", choices=EXAMPLES, help="a built-in example trainer")
    which.add_argument("--trainer", metavar="MODULE:ATTR", help="your Trainer class or object")
    flower = parser.add_argument_group("Flower jobs (spec.framework: flower)")
    flower.add_argument(
        "--app-dir", type=Path, help="the Flower app folder (default: the working directory)"
    )
    flower.add_argument(
        "--client-app",
        metavar="MODULE:ATTR",
        help="the ClientApp or legacy client_fn (default: the app's pyproject.toml clientapp)",
    )
    flower.add_argument(
        "--initial-arrays",
        metavar="MODULE:ATTR",
        help="a function returning the first model, when the job has no initialModel",
    )
    return parser


def load_trainer(example: str | None, target: str | None) -> Trainer:
    """The trainer named on the command line; UsageError with a one-line reason otherwise."""
    if target is None:
        from fl_core.examples.digits import DigitsTrainer

        if example not in (None, "digits"):
            raise UsageError(f"--example: unknown example {example!r}")
        return DigitsTrainer()
    obj = import_target(target, flag="--trainer")
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Trainer):
        raise UsageError(
            f"--trainer {target!r}: not a Trainer (needs init_weights, load_data, train, evaluate)",
            failure="TypeError",
        )
    return obj


def _flower_options(args: argparse.Namespace) -> list[str]:
    given = [("--app-dir", args.app_dir), ("--client-app", args.client_app)]
    given.append(("--initial-arrays", args.initial_arrays))
    return [flag for flag, value in given if value is not None]


def load_flower_trainer(args: argparse.Namespace, spec: RoundSpec) -> Trainer:
    """The Flower app of a `framework: flower` round, as a Trainer (UsageError if not)."""
    if args.trainer is not None or args.example is not None:
        raise UsageError(
            "the round spec says framework: flower, which runs a Flower ClientApp; drop "
            "--trainer/--example (name the app with --client-app or its pyproject.toml)"
        )
    try:
        from fl_core.runtime import flower
    except ImportError as exc:
        raise UsageError(
            f"{exc}: a framework: flower job needs flwr in the training image "
            "(pip install 'ocm-federated-learning[flower]')",
            failure="ImportError",
        ) from None
    app = flower.load_app(
        app_dir=args.app_dir, client_app=args.client_app, initial_arrays=args.initial_arrays
    )
    node_config = flower.node_config_from(os.environ.get(keys.ENV_NODE_CONFIG))
    return flower.FlowerTrainer(app, spec, node_config=node_config)


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _required_env_path(name: str) -> Path:
    path = _env_path(name)
    if path is None:
        raise UsageError(f"environment variable {name} must be set")
    return path


def _write_result(path: Path, text: str) -> None:
    data = text.encode()[:MAX_RESULT_BYTES]
    with path.open("wb") as handle:
        handle.write(data)


def _record_failure(path: Path | None, failure: str, message: str, tail: StderrTail) -> None:
    """Print the one-line reason and leave the failure record for the agent, if it can."""
    record = failure_record(failure, message, stderr=tail.tail())
    print(f"fl-train: {record.summary()}", file=sys.stderr)
    if path is None:
        return
    try:
        _write_result(path, record.to_json())
    except OSError as write_error:
        print(f"fl-train: cannot write {path}: {write_error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    original = sys.stderr
    tail = StderrTail(original)
    sys.stderr = tail
    try:
        return _main(argv, tail)
    finally:
        sys.stderr = original


def _main(argv: list[str] | None, tail: StderrTail) -> int:
    result_path = _env_path(keys.ENV_RESULT_PATH)
    flower_options: list[str] = []
    try:
        args = _parser().parse_args(argv)
        flower_options = _flower_options(args)
        # A Flower job's app is loaded once the spec says so; a Trainer is checked first.
        trainer = None if flower_options else load_trainer(args.example, args.trainer)
        spec_path = _required_env_path(keys.ENV_ROUND_SPEC_PATH)
        _required_env_path(keys.ENV_RESULT_PATH)
    except UsageError as exc:
        _record_failure(result_path, exc.failure, str(exc), tail)
        return 2
    assert result_path is not None
    try:
        spec = RoundSpec.from_json(spec_path.read_bytes())
        if spec.framework == "flower":
            trainer = load_flower_trainer(args, spec)
        elif trainer is None:
            raise UsageError(
                f"{', '.join(flower_options)}: for Flower jobs only, and this round spec has "
                "no framework: flower (set spec.framework: flower on the FederatedLearning)"
            )
    except UsageError as exc:
        _record_failure(result_path, exc.failure, str(exc), tail)
        return 2
    except Exception as exc:
        _record_failure(result_path, type(exc).__name__, str(exc), tail)
        return 1
    assert trainer is not None
    try:
        result = asyncio.run(
            run_round(
                spec,
                trainer,
                dataset_path=_env_path(keys.ENV_DATASET_PATH),
                work_dir=_env_path(keys.ENV_WORK_DIR),
                file_root=_env_path(ENV_STORE_ROOT),
                secagg_secrets=_env_path(keys.ENV_SECAGG_SECRETS_PATH),
            )
        )
    except Exception as exc:
        _record_failure(result_path, type(exc).__name__, str(exc), tail)
        return 1
    _write_result(result_path, result.to_json())
    print(
        f"fl-train: round {spec.round} of {spec.job.namespace}/{spec.job.name} on {spec.cluster}: "
        f"{result.num_examples} examples, update {result.update_uri}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
