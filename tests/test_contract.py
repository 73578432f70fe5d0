"""The shared contract: names within Kubernetes limits, bounded and versioned messages."""

import re
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from fl_contract import keys, naming
from fl_contract.models import (
    MAX_REPORT_BYTES,
    Dataset,
    DatasetCatalogue,
    JobRef,
    RoundReport,
    RoundSpec,
    StoreConfig,
    UpdateRef,
)

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CONDITION_TYPE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


@pytest.mark.parametrize("uid", ["a", "0d5e2c1e-8e43-4c77-9a4f-3f7b1c7f7f10", "x" * 300])
@pytest.mark.parametrize(("rnd", "attempt"), [(1, 1), (99999, 1), (10**6, 99)])
def test_object_names_are_dns_labels(uid: str, rnd: int, attempt: int) -> None:
    for name in (
        naming.manifest_work_name(uid),
        naming.round_spec_configmap_name(uid),
        naming.training_job_name(uid, rnd, attempt),
    ):
        assert DNS1123.match(name), name
        assert len(name) <= 63


def test_job_names_differ_per_round_and_attempt_and_are_stable() -> None:
    names = {naming.training_job_name("u", r, a) for r in (1, 2) for a in (1, 2)}
    assert len(names) == 4
    assert naming.training_job_name("u", 3) == naming.training_job_name("u", 3, 1)
    with pytest.raises(ValueError):
        naming.training_job_name("u", 0)


def test_condition_type_matches_the_addon_crd_pattern_even_for_long_names() -> None:
    short = naming.round_condition_type("team-a", "digits")
    assert short == "round.federated-learning.io/team-a.digits"
    long = naming.round_condition_type("n" * 63, "j" * 253)
    for t in (short, long):
        assert CONDITION_TYPE.match(t)
        assert len(t) <= 316
    assert naming.parse_round_condition_type(short) == "team-a.digits"
    assert naming.parse_round_condition_type("Available") is None


def test_dataset_claim_names_round_trip_and_reject_bad_names() -> None:
    claim = naming.dataset_claim_name("digits")
    assert claim == "digits" + keys.DATASET_CLAIM_SUFFIX
    assert naming.dataset_from_claim_name(claim) == "digits"
    assert naming.dataset_from_claim_name("id.k8s.io") is None
    with pytest.raises(ValueError, match="DNS label"):
        naming.dataset_claim_name("Bad_Name")


def _spec(**over: object) -> RoundSpec:
    base: dict[str, object] = {
        "job": JobRef(namespace="team-a", name="digits", uid="u1"),
        "cluster": "cluster1",
        "round": 1,
        "update_uri": "file:///m/u.safetensors",
        "store": StoreConfig(uri="file:///m"),
        "image": "trainer:1",
        "deadline": datetime(2030, 1, 1, tzinfo=UTC),
    }
    base.update(over)
    return RoundSpec.model_validate(base)


def test_round_spec_round_trips_and_rejects_unknown_fields_and_naive_deadlines() -> None:
    spec = _spec(training_config={"lr": 0.1, "epochs": 5})
    assert RoundSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValidationError):
        RoundSpec.model_validate_json(spec.to_json().replace('"round"', '"rounds"'))
    with pytest.raises(ValidationError, match="timezone"):
        _spec(deadline=datetime(2030, 1, 1))
    with pytest.raises(ValidationError):
        _spec(store=StoreConfig(uri="http://x"))


def test_round_report_is_bounded_and_versioned() -> None:
    report = RoundReport(
        job_uid="u1",
        cluster="cluster1",
        round=2,
        state="UpdateReady",
        update=UpdateRef(uri="file:///m/u", sha256="a" * 64, num_examples=10),
        metrics={"loss": 0.5, "accuracy": 0.9},
    )
    assert RoundReport.from_message(report.to_message()) == report
    with pytest.raises(ValidationError):
        RoundReport.from_message(report.to_message().replace('"version":1', '"version":2'))
    too_many = {f"m{i}": 1.0 for i in range(33)}
    with pytest.raises(ValidationError):
        RoundReport(job_uid="u", cluster="c", round=1, state="Training", metrics=too_many)
    with pytest.raises(ValueError, match="over"):
        RoundReport.from_message("x" * (MAX_REPORT_BYTES + 1))


def test_dataset_catalogue_needs_one_source_and_unique_names() -> None:
    ds = Dataset.model_validate({"name": "digits", "hostPath": "/d", "samples": 400, "task": "c"})
    assert ds.claim_value() == "samples=400,task=c"
    with pytest.raises(ValidationError, match="exactly one"):
        Dataset(name="d", path="/a", pvc="p")
    with pytest.raises(ValidationError, match="unique"):
        DatasetCatalogue(datasets=[Dataset(name="d", path="/a"), Dataset(name="d", path="/b")])
