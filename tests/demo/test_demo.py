"""`fl-sandbox demo`: the reference task end to end, its outputs, and its option checks."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from fl_sandbox.demo import DemoOptions, add_demo_arguments, run, run_demo

REFERENCE_ACCURACY = 0.9556  # a plain numpy FedAvg loop of the reference task, round 10
TOLERANCE = 0.005
# The hub folds updates in cluster-name order, whatever order they arrive in, so the same
# job gives the same model bit for bit. (Measured with numpy 2.4 and its OpenBLAS wheel on
# x86-64; another numpy or BLAS build may round differently.)
REFERENCE_MODEL_SHA256 = "3f44ca9ce7f9d543204510619ad00d4946dca72c70d612ff80b99e0a4bdf22e4"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_demo_arguments(parser)
    return parser.parse_args(list(argv))


def _check_outputs(output: Path, summary: dict[str, Any]) -> dict[str, Any]:
    written = json.loads((output / "summary.json").read_text())
    assert written == summary
    assert written["final_accuracy"] == pytest.approx(REFERENCE_ACCURACY, abs=TOLERANCE)
    assert written["clusters"] == 3
    rounds = written["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, 11))
    for row in rounds:
        assert set(row) == {"round", "accuracy", "loss", "participants", "seconds"}
        assert row["participants"] == 3
        assert 0 < row["seconds"] < 120
    assert rounds[-1]["loss"] < rounds[0]["loss"]
    assert written["centralised_accuracy"] == pytest.approx(0.9667, abs=TOLERANCE)

    # The final model is where the summary says, and is what its sha256 says.
    uri = urlparse(written["model_uri"])
    assert uri.scheme == "file"
    model = Path(uri.path).read_bytes()
    assert hashlib.sha256(model).hexdigest() == written["model_sha256"]
    assert written["model_sha256"] == REFERENCE_MODEL_SHA256

    plot = (output / "accuracy.png").read_bytes()
    assert plot.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(plot) > 10_000

    return dict(written)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_demo_reproduces_the_reference_task(tmp_path: Path) -> None:
    out = io.StringIO()
    options = DemoOptions(
        clusters=3,
        rounds=10,
        strategy="FedAvg",
        partition="dirichlet",
        alpha=0.5,
        output=tmp_path / "demo-output",
        timeout=200,
    )
    summary = await run(options, out=out)

    written = _check_outputs(options.output, summary)

    text = out.getvalue()
    assert "round  accuracy      loss  clusters  seconds" in text
    assert f"sha256  {written['model_sha256']}" in text
    assert "\r" not in text, "plain lines when the output is not a terminal"


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_demo_with_dp_plots_epsilon_per_round(tmp_path: Path) -> None:
    out = io.StringIO()
    options = DemoOptions(
        clusters=2,
        rounds=2,
        strategy="FedAvg",
        partition="dirichlet",
        alpha=0.5,
        output=tmp_path / "demo-output",
        timeout=100,
        dp_noise_multiplier=1.0,
        dp_clip=1.0,
    )
    summary = await run(options, out=out)

    epsilons = [row["epsilon"] for row in summary["rounds"]]
    assert 0 < epsilons[0] < epsilons[1] == summary["epsilon"] == summary["privacy"]["epsilon"]
    assert summary["privacy"]["noiseMultiplier"] == 1.0
    plot = (options.output / "privacy.png").read_bytes()
    assert plot.startswith(b"\x89PNG\r\n\x1a\n")
    assert f"epsilon {summary['epsilon']:.4g} at delta 1e-05" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--clusters", "0"], "--clusters"),
        (["--clusters", "500"], "--clusters"),
        (["--rounds", "0"], "--rounds"),
        (["--strategy", "FedMagic"], "--strategy"),
        (["--strategy", "Krum", "--clusters", "2"], "--strategy"),
        (["--partition", "shards"], "--partition"),
        (["--alpha", "0"], "--alpha"),
        (["--alpha", "nan"], "--alpha"),
        (["--partition", "iid", "--alpha", "0.3"], "--alpha"),
        (["--timeout", "-1"], "--timeout"),
        (["--dp-clip", "1"], "--dp-clip"),
        (["--dp-noise-multiplier", "0"], "--dp-noise-multiplier"),
        (["--dp-noise-multiplier", "1", "--dp-max-epsilon", "-2"], "--dp-max-epsilon"),
    ],
)
async def test_invalid_options_give_one_line_and_exit_2(
    argv: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run_demo(_args(*argv, "--output", str(tmp_path / "out")))
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"fl-sandbox demo: {flag}")
    assert not (tmp_path / "out").exists(), "nothing started for invalid options"


async def test_output_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert await run_demo(_args("--output", str(target))) == 2
    assert "--output" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--clusters", "0"], ["--clusters", "three"]])
def test_cli_refuses_bad_options_in_one_line(argv: list[str], tmp_path: Path) -> None:
    """Through the real `fl-sandbox` entry point, as `make demo` runs it."""
    script = Path(sys.executable).with_name("fl-sandbox")
    done = subprocess.run(
        [str(script), "demo", *argv, "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""
