"""Pure pieces of the agent: catalogue parsing, claim plans, conditions, result records."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fl_contract import keys, naming
from fl_contract.models import (
    Dataset,
    DatasetCatalogue,
    RoundReport,
    TrainingFailure,
    TrainingResult,
    claimed_samples,
)
from spoke_agent import conditions as cond
from spoke_agent.catalogue import CatalogueError, parse_catalogue, read_catalogue
from spoke_agent.claims import claim_manifest, desired_claims, plan_claims
from spoke_agent.results import (
    JobOutcome,
    ResultError,
    job_outcome,
    parse_result,
    termination_message,
    training_failure,
)
from tests.agent.test_job_manifest import make_spec

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SHA = "a" * 64

# -- catalogue -----------------------------------------------------------------------------


def test_catalogue_parses_aliases_and_empty_documents() -> None:
    cat = parse_catalogue(
        "datasets:\n- {name: digits, hostPath: /d, samples: 10, task: classification}\n",
        source="x",
    )
    assert cat.datasets[0].host_path == "/d"
    assert parse_catalogue("", source="x") == DatasetCatalogue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("datasets: [{name: Bad, path: /x}]", "datasets[0].name"),
        ("datasets: [{name: a, path: /x, pvc: p}]", "exactly one of path, hostPath, pvc"),
        ("datasets: [{name: a, path: /x, colour: red}]", "datasets[0].colour"),
        ("datasets: [{name: a, path: /x}, {name: a, pvc: y}]", "repeated: a"),
        ("datasets: [", "not valid YAML at line"),
        ("- just a list", "expected a mapping"),
    ],
)
def test_catalogue_errors_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(CatalogueError, match=r"catalogue /etc/ds\.yaml") as info:
        parse_catalogue(text, source="/etc/ds.yaml")
    assert expected in str(info.value)


def test_read_catalogue_reports_missing_file_without_raising(tmp_path: Path) -> None:
    snap = read_catalogue(tmp_path / "absent.yaml")
    assert snap.catalogue is None
    assert snap.error is not None
    assert "no such file" in snap.error
    path = tmp_path / "ds.yaml"
    path.write_text("datasets: [{name: a, path: /x}]")
    first = read_catalogue(path)
    assert first.error is None
    assert first.catalogue is not None
    path.write_text("datasets: [{name: a, path: /y}]")
    assert read_catalogue(path).digest != first.digest


# -- claims --------------------------------------------------------------------------------


def claim(name: str, value: str, *, owned: bool = True) -> dict[str, Any]:
    manifest = claim_manifest(name, value)
    if not owned:
        manifest["metadata"]["labels"] = {}
    return manifest


def test_claim_plan_touches_only_owned_claims() -> None:
    cat = parse_catalogue(
        "datasets:\n"
        "- {name: new, path: /n, samples: 5}\n"
        "- {name: changed, path: /c, samples: 7}\n"
        "- {name: same, path: /s}\n"
        "- {name: taken, path: /t}\n",
        source="x",
    )
    desired = desired_claims(cat)
    assert desired[naming.dataset_claim_name("new")] == "samples=5"
    existing = [
        claim(naming.dataset_claim_name("changed"), "samples=6"),
        claim(naming.dataset_claim_name("same"), "present"),
        claim(naming.dataset_claim_name("taken"), "theirs", owned=False),
        claim(naming.dataset_claim_name("gone"), "samples=1"),
        claim("id.k8s.io", "abc", owned=False),
        claim(naming.dataset_claim_name("foreign-gone"), "x", owned=False),
    ]
    plan = plan_claims(desired, existing)
    assert plan.create == {naming.dataset_claim_name("new"): "samples=5"}
    assert plan.update == {naming.dataset_claim_name("changed"): "samples=7"}
    assert plan.delete == [naming.dataset_claim_name("gone")]
    assert plan.foreign == [naming.dataset_claim_name("taken")]
    assert plan_claims(desired_claims(cat), [claim(n, v) for n, v in desired.items()]).empty


def test_claim_manifest_is_labelled_as_ours() -> None:
    manifest = claim_manifest("digits.dataset.federated-learning.io", "samples=1")
    assert manifest["metadata"]["labels"][keys.LABEL_CLAIM_OWNER]
    assert manifest["spec"] == {"value": "samples=1"}


# -- conditions ----------------------------------------------------------------------------

OTHER = {
    "type": "Available",
    "status": "True",
    "reason": "ManifestApplied",
    "message": "ok",
    "lastTransitionTime": "2025-01-01T00:00:00Z",
}


def report(state: str = "Training", **kw: Any) -> RoundReport:
    return RoundReport(job_uid="u1", cluster="cluster1", round=2, state=state, **kw)


@pytest.mark.parametrize(
    ("state", "invalid", "status", "reason"),
    [
        ("Training", False, "Unknown", "Training"),
        ("UpdateReady", False, "True", "UpdateReady"),
        ("TrainingFailed", False, "False", "TrainingFailed"),
        ("TrainingFailed", True, "False", "UpdateInvalid"),
    ],
)
def test_round_condition_maps_states(state: str, invalid: bool, status: str, reason: str) -> None:
    c = cond.round_condition(
        report(state), fl_namespace="team-a", fl_name="digits", now=NOW, invalid=invalid
    )
    assert c["type"] == naming.round_condition_type("team-a", "digits")
    assert (c["status"], c["reason"]) == (status, reason)
    assert RoundReport.from_message(c["message"]) == report(state)
    assert c["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_set_condition_keeps_other_conditions_and_transition_time() -> None:
    first = cond.round_condition(report(), fl_namespace="a", fl_name="b", now=NOW)
    conditions = cond.set_condition([OTHER], first)
    assert conditions == [OTHER, first]
    assert cond.set_condition(conditions, dict(first, lastTransitionTime="later")) is None
    later = datetime(2026, 1, 1, 13, tzinfo=UTC)
    failed = cond.round_condition(
        report("TrainingFailed", message="x"), fl_namespace="a", fl_name="b", now=later
    )
    after = cond.set_condition(conditions, failed)
    assert after is not None
    assert after[0] == OTHER
    assert after[1] == failed
    same_status = cond.round_condition(
        report("TrainingFailed", message="y"),
        fl_namespace="a",
        fl_name="b",
        now=later.replace(hour=14),
    )
    kept = cond.set_condition(after, same_status)
    assert kept is not None
    assert kept[1]["lastTransitionTime"] == failed["lastTransitionTime"]
    assert cond.remove_condition(kept, first["type"]) == [OTHER]
    assert cond.remove_condition([OTHER], first["type"]) is None


def test_owned_round_conditions_are_this_clusters_reports_only() -> None:
    mine = cond.round_condition(report(), fl_namespace="a", fl_name="b", now=NOW)
    theirs = cond.round_condition(
        RoundReport(job_uid="u1", cluster="cluster2", round=1, state="Training"),
        fl_namespace="a",
        fl_name="c",
        now=NOW,
    )
    garbage = dict(mine, type=naming.round_condition_type("a", "d"), message="not json")
    owned = cond.owned_round_conditions([OTHER, mine, theirs, garbage], cluster="cluster1")
    assert owned == [mine]


def test_make_condition_refuses_reasons_the_api_rejects() -> None:
    with pytest.raises(ValueError, match="pattern"):
        cond.make_condition(type_="X", status="True", reason="Has Space", message="", now=NOW)


# -- results -------------------------------------------------------------------------------


def job_with(*conditions: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": "2026-01-01T11:59:00Z"},
        "status": {"startTime": "2026-01-01T12:00:00Z", "conditions": list(conditions)},
    }


def test_job_outcome() -> None:
    assert job_outcome(job_with()).phase == "Running"
    assert job_outcome(job_with({"type": "Failed", "status": "False"})).phase == "Running"
    done = job_outcome(
        job_with(
            {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T12:00:30Z"}
        )
    )
    assert done.phase == "Succeeded"
    assert done.duration == 30
    failed = job_outcome(
        job_with(
            {
                "type": "Failed",
                "status": "True",
                "reason": "DeadlineExceeded",
                "message": "too slow",
            }
        )
    )
    assert (failed.phase, failed.reason, failed.message) == (
        "Failed",
        "DeadlineExceeded",
        "too slow",
    )


def pod(phase: str, message: str | None, created: str = "2026-01-01T12:00:00Z") -> dict[str, Any]:
    state = (
        {"terminated": {"exitCode": 0, "message": message}}
        if message is not None
        else {"running": {}}
    )
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": [{"name": "train", "state": state}]},
    }


def test_termination_message_picks_the_relevant_pod() -> None:
    pods = [
        pod("Failed", "first try", "2026-01-01T12:00:00Z"),
        pod("Succeeded", "ok", "2026-01-01T12:00:01Z"),
    ]
    assert termination_message(pods, succeeded=True) == "ok"
    failed = [
        pod("Failed", "old", "2026-01-01T12:00:00Z"),
        pod("Failed", "new", "2026-01-01T12:00:05Z"),
    ]
    assert termination_message(failed, succeeded=False) == "new"
    assert termination_message([pod("Running", None)], succeeded=True) is None


def test_parse_result_checks_the_record_against_the_spec() -> None:
    spec = make_spec()
    good = TrainingResult(
        update_uri=spec.update_uri, sha256=SHA, num_examples=10, metrics={"loss": 0.5}
    )
    assert parse_result(good.to_json(), spec) == good
    for message, reason in [
        (None, "ResultMissing"),
        ("", "ResultMissing"),
        ("{not json", "ResultInvalid"),
        ('{"update_uri": "x"}', "ResultInvalid"),
        (good.model_copy(update={"update_uri": "file:///elsewhere"}).to_json(), "ResultInvalid"),
    ]:
        with pytest.raises(ResultError) as info:
            parse_result(message, spec)
        assert info.value.reason == reason


@pytest.mark.parametrize(
    ("message", "job_reason", "reason", "expected"),
    [
        # fl-train's record: the error first, then the newest lines of its stderr
        (
            TrainingFailure(failure="ImportError", message="No module named 'nosuch'").to_json(),
            "BackoffLimitExceeded",
            "TrainingFailed",
            "ImportError: No module named 'nosuch'",
        ),
        (
            TrainingFailure(
                failure="IntegrityError", message="m: sha256 is 1, expected 2", stderr="a\nb"
            ).to_json(),
            "BackoffLimitExceeded",
            "IntegrityError",
            "IntegrityError: m: sha256 is 1, expected 2\nstderr:\na\nb",
        ),
        # another container's own words, or its log tail (FallbackToLogsOnError)
        ("ValueError: no rows\n", "BackoffLimitExceeded", "TrainingFailed", "ValueError: no rows"),
        (
            "Traceback (most recent call last):\n  File x\nKeyError: 'label'\n",
            "BackoffLimitExceeded",
            "TrainingFailed",
            "KeyError: 'label'\nstderr:\nTraceback (most recent call last):\n  File x",
        ),
        # nothing said: the Job's reason
        (None, "BackoffLimitExceeded", "TrainingFailed", "Job BackoffLimitExceeded: gave up"),
        # stopped by the deadline, whatever the container said last
        (
            "step 9\n",
            "DeadlineExceeded",
            "DeadlineExceeded",
            "Job DeadlineExceeded: gave up\nstderr:\nstep 9",
        ),
    ],
)
def test_a_failed_job_is_reported_with_what_its_container_said(
    message: str | None, job_reason: str, reason: str, expected: str
) -> None:
    outcome = JobOutcome("Failed", reason=job_reason, message="gave up")
    assert training_failure(message, outcome) == (reason, expected)


def test_a_failure_message_keeps_the_cause_and_the_newest_lines_that_fit() -> None:
    log = "\n".join(f"line {i:04d} " + "x" * 50 for i in range(500)) + "\nOSError: disk full"
    outcome = JobOutcome("Failed", reason="BackoffLimitExceeded")
    reason, message = training_failure(log, outcome, limit=1024)
    assert reason == "TrainingFailed"
    assert len(message) <= 1024
    cause, heading, *tail = message.splitlines()
    assert (cause, heading) == ("OSError: disk full", "stderr:")
    assert tail[-1].startswith("line 0499")
    assert len(tail) == 16  # as many whole lines as fit


def test_a_result_claiming_more_examples_than_the_dataset_holds_is_refused() -> None:
    spec = make_spec()
    dataset = Dataset(name="digits", path="/data", samples=407)
    record = TrainingResult(update_uri=spec.update_uri, sha256=SHA, num_examples=408)
    with pytest.raises(ResultError) as info:
        parse_result(record.to_json(), spec, dataset=dataset)
    assert (info.value.reason, info.value.invalid) == ("ExamplesExceedDataset", True)
    assert "408" in str(info.value)
    assert "407" in str(info.value)
    fair = record.model_copy(update={"num_examples": 407})
    assert parse_result(fair.to_json(), spec, dataset=dataset) == fair
    unknown = Dataset(name="digits", path="/data")  # no size in the catalogue: no bound
    assert parse_result(record.to_json(), spec, dataset=unknown) == record
    assert (claimed_samples(dataset.claim_value()), claimed_samples("present")) == (407, None)


def test_a_presigned_url_in_a_containers_log_does_not_reach_the_report() -> None:
    """A trainer that prints the URL it was given: the signature stays on the cluster."""
    url = (
        "https://s3.example/models/u.safetensors?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIA%2F20261206&X-Amz-Signature=0123abcd&X-Amz-Expires=60"
    )
    log = f"uploading to {url}\nRuntimeError: upload to {url} failed"
    outcome = JobOutcome("Failed", reason="BackoffLimitExceeded")
    _reason, message = training_failure(log, outcome)
    assert "0123abcd" not in message
    assert "AKIA" not in message
    assert "RuntimeError: upload to https://s3.example/models/u.safetensors?" in message
