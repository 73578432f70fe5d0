"""Update verification against a real file store, and the command line."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from fl_contract.models import StoreConfig, TrainingResult
from fl_contract.weights import encode_weights, sha256_hex
from fl_core.store import open_store
from fl_kube.process import UsageError
from spoke_agent.__main__ import build_parser, settings_from
from spoke_agent.results import ResultError, verify_update
from tests.agent.test_job_manifest import make_spec


async def test_verify_update_reads_back_and_checks_the_hash(tmp_path: Path) -> None:
    import numpy as np

    store_cfg = StoreConfig(uri=f"file://{tmp_path}")
    uri = f"file://{tmp_path}/team-a/digits/rounds/3/updates/cluster1.safetensors"
    spec = make_spec(store=store_cfg, update_uri=uri)
    data = encode_weights({"w": np.ones((2, 2), dtype=np.float32)})
    store = open_store(store_cfg)
    ref = await store.put_uri(uri, data)
    result = TrainingResult(update_uri=uri, sha256=ref.sha256, num_examples=7)
    update = await verify_update(result, spec)
    assert (update.uri, update.sha256, update.num_examples) == (uri, sha256_hex(data), 7)

    wrong = result.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(ResultError) as info:
        await verify_update(wrong, spec)
    assert (info.value.reason, info.value.invalid) == ("UpdateHashMismatch", True)

    missing = result.model_copy(update={"update_uri": uri.replace("cluster1", "cluster9")})
    with pytest.raises(ResultError) as info:
        await verify_update(missing, spec)
    assert (info.value.reason, info.value.invalid) == ("UpdateMissing", False)


async def test_an_s3_update_without_grants_is_not_read_with_credentials() -> None:
    """The agent holds no store credentials: a round spec without grants cannot be checked."""
    uri = "s3://models/fl/team-a/digits/rounds/3/updates/cluster1.safetensors"
    spec = make_spec(store=StoreConfig(uri="s3://models/fl"), update_uri=uri)
    result = TrainingResult(update_uri=uri, sha256="0" * 64, num_examples=7)
    with pytest.raises(ResultError, match="grants no access") as info:
        await verify_update(result, spec)
    assert (info.value.reason, info.value.invalid) == ("UpdateMissing", False)


def parse(argv: list[str], env: dict[str, str]) -> object:
    args: argparse.Namespace = build_parser().parse_args(argv)
    return settings_from(args, env)


def test_flags_and_environment(tmp_path: Path) -> None:
    hub = tmp_path / "hub.kubeconfig"
    hub.write_text("{}")
    env = {
        "CLUSTER_NAME": "cluster1",
        "HUB_KUBECONFIG": str(hub),
        "AGENT_NAMESPACE": "addon-ns",
        "DATASETS_FILE": "/etc/ds.yaml",
    }
    settings = parse([], env)
    assert settings.cluster_name == "cluster1"  # type: ignore[attr-defined]
    assert settings.namespace == "addon-ns"  # type: ignore[attr-defined]
    assert settings.kubeconfig is None  # type: ignore[attr-defined]
    assert str(settings.datasets) == "/etc/ds.yaml"  # type: ignore[attr-defined]
    flagged = parse(
        ["--cluster-name", "c2", "--namespace", "n2", "--metrics-bind-address", "0"], env
    )
    assert (flagged.cluster_name, flagged.namespace) == ("c2", "n2")  # type: ignore[attr-defined]
    assert flagged.metrics_enabled is False  # type: ignore[attr-defined]
    # POD_NAMESPACE wins over AGENT_NAMESPACE
    assert parse([], {**env, "POD_NAMESPACE": "pod-ns"}).namespace == "pod-ns"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "--cluster-name is required"),
        (["--cluster-name", "Bad_Name"], "invalid --cluster-name 'Bad_Name': must be a DNS label"),
        (["--metrics-bind-address", "nowhere"], "invalid --metrics-bind-address"),
        (["--hub-kubeconfig", "/no/such/file"], "--hub-kubeconfig /no/such/file: no such file"),
    ],
)
def test_bad_input_is_one_clear_line(argv: list[str], expected: str, tmp_path: Path) -> None:
    hub = tmp_path / "hub.kubeconfig"
    hub.write_text("{}")
    env = {"HUB_KUBECONFIG": str(hub), "POD_NAMESPACE": "ns"}
    if argv:
        env["CLUSTER_NAME"] = "cluster1"
    with pytest.raises(UsageError) as info:
        parse(argv, env)
    assert expected in str(info.value)


def test_the_console_script_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "spoke_agent", "--cluster-name", "UPPER", "--namespace", "ns"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fl-spoke-agent: invalid --cluster-name")
    unknown = subprocess.run(
        [sys.executable, "-m", "spoke_agent", "--no-such-flag"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "fl-spoke-agent: unrecognized arguments: --no-such-flag (see --help)"
    ]
