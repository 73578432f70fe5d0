"""Small pure pieces of the hub manager: CLI, add-on objects, agent RBAC, status, stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fl_contract import keys, naming
from fl_kube.process import EXIT_USAGE
from hub_manager import status as st
from hub_manager.__main__ import main
from hub_manager.addon import load_addon_objects
from hub_manager.agent_rbac import desired_role, desired_role_binding
from hub_manager.crd_spec import parse_spec
from hub_manager.placement import cluster_sets, job_labels, selection
from hub_manager.settings import default_addon_templates_dir
from hub_manager.work import oversized_round_spec, store_config

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--metrics-bind-address", "eighty"], "invalid --metrics-bind-address 'eighty'"),
        (
            ["--kubeconfig", "/nonexistent/kubeconfig"],
            "--kubeconfig /nonexistent/kubeconfig: no such file",
        ),
        (["--workers", "0"], "invalid --workers 0"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--addon-templates", "/nonexistent"], "--addon-templates /nonexistent: no such folder"),
    ],
)
def test_cli_rejects_bad_flags_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fl-hub-manager: ")
    assert message in err


def _exit_code(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return exc.code


def test_addon_objects_from_the_shipped_folder() -> None:
    objects = load_addon_objects(default_addon_templates_dir())
    kinds = [o["kind"] for o in objects]
    assert kinds == ["AddOnDeploymentConfig", "AddOnTemplate", "ClusterManagementAddOn"]
    assert load_addon_objects(Path("/nonexistent")) == []


def test_agent_rbac_is_per_cluster_and_by_name() -> None:
    role = desired_role("cluster7")
    for rule in role["rules"]:
        assert rule["resourceNames"] == [keys.ADDON_NAME]
    write = [rule for rule in role["rules"] if "patch" in rule["verbs"]]
    assert [rule["resources"] for rule in write] == [["managedclusteraddons/status"]]
    binding = desired_role_binding("cluster7")
    assert binding["metadata"]["namespace"] == "cluster7"
    assert [s["name"] for s in binding["subjects"]] == [naming.cluster_addon_group("cluster7")]
    assert keys.ADDON_WIDE_GROUP not in str(binding)


def test_conditions_keep_their_transition_time() -> None:
    status: dict[str, Any] = {}
    st.set_condition(
        status, type_="Ready", value=True, reason="A", message="m", generation=1, now=NOW
    )
    later = NOW + timedelta(minutes=5)
    st.set_condition(
        status, type_="Ready", value=True, reason="B", message="n", generation=2, now=later
    )
    (ready,) = status["conditions"]
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert (ready["reason"], ready["observedGeneration"]) == ("B", 2)
    st.set_condition(
        status, type_="Ready", value=False, reason="C", message="o", generation=2, now=later
    )
    assert status["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"


def test_bounded_lists() -> None:
    status: dict[str, Any] = {}
    st.append_bounded(
        status, "history", [{"round": i} for i in range(1, 150)], limit=st.MAX_HISTORY
    )
    assert len(status["history"]) == 100
    assert status["history"][0]["round"] == 50


def test_store_configs(tmp_path: Path) -> None:
    base = {"client": {"image": "t"}}
    assert store_config(parse_spec(base), default_path="/models").uri == "file:///models"
    assert (
        store_config(parse_spec(base), default_path="/models", file_store_root=tmp_path).uri
        == tmp_path.resolve().as_uri()
    )
    s3 = parse_spec(
        {
            **base,
            "server": {
                "storage": {
                    "type": "S3Bucket",
                    "s3": {
                        "bucketName": "models",
                        "prefix": "/fl/",
                        "endpoint": "http://minio:9000",
                        "credentialsSecret": "creds",
                    },
                }
            },
        }
    )
    config = store_config(s3, default_path="/models")
    assert (config.uri, config.endpoint) == ("s3://models/fl", "http://minio:9000")
    assert "creds" not in config.model_dump_json()  # clusters are told no Secret's name
    assert s3.ignored_fields() == [
        "spec.server.storage.s3.credentialsSecret (deprecated: the hub signs with the "
        "credentials of its own environment; clusters get presigned URLs)"
    ]


def test_selection_reads_every_decision_and_the_empty_placement() -> None:
    decisions = [
        {"status": {"decisions": [{"clusterName": "c2"}, {"clusterName": "c1"}]}},
        {"status": {"decisions": [{"clusterName": "c3"}, {"clusterName": "c1"}]}},
    ]
    assert selection(None, decisions).clusters == ("c1", "c2", "c3")
    empty = {
        "status": {
            "conditions": [
                {
                    "type": "PlacementSatisfied",
                    "status": "False",
                    "reason": "NoManagedClusterMatched",
                    "message": "none",
                }
            ]
        }
    }
    chosen = selection(empty, [{"status": {}}])
    assert chosen.clusters == ()
    assert chosen.satisfied_reason == "NoManagedClusterMatched"
    assert cluster_sets({}) == ["global"]
    assert cluster_sets({"clusterSets": ["b", "a", "b"]}) == ["a", "b"]


def test_round_spec_size_counts_the_presigned_urls_of_s3_stores() -> None:
    """An s3:// round spec also carries three presigned URLs: a trainingConfig that fits
    in a file:// job's ManifestWork can be too large for an s3:// one."""
    obj = {"metadata": {"name": "j", "namespace": "ns", "uid": "u" * 36}}

    def oversized(size: int, storage: dict[str, Any] | None) -> str | None:
        server: dict[str, Any] = {"storage": storage} if storage else {}
        spec = parse_spec(
            {"client": {"image": "t", "trainingConfig": {"blob": "x" * size}}, "server": server}
        )
        config = store_config(spec, default_path="/models")
        return oversized_round_spec(
            obj, spec, store=config, uri_for=lambda key: f"{config.uri}/{key}"
        )

    s3 = {"type": "S3Bucket", "s3": {"bucketName": "models"}}
    fits = next(n for n in range(505_000, 512_000, 500) if oversized(n + 500, None))
    assert oversized(fits, None) is None
    message = oversized(fits, s3)
    assert message is not None
    assert message.startswith("spec.client.trainingConfig: ")


def test_job_labels_are_valid_label_values_for_long_names() -> None:
    name = "a" * 62 + "-b" + "c" * 20  # the 63rd character is a dash
    labels = job_labels({"metadata": {"name": name, "namespace": "ns", "uid": "u"}})
    assert labels[keys.LABEL_JOB_NAME] == "a" * 62
