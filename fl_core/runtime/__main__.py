"""`fl-train`: run one federated round inside a training Job.

    fl-train [--example digits | --trainer package.module:Trainer]

Reads FL_ROUND_SPEC_PATH (the round spec), FL_DATASET_PATH (the dataset folder, optional),
FL_WORK_DIR (scratch) and FL_RESULT_PATH (where the result record goes: the container's
termination message), plus FL_STORE_ROOT (optional: where a file:// store's folder is
mounted in this container). Exit 0 with the result record written; exit 1 (the round
failed) or 2 (invalid command-line input) with a failure record written instead: the
error, its message and the last lines of stderr (`fl_core.runtime.failure`). Without --example or
--trainer the digits example runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from pathlib import Path
from typing import NoReturn

from fl_contract import keys
from fl_contract.models import MAX_RESULT_BYTES, RoundSpec
from fl_core.runtime.api import Trainer
from fl_core.runtime.failure import StderrTail, failure_record
from fl_core.runtime.runner import run_round

ENV_STORE_ROOT = "FL_STORE_ROOT"
EXAMPLES = ("digits",)


class UsageError(Exception):
    """Bad command-line input (exit 2). `failure` names the kind of error in the record."""

    def __init__(self, message: str, *, failure: str = "UsageError") -> None:
        super().__init__(message)
        self.failure = failure


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
    return parser


def load_trainer(example: str | None, target: str | None) -> Trainer:
    """The trainer named on the command line; UsageError with a one-line reason otherwise."""
    if target is None:
        from fl_core.examples.digits import DigitsTrainer

        if example not in (None, "digits"):
            raise UsageError(f"--example: unknown example {example!r}")
        return DigitsTrainer()
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--trainer {target!r}: use the form package.module:Attribute")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        # "ImportError: No module named 'nosuch' (cannot import --trainer 'nosuch:T')"
        raise UsageError(
            f"{exc} (cannot import --trainer {target!r})", failure="ImportError"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(
                f"module {module_name!r} has no attribute {attr!r} (--trainer {target!r})",
                failure="AttributeError",
            )
        obj = getattr(obj, part)
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Trainer):
        raise UsageError(
            f"--trainer {target!r}: not a Trainer (needs init_weights, load_data, train, evaluate)",
            failure="TypeError",
        )
    return obj


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
    try:
        args = _parser().parse_args(argv)
        trainer = load_trainer(args.example, args.trainer)
        spec_path = _required_env_path(keys.ENV_ROUND_SPEC_PATH)
        _required_env_path(keys.ENV_RESULT_PATH)
    except UsageError as exc:
        _record_failure(result_path, exc.failure, str(exc), tail)
        return 2
    assert result_path is not None
    try:
        spec = RoundSpec.from_json(spec_path.read_bytes())
        result = asyncio.run(
            run_round(
                spec,
                trainer,
                dataset_path=_env_path(keys.ENV_DATASET_PATH),
                work_dir=_env_path(keys.ENV_WORK_DIR),
                file_root=_env_path(ENV_STORE_ROOT),
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
