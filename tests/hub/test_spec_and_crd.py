"""The FederatedLearning CRD and the spec model: names kept from upstream, enums in step
with fl_core, and every invalid spec explained with its field path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from fl_contract.models import StoreConfig
from fl_core.evaluation import EVALUATOR_NAMES
from fl_core.strategies import STRATEGY_NAMES
from hub_manager.crd_spec import SpecError, parse_duration, parse_spec
from hub_manager.work import build_round_spec

CRD_PATH = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "federatedlearnings.yaml"
SAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "samples"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return loaded


def _version(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return dict(version)


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(_version(crd)["schema"]["openAPIV3Schema"])


def test_crd_names(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "federatedlearnings.federation-ai.open-cluster-management.io"
    assert crd["spec"]["group"] == "federation-ai.open-cluster-management.io"
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "FederatedLearning",
        "federatedlearnings",
        ["fl"],
    )
    version = _version(crd)
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Phase",
        "Round",
        "Clusters",
        "Metric",
        "Epsilon",
        "Age",
    ]


def test_upstream_field_names_are_kept(crd: dict[str, Any]) -> None:
    spec = _schema(crd)["properties"]["spec"]["properties"]
    assert {"framework", "server", "client"} <= set(spec)
    server = spec["server"]["properties"]
    assert {"image", "rounds", "minAvailableClients", "listeners", "storage"} <= set(server)
    assert {"type", "name", "path", "size", "s3"} <= set(server["storage"]["properties"])
    assert {"bucketName", "prefix", "region"} <= set(
        server["storage"]["properties"]["s3"]["properties"]
    )
    retention = server["storage"]["properties"]["retention"]
    assert retention["default"] == {}
    assert {k: v.get("default") for k, v in retention["properties"].items()} == {
        "keepUpdates": 0,
        "keepRounds": None,
        "onDelete": "Delete",
    }
    assert retention["properties"]["onDelete"]["enum"] == ["Delete", "Retain"]
    client = spec["client"]["properties"]
    assert {"image", "placement"} <= set(client)
    assert {"clusterSets", "numberOfClusters", "predicates"} <= set(
        client["placement"]["properties"]
    )
    phases = _schema(crd)["properties"]["status"]["properties"]["phase"]["enum"]
    assert phases == ["Waiting", "Running", "Completed", "Failed"]


def test_strategy_enum_matches_fl_core(crd: dict[str, Any]) -> None:
    enum = _schema(crd)["properties"]["spec"]["properties"]["server"]["properties"]["strategy"][
        "properties"
    ]["name"]["enum"]
    assert tuple(enum) == STRATEGY_NAMES


def test_status_lists_are_bounded(crd: dict[str, Any]) -> None:
    status = _schema(crd)["properties"]["status"]["properties"]
    for field in ("conditions", "participants", "history", "rejectedUpdates"):
        assert status[field]["type"] == "array"
        assert status[field]["maxItems"] <= 1000, field


@pytest.mark.parametrize("sample", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_samples_validate_and_parse(crd: dict[str, Any], sample: Path) -> None:
    for doc in yaml.safe_load_all(sample.read_text()):
        if not doc or doc.get("kind") != "FederatedLearning":
            continue
        # OpenAPI v3.0 schemas are draft-4 style (boolean exclusiveMinimum).
        jsonschema.Draft4Validator(_schema(crd)["properties"]["spec"]).validate(doc["spec"])
        parsed = parse_spec(doc["spec"])
        assert parsed.client.image


def test_upstream_sample_shape_parses() -> None:
    """The upstream controller's sample fields (listeners, storage) are accepted and named."""
    spec = parse_spec(
        {
            "framework": "flower",
            "server": {
                "image": "quay.io/flower/server:latest",
                "rounds": 3,
                "minAvailableClients": 2,
                "listeners": [{"name": "server-listener", "port": 8080, "type": "NodePort"}],
                "storage": {
                    "type": "PersistentVolumeClaim",
                    "name": "model-pvc",
                    "path": "/data/models",
                    "size": "2Gi",
                },
            },
            "client": {
                "image": "quay.io/flower/client:latest",
                "placement": {"clusterSets": ["global"]},
            },
        }
    )
    ignored = spec.ignored_fields()
    assert any("listeners" in f for f in ignored)
    assert any("server.image" in f for f in ignored)


VALID = {"client": {"image": "trainer:1"}}


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"client": {}}, "spec.client.image: is required"),
        ({"client": {"image": "  "}}, "spec.client.image: must not be blank"),
        (
            {"server": {"rounds": 0}},
            "spec.server.rounds: Input should be greater than or equal to 1",
        ),
        (
            {"server": {"strategy": {"name": "FedFoo"}}},
            "spec.server.strategy.name: unknown strategy 'FedFoo'",
        ),
        (
            {"server": {"roundTimeout": "ten minutes"}},
            "spec.server.roundTimeout: 'ten minutes' is not a duration",
        ),
        ({"server": {"roundTimeout": "0s"}}, "spec.server.roundTimeout: must be longer than zero"),
        (
            {"server": {"minAvailableClients": 2, "minFitClients": 3}},
            "spec.server.minFitClients: 3 exceeds minAvailableClients (2)",
        ),
        (
            {"server": {"storage": {"type": "S3Bucket"}}},
            "spec.server.storage.s3: type S3Bucket needs s3.bucketName",
        ),
        (
            {"server": {"storage": {"type": "HostPath", "s3": {"bucketName": "models"}}}},
            "spec.server.storage.type: s3 is set but type is HostPath",
        ),
        (
            {"server": {"initialModel": {"uri": "s3://m/x", "sha256": "nope"}}},
            "spec.server.initialModel.sha256",
        ),
        (
            {"client": {"image": "t", "fractionFit": 0}},
            "spec.client.fractionFit: Input should be greater than 0",
        ),
        (
            {"client": {"image": "t", "trainingConfig": {"lr": [1, 2]}}},
            "spec.client.trainingConfig.lr: must be a string, a number or a boolean",
        ),
        ({"client": {"image": "t", "dataset": "Digits_Set"}}, "spec.client.dataset"),
        (
            {"server": {"storage": {"retention": {"keepRounds": 0}}}},
            "spec.server.storage.retention.keepRounds: Input should be greater than or equal to 1",
        ),
        (
            {"server": {"storage": {"retention": {"onDelete": "Keep"}}}},
            "spec.server.storage.retention.onDelete: Input should be 'Delete' or 'Retain'",
        ),
    ],
)
def test_invalid_specs_name_the_field(patch: dict[str, Any], expected: str) -> None:
    spec: dict[str, Any] = {"client": dict(VALID["client"]), "server": {}}
    for section, values in patch.items():
        spec[section] = {**spec[section], **values} if section == "server" else values
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_defaults_and_quorum() -> None:
    spec = parse_spec(VALID)
    assert spec.server.rounds == 1
    assert spec.server.quorum == spec.server.min_available_clients == 1
    assert spec.server.round_timeout.total_seconds() == 600
    assert spec.server.strategy.name == "FedAvg"
    assert spec.client.fraction_fit == 1.0
    fit = parse_spec({**VALID, "server": {"minAvailableClients": 3, "minFitClients": 2}})
    assert fit.server.quorum == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("500ms", 0.5), ("1.5h", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_known_evaluators() -> None:
    assert "digits" in EVALUATOR_NAMES


@pytest.mark.parametrize(("framework", "runs"), [("flower", "flower"), ("other", None)])
def test_only_a_flower_job_asks_the_clusters_for_the_flower_runtime(
    framework: str, runs: str | None
) -> None:
    """The round spec carries framework only for Flower, so agents that predate the field
    keep accepting every other job's specs."""
    spec = parse_spec({"framework": framework, "client": {"image": "trainer:1"}})
    assert spec.client_framework == runs
    obj = {"metadata": {"namespace": "team-a", "name": "j", "uid": "u-1"}}
    round_spec = build_round_spec(
        obj=obj,
        spec=spec,
        cluster="cluster1",
        round_number=1,
        attempt=1,
        global_model=None,
        update_uri="file:///models/u.safetensors",
        store=StoreConfig(uri="file:///models"),
        deadline=datetime.now(UTC) + timedelta(minutes=1),
        client_config={},
    )
    assert round_spec.framework == runs
    assert ("framework" in json.loads(round_spec.to_json())) == (runs is not None)
