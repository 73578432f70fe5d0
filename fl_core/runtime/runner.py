"""One round inside the training Job: fetch, train, evaluate, publish, report."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fl_contract.models import (
    MAX_METRICS,
    PrivacySpent,
    RoundPrivacy,
    RoundSpec,
    TrainingResult,
)
from fl_contract.secagg import encode_masked
from fl_contract.weights import Weights, decode_weights, describe, encode_weights
from fl_core.privacy.dp.accountant import Spent, spent_epsilon
from fl_core.privacy.dp.dpsgd import DPRound, DPSGDParameters
from fl_core.privacy.dp.noise import clip_and_noise_update
from fl_core.runtime.api import DPTrainer, Trainer
from fl_core.store import open_round_store
from fl_core.strategies.base import Rejected, spec_of, validate

_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,62}$")


class TrainingError(Exception):
    """The round cannot complete; the message is the one-line reason reported."""


async def run_round(
    spec: RoundSpec,
    trainer: Trainer,
    *,
    dataset_path: Path | None,
    work_dir: Path | None = None,
    file_root: Path | None = None,
    s3_options: Mapping[str, str] | None = None,
    secagg_secrets: Path | None = None,
) -> TrainingResult:
    """Run one round for `spec` and return the result record (the update is published). In
    a secure round only the update masked with the secrets at `secagg_secrets` is."""
    store = open_round_store(spec, file_root=file_root, s3_options=s3_options)
    try:
        if spec.global_model is not None:
            buffer = await store.get_buffer(spec.global_model.uri, sha256=spec.global_model.sha256)
            weights = decode_weights(buffer)
        else:
            weights = trainer.init_weights(spec.seed)
        data = trainer.load_data(dataset_path)
        config: dict[str, Any] = dict(spec.training_config)
        config.update(
            round=spec.round,
            attempt=spec.attempt,
            seed=spec.seed,
            cluster=spec.cluster,
            proximal_mu=spec.proximal_mu,
        )
        if work_dir is not None:
            config["work_dir"] = str(work_dir)
        privacy = spec.privacy
        spent: PrivacySpent | None = None
        if privacy is not None and privacy.level == "Record":
            new, num_examples, metrics, spent = _train_dp(trainer, weights, config, data, privacy)
        else:
            new, num_examples, metrics = trainer.train(weights, config, data)
        _check_update(new, weights)
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
            raise TrainingError(f"train() returned num_examples={num_examples!r}, not a count")
        if privacy is not None and privacy.level == "Cluster" and privacy.noise_stddev > 0:
            # Secure aggregation: the hub sees only the sum, so each cluster adds its share.
            new = clip_and_noise_update(
                new, weights, clip=privacy.clip_norm, stddev=privacy.noise_stddev
            )
        report = dict(metrics)
        if spec.evaluate:
            eval_examples, eval_metrics = trainer.evaluate(new, config, data)
            report.update(eval_metrics)
            report["eval_examples"] = float(eval_examples)
        if spec.secure_aggregation is not None:
            # Cluster-level DP counts every cluster once, as the hub does without masking.
            weight = 1 if privacy is not None and privacy.level == "Cluster" else num_examples
            encoded = mask_update(spec, new, weight, secrets_path=secagg_secrets)
        else:
            encoded = encode_weights(new)
        ref = await store.put_uri(spec.update_uri, encoded)
        return TrainingResult(
            update_uri=ref.uri,
            sha256=ref.sha256,
            num_examples=num_examples,
            metrics=_clean_metrics(report),
            privacy=spent,
        )
    finally:
        await store.close()


def mask_update(
    spec: RoundSpec, weights: Weights, num_examples: int, *, secrets_path: Path | None
) -> bytes:
    """The update masked for secure aggregation (weighted by its example count), with the
    model's layout: all that leaves the Job of a secure round."""
    from fl_core.privacy import secagg
    from fl_core.privacy.secagg_round import context, neighbour_keys, params_of

    part = spec.secure_aggregation
    assert part is not None
    if part.stage not in ("mask", "reveal"):
        raise TrainingError(f"secure aggregation: a Job runs at the mask stage, not {part.stage}")
    if secrets_path is None or not secrets_path.is_file():
        raise TrainingError(
            "secure aggregation: the client secrets are not mounted (FL_SECAGG_SECRETS_PATH)"
        )
    secrets = secagg.ClientSecrets.from_bytes(secrets_path.read_bytes())
    params = params_of(part.params)
    if not 0 < num_examples <= params.max_weight:
        raise TrainingError(
            f"secure aggregation: {num_examples} examples, outside (0, {params.max_weight:g}], "
            "the most a participant may weigh this round (the samples its cluster publishes)"
        )
    masked = secagg.mask(
        spec.cluster,
        secrets,
        params,
        secagg.flatten(weights),
        num_examples,
        neighbour_keys(part),
        sorted(part.neighbours),
        context(spec.job.uid, spec.round, spec.attempt),
    )
    return encode_masked(secagg.encode_masked(masked), describe(weights))


def _train_dp(
    trainer: Trainer,
    weights: Weights,
    config: dict[str, Any],
    data: Any,
    privacy: RoundPrivacy,
) -> tuple[Weights, int, dict[str, float], PrivacySpent]:
    """Record-level DP-SGD through the trainer's `train_dp`, and what it spent."""
    if not isinstance(trainer, DPTrainer):
        raise DPNotSupported(
            f"the round asks for record-level differential privacy and {type(trainer).__name__} "
            "has no train_dp(weights, config, data, dp) (see fl_core.runtime.api); implement "
            "it, or use level: Cluster"
        )
    dp = DPRound(
        DPSGDParameters(
            clip_norm=privacy.clip_norm,
            noise_multiplier=privacy.noise_multiplier,
            batch_size=privacy.batch_size,
            epochs=privacy.epochs,
        )
    )
    new, num_examples, metrics = trainer.train_dp(weights, config, data, dp)
    sgd = dp.sgd
    if sgd is None or sgd.steps_taken != sgd.planned_steps:
        taken = 0 if sgd is None else sgd.steps_taken
        planned = "its planned steps" if sgd is None else f"{sgd.planned_steps} steps"
        raise DPNotSupported(
            f"train_dp took {taken} DP-SGD steps, not {planned}: every batch of dp.start(n)"
            ".batches() must be taken (the epsilon reported counts them)"
        )
    if num_examples != sgd.samples:
        raise DPNotSupported(
            f"train_dp returned num_examples={num_examples!r} but started DP-SGD over "
            f"{sgd.samples} examples; they must agree (the sampling rate depends on it)"
        )
    total = Spent(privacy.spent_sampling_rate, privacy.spent_steps).then(
        sgd.sampling_rate, sgd.steps_taken
    )
    spent = PrivacySpent(
        accountant=privacy.accountant,
        noise_multiplier=privacy.noise_multiplier,
        sampling_rate=sgd.sampling_rate,
        steps=sgd.steps_taken,
        delta=privacy.delta,
        epsilon=spent_epsilon(
            total,
            noise_multiplier=privacy.noise_multiplier,
            delta=privacy.delta,
            accountant=privacy.accountant,
        ),
    )
    return new, num_examples, metrics, spent


class DPNotSupported(TrainingError):
    """The trainer cannot do the differential privacy the round asks for."""


def _check_update(new: Weights, start: Weights) -> None:
    try:
        validate(new, spec_of(start))
    except Rejected as exc:
        raise TrainingError(
            f"the trained model cannot be sent ({exc.reason}): {exc.message}"
        ) from None


def _clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Finite float metrics with valid names, at most MAX_METRICS; others dropped (logged)."""
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not _METRIC_NAME.match(str(name)) or not math.isfinite(number):
            print(f"fl-train: dropping metric {name!r}={value!r}", file=sys.stderr)
            continue
        if len(clean) == MAX_METRICS:
            print(f"fl-train: more than {MAX_METRICS} metrics, dropping {name!r}", file=sys.stderr)
            continue
        clean[str(name)] = number
    return clean
