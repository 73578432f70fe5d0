"""Our CRD is a structural schema the API server accepts; the samples fit it exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fl_contract import keys, naming

from .manifests import OUR_CRDS, SAMPLES, load_docs
from .openapi import load_crds, pruned_fields, structural_problems, validation_errors

SAMPLE_FILES = sorted(SAMPLES.glob("*.yaml"))
API_VERSION = f"{keys.FL_GROUP}/{keys.FL_VERSION}"


@pytest.fixture(scope="module")
def fl_schema() -> dict[str, Any]:
    schemas = load_crds(OUR_CRDS)
    return schemas[(API_VERSION, keys.FL_KIND)]


def test_crd_schema_is_structural(fl_schema: dict[str, Any]) -> None:
    assert structural_problems(fl_schema) == []


def test_printer_columns_point_at_declared_fields(fl_schema: dict[str, Any]) -> None:
    (crd,) = load_docs(OUR_CRDS / "federatedlearnings.yaml")
    (version,) = crd["spec"]["versions"]
    for column in version["additionalPrinterColumns"]:
        node: dict[str, Any] = fl_schema
        path = column["jsonPath"].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        for part in path:
            node = node["properties"][part]
        assert node["type"] == column["type"] or column["type"] in ("date", "number")


def test_the_three_promised_samples_exist() -> None:
    names = {p.name for p in SAMPLE_FILES}
    assert "digits-fedavg.yaml" in names
    strategies = {
        doc["spec"]["server"]["strategy"]["name"] for p in SAMPLE_FILES for doc in load_docs(p)
    }
    assert strategies & {"FedTrimmedAvg", "Krum", "MultiKrum", "FedMedian"}, "a robust one"
    stores = [doc["spec"]["server"].get("storage") for p in SAMPLE_FILES for doc in load_docs(p)]
    assert any(s and s.get("s3") for s in stores), "one with S3 storage"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_fits_the_crd_and_the_managers_spec_model(
    path: Path, fl_schema: dict[str, Any]
) -> None:
    from hub_manager.crd_spec import parse_spec

    (doc,) = load_docs(path)
    assert (doc["apiVersion"], doc["kind"]) == (API_VERSION, keys.FL_KIND)
    assert validation_errors(doc, fl_schema) == []
    assert pruned_fields(doc, fl_schema) == [], "the API server would drop these fields"
    spec = parse_spec(doc["spec"])
    assert spec.ignored_fields() == []
    # Selection by the dataset claim the agents publish (one claim per dataset).
    (predicate,) = doc["spec"]["client"]["placement"]["predicates"]
    (expression,) = predicate["requiredClusterSelector"]["claimSelector"]["matchExpressions"]
    assert expression["key"] == naming.dataset_claim_name(doc["spec"]["client"]["dataset"])


def test_reference_sample_is_the_reference_task() -> None:
    (doc,) = load_docs(SAMPLES / "digits-fedavg.yaml")
    server, client = doc["spec"]["server"], doc["spec"]["client"]
    assert server["rounds"] == 10
    assert server["minAvailableClients"] == 3
    assert server["strategy"]["name"] == "FedAvg"
    assert server["evaluation"]["evaluator"] == "digits"
    assert client["command"] + client["args"] == ["fl-train", "--example", "digits"]
    assert "namespace" not in doc["metadata"], "kubectl apply -f puts it in the current one"
