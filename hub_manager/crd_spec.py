"""The FederatedLearning spec as a typed model.

The CRD schema catches types, enums and minimums at admission; this model checks what a
schema cannot (cross-field rules, durations, free-form maps) and turns every problem into
one line that names the field path and says what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from fl_contract.models import Framework, ModelRef, ScalarValue
from fl_core.strategies import STRATEGY_NAMES

S3_TYPES = ("S3Bucket", "S3")
FILE_TYPES = ("HostPath", "PersistentVolumeClaim")
MAX_TRAINING_CONFIG = 64
WAIT_FOR_CLUSTERS_ROUNDS = 3  # default waitForClustersTimeout, in roundTimeouts

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_CONFIG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


def parse_duration(text: str) -> timedelta:
    """A Go-style duration (``90s``, ``10m``, ``1h30m``, ``500ms``) as a timedelta."""
    if not _DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, e.g. 90s, 10m")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


class _Spec(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )


class StrategySpec(_Spec):
    name: str = "FedAvg"
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {value!r}: use one of {', '.join(STRATEGY_NAMES)}")
        return value


class EvaluationSpec(_Spec):
    evaluator: str | None = None


class S3Spec(_Spec):
    bucket_name: Annotated[str, StringConstraints(min_length=3, max_length=63)]
    prefix: str = ""
    region: str | None = None
    endpoint: str | None = None
    credentials_secret: str | None = None


class RetentionSpec(_Spec):
    """What the hub deletes from the store: updates once published, old global models,
    the job's objects with the job (defaults: keep no updates, every model, delete)."""

    keep_updates: Annotated[int, Field(ge=0, le=100_000)] = 0
    keep_rounds: Annotated[int, Field(ge=1, le=100_000)] | None = None
    on_delete: Literal["Delete", "Retain"] = "Delete"


class StorageSpec(_Spec):
    type: Literal["PersistentVolumeClaim", "HostPath", "S3Bucket", "S3"] | None = None
    name: str | None = None
    path: str | None = None
    size: str | None = None
    s3: S3Spec | None = None
    retention: RetentionSpec = Field(default_factory=RetentionSpec)

    @model_validator(mode="after")
    def _consistent(self) -> StorageSpec:
        if self.type in S3_TYPES and self.s3 is None:
            raise ValueError(f"s3: type {self.type} needs s3.bucketName; add an s3 section")
        if self.s3 is not None and self.type in FILE_TYPES:
            raise ValueError(f"type: s3 is set but type is {self.type}; set S3Bucket or drop s3")
        return self

    @property
    def is_s3(self) -> bool:
        return self.s3 is not None


class ServerSpec(_Spec):
    image: str | None = None
    rounds: Annotated[int, Field(ge=1, le=100_000)] = 1
    min_available_clients: Annotated[int, Field(ge=1)] = 1
    min_fit_clients: Annotated[int, Field(ge=1)] | None = None
    round_timeout: timedelta = timedelta(minutes=10)
    wait_for_clusters_timeout: timedelta | None = None
    max_round_retries: Annotated[int, Field(ge=0, le=100)] = 2
    seed: Annotated[int, Field(ge=0)] = 0
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    initial_model: ModelRef | None = None
    evaluation: EvaluationSpec | None = None
    listeners: list[dict[str, Any]] = Field(default_factory=list)
    storage: StorageSpec | None = None

    @field_validator("round_timeout", "wait_for_clusters_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            value = parse_duration(value)
        if isinstance(value, timedelta) and value.total_seconds() <= 0:
            raise ValueError("must be longer than zero, e.g. 10m")
        return value

    @model_validator(mode="after")
    def _quorum(self) -> ServerSpec:
        if self.min_fit_clients is not None and self.min_fit_clients > self.min_available_clients:
            raise ValueError(
                f"minFitClients: {self.min_fit_clients} exceeds minAvailableClients "
                f"({self.min_available_clients}), so a round could never reach its quorum; "
                "lower minFitClients or raise minAvailableClients"
            )
        return self

    @property
    def wait_for_clusters(self) -> timedelta:
        """How long a job waits for minAvailableClients before it fails."""
        return self.wait_for_clusters_timeout or WAIT_FOR_CLUSTERS_ROUNDS * self.round_timeout

    @property
    def quorum(self) -> int:
        """Accepted updates needed to aggregate once the deadline passed."""
        return self.min_fit_clients or self.min_available_clients

    @property
    def evaluator(self) -> str | None:
        return self.evaluation.evaluator if self.evaluation else None

    @property
    def retention(self) -> RetentionSpec:
        return self.storage.retention if self.storage is not None else RetentionSpec()


class ResourcesSpec(_Spec):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _quantities(cls, value: object) -> object:
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        return value


class ClientSpec(_Spec):
    image: Annotated[str, StringConstraints(min_length=1)] | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    dataset: (
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
        | None
    ) = None
    fraction_fit: Annotated[float, Field(gt=0, le=1)] = 1.0
    training_config: dict[str, ScalarValue] = Field(default_factory=dict)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    placement: dict[str, Any] = Field(default_factory=dict)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be blank: set the training image")
        return value

    @field_validator("training_config")
    @classmethod
    def _config(cls, value: dict[str, ScalarValue]) -> dict[str, ScalarValue]:
        if len(value) > MAX_TRAINING_CONFIG:
            raise ValueError(f"at most {MAX_TRAINING_CONFIG} entries, got {len(value)}")
        for key, item in value.items():
            if not _CONFIG_KEY.match(key):
                raise ValueError(f"key {key!r} must be an identifier (letters, digits, _ . -)")
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{key}: value must be finite")
        return value


# Strategies that look at each update on its own: secure aggregation hides exactly that.
INDIVIDUAL_UPDATE_STRATEGIES = frozenset({"FedMedian", "FedTrimmedAvg", "Krum", "MultiKrum"})
SECAGG_MODULUS = 2**32  # the ring of the masked sums: quantizationRange x clusters must fit


class SecureAggregationSpec(_Spec):
    """spec.privacy.secureAggregation: SecAgg+ parameters (threshold and numShares default
    to the round's participants, see `secagg_params`)."""

    enabled: bool = False
    threshold: Annotated[int, Field(ge=2)] | None = None
    num_shares: Annotated[int, Field(ge=2)] | None = None
    clipping_range: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 8.0
    quantization_range: Annotated[int, Field(ge=2, le=2**28)] = 2**22

    @model_validator(mode="after")
    def _shares(self) -> SecureAggregationSpec:
        if (
            self.threshold is not None
            and self.num_shares is not None
            and self.num_shares < self.threshold
        ):
            raise ValueError(
                f"numShares: {self.num_shares} is below threshold ({self.threshold}): a "
                "cluster's secrets could never be reconstructed; raise numShares or lower "
                "threshold"
            )
        return self


class PrivacySpec(_Spec):
    secure_aggregation: SecureAggregationSpec | None = None
    differential_privacy: DifferentialPrivacySpec | None = None

    @property
    def secure(self) -> SecureAggregationSpec | None:
        """The secure-aggregation settings when enabled."""
        spec = self.secure_aggregation
        return spec if spec is not None and spec.enabled else None


class DifferentialPrivacySpec(_Spec):
    """Record level: DP-SGD in each cluster's trainer, epsilon per cluster. Cluster level:
    each cluster's update clipped and noise on their sum, epsilon per cluster's
    participation. `maxEpsilon`: no round starts that would take a cluster past it."""

    level: Literal["Record", "Cluster"] = "Record"
    clip_norm: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    noise_multiplier: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    max_epsilon: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    accountant: Literal["RDP", "PLD"] = "RDP"
    trainer_support: bool = False


# Server optimisers would adapt to the un-noised mean before the noise is added.
_CLUSTER_DP_STRATEGIES_REFUSED = ("FedAdam", "FedYogi", "FedAdagrad")


class FederatedLearningSpec(_Spec):
    framework: str = "other"
    server: ServerSpec = Field(default_factory=ServerSpec)
    client: ClientSpec = Field(default_factory=ClientSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)

    @model_validator(mode="after")
    def _required(self) -> FederatedLearningSpec:
        if self.client.image is None:
            raise ValueError(
                "client.image: is required; set spec.client.image to the training image"
            )
        secure = self.privacy.secure
        if secure is not None:
            strategy = self.server.strategy.name
            if strategy in INDIVIDUAL_UPDATE_STRATEGIES:
                raise ValueError(
                    f"privacy.secureAggregation.enabled: cannot be combined with "
                    f"spec.server.strategy.name {strategy}, which needs each cluster's update "
                    "while secure aggregation reveals only their sum; use FedAvg, FedProx, "
                    "FedAdam, FedYogi or FedAdagrad, or disable secure aggregation"
                )
            needed = self.server.min_available_clients
            if needed < 2:
                raise ValueError(
                    "server.minAvailableClients: secure aggregation needs at least 2 clusters "
                    f"per round (the sum of one update is that update), got {needed}; raise "
                    "minAvailableClients"
                )
            if secure.threshold is not None and secure.threshold > needed:
                raise ValueError(
                    f"privacy.secureAggregation.threshold: {secure.threshold} exceeds "
                    f"spec.server.minAvailableClients ({needed}), so a round could start "
                    "with fewer participants than it needs to unmask; lower threshold or "
                    "raise minAvailableClients"
                )
        dp = self.privacy.differential_privacy
        if dp is not None and dp.level == "Record" and self.user_trainer and not dp.trainer_support:
            raise ValueError(
                "privacy.differentialPrivacy.trainerSupport: record-level DP needs DP-SGD in "
                "the trainer, and this job runs its own (--trainer or framework: flower); "
                "implement train_dp (fl_core.runtime.api) and set trainerSupport: true, "
                "or use level: Cluster"
            )
        if dp is not None and dp.level == "Record" and self.client.dataset is None:
            raise ValueError(
                "client.dataset: record-level DP needs the dataset's name: its sampling rate "
                "comes from the sample count each cluster publishes for it (ClusterClaim)"
            )
        if (
            dp is not None
            and dp.level == "Cluster"
            and self.server.strategy.name in _CLUSTER_DP_STRATEGIES_REFUSED
        ):
            raise ValueError(
                f"privacy.differentialPrivacy.level: cluster-level DP adds its noise after "
                f"aggregation, and {self.server.strategy.name}'s server optimiser would see "
                "the un-noised mean; use FedAvg, FedProx or a robust strategy, or level: Record"
            )
        return self

    @property
    def user_trainer(self) -> bool:
        """Whether the Jobs run the user's own training code rather than a built-in one."""
        words = [*self.client.command, *self.client.args]
        return self.framework == "flower" or any(
            w == "--trainer" or w.startswith("--trainer=") for w in words
        )

    @property
    def client_framework(self) -> Framework | None:
        """The framework whose client code the training Jobs run (None: a Trainer)."""
        return "flower" if self.framework == "flower" else None

    def ignored_fields(self) -> list[str]:
        """Fields accepted for compatibility that this design cannot honour."""
        ignored = []
        if self.server.listeners:
            ignored.append("spec.server.listeners (agents pull their work; nothing listens)")
        if self.server.image:
            ignored.append("spec.server.image (the hub manager aggregates itself)")
        if (
            self.server.storage
            and self.server.storage.s3
            and self.server.storage.s3.credentials_secret
        ):
            ignored.append(
                "spec.server.storage.s3.credentialsSecret (deprecated: the hub signs with the "
                "credentials of its own environment; clusters get presigned URLs)"
            )
        return ignored


class SpecError(ValueError):
    """The spec is invalid; `problems` holds one `path: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_spec(spec: Mapping[str, Any] | None) -> FederatedLearningSpec:
    """Validate an object's spec; raise SpecError with field paths on any problem."""
    try:
        return FederatedLearningSpec.model_validate(dict(spec or {}))
    except ValidationError as exc:
        raise SpecError(_describe_all(list(exc.errors()))) from None


_SCALAR_MEMBERS = ("str", "int", "float", "bool")
_RELATIVE = re.compile(r"^([A-Za-z][A-Za-z0-9.]*): (.*)$", re.S)


def _describe_all(errors: list[Any]) -> list[str]:
    lines: list[str] = []
    for err in errors:
        line = _describe(err)
        if line not in lines:
            lines.append(line)
    return lines


def _describe(err: Mapping[str, Any]) -> str:
    loc = [str(part) for part in err.get("loc", ())]
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if loc and loc[-1] in _SCALAR_MEMBERS and "trainingConfig" in loc:
        loc = loc[:-1]
        message = "must be a string, a number or a boolean"
    if err.get("type") == "missing":
        message = "is required"
    relative = _RELATIVE.match(message) if err.get("type") == "value_error" else None
    if relative:  # a cross-field rule names the field it is about
        loc = [*loc, *relative.group(1).split(".")]
        message = relative.group(2)
    path = "spec" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc)
    return f"{path}: {message}"
