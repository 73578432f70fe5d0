"""The hub's privacy bookkeeping, pure: the check of reports, the budget, spec edits."""

from __future__ import annotations

from typing import Any

import pytest

from fl_contract.models import PrivacySpent, RoundReport
from fl_core.privacy.dp.accountant import Spent, epsilon, record_level_steps
from hub_manager import privacy
from hub_manager.crd_spec import parse_spec


def _spec(**dp: Any) -> Any:
    return parse_spec(
        {
            "client": {"image": "t", "dataset": "digits", "trainingConfig": {"local_epochs": 1}},
            "privacy": {"differentialPrivacy": {"clipNorm": 1.0, "noiseMultiplier": 1.0, **dp}},
        }
    )


def _report(spent: PrivacySpent | None) -> RoundReport:
    return RoundReport(job_uid="u", cluster="c1", round=1, state="UpdateReady", privacy=spent)


def test_a_report_must_agree_with_the_hubs_accounting() -> None:
    spec = _spec()
    rate, steps = record_level_steps(samples=600, batch_size=32, epochs=1)
    eps = epsilon(noise_multiplier=1.0, sampling_rate=rate, steps=steps, delta=1e-5)
    good = PrivacySpent(
        accountant="RDP",
        noise_multiplier=1.0,
        sampling_rate=rate,
        steps=steps,
        delta=1e-5,
        epsilon=eps,
    )
    assert privacy.check_report(spec, {}, "c1", _report(good), 600) is None
    # Fewer steps than the hub expects for 600 samples, or a smaller epsilon: rejected.
    fewer = good.model_copy(update={"steps": steps - 1})
    reason, message = privacy.check_report(spec, {}, "c1", _report(fewer), 600) or ("", "")
    assert reason == "PrivacyMismatch"
    assert "600 samples" in message
    cheaper = good.model_copy(update={"epsilon": eps / 2})
    assert privacy.check_report(spec, {}, "c1", _report(cheaper), 600) is not None
    assert privacy.check_report(spec, {}, "c1", _report(None), 600) == (
        "PrivacyNotReported",
        "the job has record-level DP and the report says no epsilon",
    )


def test_the_budget_names_the_cluster_a_round_would_take_past_it() -> None:
    rate, steps = record_level_steps(samples=600, batch_size=32, epochs=1)
    one = epsilon(noise_multiplier=1.0, sampling_rate=rate, steps=steps, delta=1e-5)
    two = epsilon(noise_multiplier=1.0, sampling_rate=rate, steps=2 * steps, delta=1e-5)
    spec = _spec(maxEpsilon=(one + two) / 2)
    status: dict[str, Any] = {}
    privacy.publish(
        spec, status, {"clusters": [{"cluster": "c1", "samplingRate": rate, "steps": steps}]}
    )
    assert status["privacy"]["epsilon"] == pytest.approx(one)
    assert privacy.spent_of(status, "c1") == Spent(rate, steps)
    over = privacy.budget_overrun(
        spec, status, participants=["c1"], available=1, samples_of=lambda _c: 600
    )
    assert over is not None
    assert over.cluster == "c1"
    assert over.epsilon == pytest.approx(two)
    unknown = privacy.budget_overrun(
        spec, {}, participants=["c2"], available=1, samples_of=lambda _c: None
    )
    assert unknown is not None
    assert "no sample count" in privacy.overrun_message(spec, {}, unknown)


def test_the_noise_multiplier_cannot_change_once_spent() -> None:
    status = {"privacy": {"level": "Record", "noiseMultiplier": 1.0, "steps": 19}}
    assert privacy.edit_problem(_spec(), status) is None
    assert privacy.edit_problem(_spec(noiseMultiplier=2.0), {}) is None
    problem = privacy.edit_problem(_spec(noiseMultiplier=2.0), status)
    assert problem is not None
    assert problem.startswith("spec.privacy.differentialPrivacy:")
