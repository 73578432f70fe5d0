"""Differential privacy on the hub: each round's DP parameters, the check of what agents
report, the record of what each cluster spent (`status.privacy`) and the budget.

The hub computes every epsilon itself with the same accountant as the training runtime
(`fl_core.privacy.dp.accountant`): record level, from the cluster's published sample count
(its dataset ClusterClaim), the batch size and the epochs; cluster level, from the share of
available clusters that take part in each round. An agent's report must agree with it to
count, and no round starts that would take a cluster past `maxEpsilon`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fl_contract.models import PrivacySpent, RoundPrivacy, RoundReport
from fl_core.privacy.dp.accountant import (
    MECHANISM,
    Spent,
    record_level_steps,
    same_epsilon,
    spent_epsilon,
)
from fl_core.privacy.dp.noise import distributed_noise_stddev
from hub_manager.crd_spec import DifferentialPrivacySpec, FederatedLearningSpec

# The built-in trainer's schedule, read from trainingConfig like it does.
DEFAULT_BATCH_SIZE = 32
DEFAULT_EPOCHS = 5
MAX_CLUSTERS_SHOWN = 1000
BUDGET_EXHAUSTED = "PrivacyBudgetExhausted"  # the Succeeded reason of a job the budget ended

SamplesOf = Callable[[str], int | None]


def dp_of(spec: FederatedLearningSpec) -> DifferentialPrivacySpec | None:
    return spec.privacy.differential_privacy


def schedule(spec: FederatedLearningSpec) -> tuple[int, int]:
    """(expected batch size, epochs) of a round of DP-SGD, from trainingConfig."""
    config = spec.client.training_config
    batch = config.get("batch_size", DEFAULT_BATCH_SIZE)
    epochs = config.get("local_epochs", DEFAULT_EPOCHS)
    return max(_int(batch, DEFAULT_BATCH_SIZE), 1), max(_int(epochs, DEFAULT_EPOCHS), 1)


def _int(value: object, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        return int(float(value))
    except ValueError:
        return default


def spent_of(status: Mapping[str, Any], cluster: str | None) -> Spent:
    """What a cluster (record level) or the fleet (cluster level, None) spent so far."""
    privacy = status.get("privacy") or {}
    if cluster is None:
        entry = privacy
    else:
        entry = next((c for c in privacy.get("clusters") or [] if c.get("cluster") == cluster), {})
    return Spent(float(entry.get("samplingRate") or 0.0), int(entry.get("steps") or 0))


def edit_problem(spec: FederatedLearningSpec, status: Mapping[str, Any]) -> str | None:
    """A spec edit the record of spending cannot follow: the level or the noise multiplier
    changed (or DP was dropped) after rounds were published with them, since every step
    spent so far is accounted at the recorded ones."""
    privacy = status.get("privacy") or {}
    if not int(privacy.get("steps") or 0):
        return None
    dp = dp_of(spec)
    was = (privacy.get("level"), privacy.get("noiseMultiplier"))
    if dp is not None and (dp.level, dp.noise_multiplier) == was:
        return None
    return (
        "spec.privacy.differentialPrivacy: rounds were published with level "
        f"{was[0]} and noiseMultiplier {was[1]}, and the epsilon spent is accounted with "
        "them; set them back (or create a new job for other settings)"
    )


def round_privacy(
    spec: FederatedLearningSpec,
    status: Mapping[str, Any],
    cluster: str,
    *,
    secure_aggregation: bool = False,
) -> RoundPrivacy | None:
    """The DP part of one cluster's round spec (None without DP). Under secure
    aggregation, cluster-level noise is each cluster's share, sized for the quorum."""
    dp = dp_of(spec)
    if dp is None:
        return None
    if dp.level == "Cluster":
        stddev = (
            distributed_noise_stddev(dp.noise_multiplier, dp.clip_norm, spec.server.quorum)
            if secure_aggregation
            else 0.0
        )
        return RoundPrivacy(
            level="Cluster",
            accountant=dp.accountant,
            clip_norm=dp.clip_norm,
            noise_multiplier=dp.noise_multiplier,
            delta=dp.delta,
            noise_stddev=stddev,
        )
    batch, epochs = schedule(spec)
    spent = spent_of(status, cluster)
    return RoundPrivacy(
        level="Record",
        accountant=dp.accountant,
        clip_norm=dp.clip_norm,
        noise_multiplier=dp.noise_multiplier,
        delta=dp.delta,
        batch_size=batch,
        epochs=epochs,
        spent_steps=spent.steps,
        spent_sampling_rate=spent.sampling_rate,
    )


def epsilon_of(dp: DifferentialPrivacySpec, spent: Spent) -> float:
    return spent_epsilon(
        spent, noise_multiplier=dp.noise_multiplier, delta=dp.delta, accountant=dp.accountant
    )


@dataclass(frozen=True)
class Overrun:
    """A round that would take `cluster` (None: every cluster) to `epsilon`, past the budget
    (or whose epsilon the hub cannot bound: `why`)."""

    cluster: str | None
    epsilon: float | None
    why: str = ""


def budget_overrun(
    spec: FederatedLearningSpec,
    status: Mapping[str, Any],
    *,
    participants: Sequence[str],
    available: int,
    samples_of: SamplesOf,
) -> Overrun | None:
    """The first participant the next round would take past `maxEpsilon`, if any."""
    dp = dp_of(spec)
    if dp is None or dp.max_epsilon is None:
        return None
    if dp.level == "Cluster":
        rate = len(participants) / max(available, len(participants), 1)
        eps = epsilon_of(dp, spent_of(status, None).then(rate, 1))
        return Overrun(None, eps) if eps > dp.max_epsilon else None
    batch, epochs = schedule(spec)
    for cluster in sorted(participants):
        samples = samples_of(cluster)
        if samples is None:
            return Overrun(cluster, None, "it publishes no sample count for the dataset")
        rate, steps = record_level_steps(samples=samples, batch_size=batch, epochs=epochs)
        eps = epsilon_of(dp, spent_of(status, cluster).then(rate, steps))
        if eps > dp.max_epsilon:
            return Overrun(cluster, eps)
    return None


def still_exhausted(spec: FederatedLearningSpec, status: Mapping[str, Any]) -> bool:
    """Whether a job the budget ended still has that budget (raising maxEpsilon, or more
    rounds with a budget left, resumes it)."""
    succeeded: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {}
    )
    if succeeded.get("reason") != BUDGET_EXHAUSTED:
        return False
    dp = dp_of(spec)
    recorded = (status.get("privacy") or {}).get("maxEpsilon")
    return dp is not None and dp.max_epsilon is not None and recorded == dp.max_epsilon


def overrun_message(spec: FederatedLearningSpec, status: Mapping[str, Any], over: Overrun) -> str:
    dp = dp_of(spec)
    assert dp is not None
    assert dp.max_epsilon is not None
    round_number = int((status.get("model") or {}).get("round") or 0)
    who = over.cluster or "the clusters"
    if over.epsilon is None:
        after = f"the epsilon of {who} cannot be bounded ({over.why})"
    else:
        after = f"it would take {who} to epsilon {over.epsilon:.4g}"
    spent = (status.get("privacy") or {}).get("epsilon")
    kept = (
        f"the model of round {round_number} is the final model"
        if round_number
        else "no round fits in the budget, so there is no model"
    )
    return (
        f"privacy budget: round {round_number + 1} not started, {after}, past maxEpsilon "
        f"{dp.max_epsilon:g} at delta {dp.delta:g}"
        + (f" (spent so far: {float(spent):.4g})" if spent is not None else "")
        + f"; {kept}"
    )


def check_report(
    spec: FederatedLearningSpec,
    status: Mapping[str, Any],
    cluster: str,
    report: RoundReport,
    samples: int | None,
) -> tuple[str, str] | None:
    """(reason, message) when a record-level report's privacy record is missing or
    disagrees with the hub's own accounting; None when it agrees (or DP is not per record)."""
    dp = dp_of(spec)
    if dp is None or dp.level != "Record":
        return None
    spent = report.privacy
    if spent is None:
        return "PrivacyNotReported", "the job has record-level DP and the report says no epsilon"
    if samples is None:
        return (
            "PrivacyUnverifiable",
            f"{cluster} publishes no sample count for the dataset, so its epsilon cannot be "
            "checked; publish samples= in its dataset ClusterClaim",
        )
    batch, epochs = schedule(spec)
    rate, steps = record_level_steps(samples=samples, batch_size=batch, epochs=epochs)
    expected = epsilon_of(dp, spent_of(status, cluster).then(rate, steps))
    agrees = (
        spent.steps == steps
        and abs(spent.sampling_rate - rate) <= 1e-12
        and spent.noise_multiplier == dp.noise_multiplier
        and spent.delta == dp.delta
        and spent.accountant == dp.accountant
        and same_epsilon(spent.epsilon, expected)
    )
    if agrees:
        return None
    return (
        "PrivacyMismatch",
        f"the report says epsilon {spent.epsilon:.6g} after {spent.steps} steps at sampling "
        f"rate {spent.sampling_rate:.6g} (noise {spent.noise_multiplier:g}, delta "
        f"{spent.delta:g}, {spent.accountant}); the hub computes {expected:.6g} after {steps} "
        f"steps at {rate:.6g} from the {samples} samples the cluster publishes",
    )


def pending_record(
    spec: FederatedLearningSpec,
    status: Mapping[str, Any],
    accepted: Mapping[str, PrivacySpent | None],
) -> dict[str, Any] | None:
    """What the round being published spends: per accepted cluster (record level), or
    once for the fleet at the round's sampling rate (cluster level)."""
    dp = dp_of(spec)
    if dp is None:
        return None
    if dp.level == "Cluster":
        rate = float((status.get("privacy") or {}).get("roundSamplingRate") or 1.0)
        return {"samplingRate": rate, "steps": 1}
    return {
        "clusters": [
            {"cluster": c, "samplingRate": s.sampling_rate, "steps": s.steps}
            for c, s in sorted(accepted.items())
            if s is not None
        ]
    }


def start_round(
    spec: FederatedLearningSpec,
    status: dict[str, Any],
    *,
    participants: Sequence[str],
    available: int,
) -> None:
    """Record the round's cluster-level sampling rate (participants / available)."""
    dp = dp_of(spec)
    if dp is None:
        return
    privacy = _base(dp, status)
    if dp.level == "Cluster":
        privacy["roundSamplingRate"] = len(participants) / max(available, len(participants), 1)
    status["privacy"] = privacy


def publish(spec: FederatedLearningSpec, status: dict[str, Any], pending: Any) -> None:
    """Add a published round's spending to `status.privacy` and recompute every epsilon."""
    dp = dp_of(spec)
    if dp is None or not isinstance(pending, Mapping):
        return
    privacy = _base(dp, status)
    if dp.level == "Cluster":
        total = spent_of(status, None).then(
            float(pending.get("samplingRate") or 0.0), int(pending.get("steps") or 0)
        )
        privacy.update(
            samplingRate=total.sampling_rate, steps=total.steps, epsilon=epsilon_of(dp, total)
        )
        privacy.pop("roundSamplingRate", None)
        status["privacy"] = privacy
        return
    clusters = {str(c["cluster"]): dict(c) for c in privacy.get("clusters") or []}
    for entry in pending.get("clusters") or []:
        name = str(entry["cluster"])
        total = spent_of(status, name).then(float(entry["samplingRate"]), int(entry["steps"]))
        clusters[name] = {
            "cluster": name,
            "samplingRate": total.sampling_rate,
            "steps": total.steps,
            "rounds": int(clusters.get(name, {}).get("rounds") or 0) + 1,
            "epsilon": epsilon_of(dp, total),
        }
    shown = [clusters[c] for c in sorted(clusters)][:MAX_CLUSTERS_SHOWN]
    privacy["clusters"] = shown
    if shown:
        top = max(shown, key=lambda c: float(c["epsilon"]))
        privacy.update(
            epsilon=float(top["epsilon"]),
            samplingRate=max(float(c["samplingRate"]) for c in shown),
            steps=max(int(c["steps"]) for c in shown),
        )
    status["privacy"] = privacy


def _base(dp: DifferentialPrivacySpec, status: Mapping[str, Any]) -> dict[str, Any]:
    privacy = dict(status.get("privacy") or {})
    privacy.update(
        mechanism=MECHANISM,
        level=dp.level,
        accountant=dp.accountant,
        noiseMultiplier=dp.noise_multiplier,
        clipNorm=dp.clip_norm,
        delta=dp.delta,
    )
    if dp.max_epsilon is not None:
        privacy["maxEpsilon"] = dp.max_epsilon
    else:
        privacy.pop("maxEpsilon", None)
    privacy.setdefault("epsilon", 0.0)
    return privacy
