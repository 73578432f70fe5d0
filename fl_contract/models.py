"""Pydantic models of what travels between hub, agent and training Job.

Versioned (`version`), strict (`extra="forbid"`) and bounded: a report must fit in a
ManagedClusterAddOn condition message, a training result in a termination message.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_serializer,
    field_validator,
)

CONTRACT_VERSION: Literal[1] = 1
MAX_REPORT_BYTES = 4096  # well under the 32768 characters a condition message may hold
MAX_RESULT_BYTES = 4096  # the kubelet keeps at most 4096 bytes of a termination message
MAX_METRICS = 32

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
MetricName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
]
ScalarValue = str | int | float | bool
# Frameworks whose client code the training runtime runs itself (spec.framework); None runs
# a Trainer (`fl-train --trainer`, or the digits example).
Framework = Literal["flower"]
MAX_NODE_CONFIG = 64
ConfigKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")]
Metrics = Annotated[dict[MetricName, float], Field(max_length=MAX_METRICS)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Frozen):
    """A weights file in the model store and the sha256 that identifies it."""

    uri: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    sha256: Sha256


class UpdateRef(ModelRef):
    """One cluster's model update: the file, its hash, and how many examples it saw."""

    num_examples: Annotated[int, Field(ge=0)]


class JobRef(_Frozen):
    """The FederatedLearning object a round belongs to."""

    namespace: str
    name: str
    uid: Annotated[str, StringConstraints(min_length=1)]


class StoreConfig(_Frozen):
    """Where models live. `uri` is the base (`file:///models` or `s3://bucket/prefix`)."""

    uri: Annotated[str, StringConstraints(pattern=r"^(file|s3)://.+")]
    endpoint: str | None = None
    region: str | None = None


# The signature (and credential scope) of a presigned S3 URL: what makes it a bearer secret.
_PRESIGNED_QUERY = re.compile(r"X-Amz-[A-Za-z-]+=[^&\s'\"]*")


def redact_presigned(text: str) -> str:
    """`text` with every presigned URL's signature query cut out: for messages that reach
    logs, reports, status or Events (a trainer may print a URL it was given)."""
    return _PRESIGNED_QUERY.sub("X-Amz-…", text)


class ObjectGrant(_Frozen):
    """One presigned URL: `method` on the one object at `uri`, until the access expires.

    The URL is a bearer secret (anyone holding it may use it): it is hidden from `repr`
    and logs and only written out by `to_json`; messages name the `uri` instead."""

    uri: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    method: Literal["GET", "PUT"]
    url: SecretStr

    @field_validator("url")
    @classmethod
    def _http(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("must be an https:// (or http://) URL")
        return value

    @field_serializer("url", when_used="json")
    def _reveal(self, value: SecretStr) -> str:
        return value.get_secret_value()


class StoreAccess(_Frozen):
    """What a cluster may do in the model store for one round: the hub's presigned URLs
    (GET of the global model, PUT and GET of this cluster's own update), all expiring at
    `expires` (the round's deadline plus a little slack). Clusters hold no store
    credentials; a file:// store has no access grants (one machine, plain paths)."""

    expires: datetime
    grants: Annotated[list[ObjectGrant], Field(max_length=8)]

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("expires must carry a timezone (UTC)")
        return value

    def url(self, uri: str, method: Literal["GET", "PUT"]) -> str | None:
        for grant in self.grants:
            if grant.uri == uri and grant.method == method:
                return grant.url.get_secret_value()
        return None


class Resources(_Frozen):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


Base64Text = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]*={0,2}$", max_length=1024)]
ClusterName = Annotated[str, StringConstraints(min_length=1, max_length=253)]
# The stages of a secure-aggregation round, in order: advertise public keys, share
# encrypted secret shares, upload the masked input, reveal shares for the unmasking.
SecAggStage = Literal["keys", "shares", "mask", "reveal"]


class PublicKeyPair(_Frozen):
    """One cluster's public keys of a secure round (base64): `c_pk` encrypts the shares
    sent to it, `s_pk` seeds its pairwise masks."""

    c_pk: Base64Text
    s_pk: Base64Text


class SecAggConfig(_Frozen):
    """The protocol's parameters for one round, fixed by the hub when the round starts."""

    threshold: Annotated[int, Field(ge=2)]
    num_shares: Annotated[int, Field(ge=1)]  # two participants: one neighbour each
    clipping_range: Annotated[float, Field(gt=0)]
    quantization_range: Annotated[int, Field(ge=2)]
    modulus: Annotated[int, Field(ge=2)]
    # The largest weight (example count) a participant may have; weights enter as a share
    # of it, so the closer to the real counts, the finer the quantisation.
    max_weight: Annotated[float, Field(gt=0)] = 1.0


class SecAggRound(_Frozen):
    """The secure-aggregation part of a round spec: the stage the hub asks for and what it
    relays. Public keys and cluster names travel here; bulk items (encrypted shares) only
    through the model store, by URI and sha256."""

    stage: SecAggStage
    params: SecAggConfig
    shares_uri: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    revealed_uri: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    # From `shares` on: the public keys of this cluster's neighbours still in the protocol.
    neighbours: dict[ClusterName, PublicKeyPair] = Field(default_factory=dict)
    # From `mask` on: the encrypted shares the other clusters addressed to this one.
    inbox: ModelRef | None = None
    # `reveal`: the clusters whose masked inputs are summed, and those that dropped after
    # sharing their keys (reveal their secret-key shares, never both kinds for one cluster).
    survivors: list[ClusterName] = Field(default_factory=list)
    dropped: list[ClusterName] = Field(default_factory=list)


class SecAggReport(_Frozen):
    """The secure-aggregation part of a round report: the last stage this cluster completed,
    its public keys, and the store objects of its stages."""

    stage: SecAggStage
    public_keys: PublicKeyPair
    shares: ModelRef | None = None
    revealed: ModelRef | None = None


DPLevel = Literal["Record", "Cluster"]
DPAccountant = Literal["RDP", "PLD"]
Probability = Annotated[float, Field(ge=0, le=1)]


class RoundPrivacy(_Frozen):
    """The differential privacy a round asks of one cluster (`spec.privacy`).

    Record level: the trainer runs DP-SGD, `epochs` passes of Poisson batches of expected
    size `batch_size`, each example's gradient clipped to `clip_norm`, noise
    `noise_multiplier * clip_norm`; `spent_*` is what this cluster spent in earlier rounds
    (largest sampling rate, steps), so that its report gives the job's epsilon so far.
    Cluster level: with `noise_stddev` above 0 the cluster clips its change to the global
    model to `clip_norm` and adds noise of that standard deviation (its share of the
    noise under secure aggregation); otherwise the hub clips and adds the noise."""

    level: DPLevel
    accountant: DPAccountant = "RDP"
    clip_norm: Annotated[float, Field(gt=0)]
    noise_multiplier: Annotated[float, Field(ge=0)]
    delta: Annotated[float, Field(gt=0, lt=1)]
    batch_size: Annotated[int, Field(ge=1)] = 1
    epochs: Annotated[int, Field(ge=1)] = 1
    spent_steps: Annotated[int, Field(ge=0)] = 0
    spent_sampling_rate: Probability = 0.0
    noise_stddev: Annotated[float, Field(ge=0)] = 0.0


class PrivacySpent(_Frozen):
    """What a record-level DP round spent (`sampling_rate`, `steps`) and the cluster's
    epsilon at `delta` over the job so far, as the training runtime's accountant says."""

    accountant: DPAccountant
    noise_multiplier: Annotated[float, Field(ge=0)]
    sampling_rate: Probability
    steps: Annotated[int, Field(ge=0)]
    delta: Annotated[float, Field(gt=0, lt=1)]
    epsilon: Annotated[float, Field(ge=0)]


class RoundSpec(_Frozen):
    """What the hub asks one cluster to do in one round (delivered as a ConfigMap)."""

    version: Literal[1] = CONTRACT_VERSION
    job: JobRef
    cluster: str
    round: Annotated[int, Field(ge=1)]
    attempt: Annotated[int, Field(ge=1)] = 1
    seed: int = 0
    # None in round 1 without an initial model: every client initialises from `seed`.
    global_model: ModelRef | None = None
    update_uri: Annotated[str, StringConstraints(min_length=1)]
    store: StoreConfig
    # Presigned access to the objects of this round (s3:// stores); None for file://.
    access: StoreAccess | None = None
    image: Annotated[str, StringConstraints(min_length=1)]
    # "flower": the Job runs a Flower ClientApp (`fl_core.runtime.flower`). Absent for a
    # Trainer, so agents that predate the field accept those specs unchanged.
    framework: Framework | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    dataset: str | None = None
    training_config: dict[str, ScalarValue] = Field(default_factory=dict)
    # FedProx: the client adds (mu/2)*||w - w_global||^2 to its loss. 0 disables it.
    proximal_mu: Annotated[float, Field(ge=0)] = 0.0
    evaluate: bool = True
    deadline: datetime
    resources: Resources = Field(default_factory=Resources)
    # spec.privacy.secureAggregation: the stage of the protocol (None: a plain round).
    secure_aggregation: SecAggRound | None = None
    # Absent without differential privacy, so agents that predate it accept those specs.
    privacy: RoundPrivacy | None = None

    @field_validator("deadline")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("deadline must carry a timezone (UTC)")
        return value

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RoundSpec:
        return cls.model_validate_json(text)


RoundState = Literal["Training", "UpdateReady", "TrainingFailed"]
# Why a round failed on a cluster, in CamelCase as Kubernetes reasons are
# (DatasetNotFound, IntegrityError, TrainingFailed, ...); empty when it did not fail.
Reason = Annotated[str, StringConstraints(max_length=64, pattern=r"^([A-Z][A-Za-z0-9]*)?$")]


class RoundReport(_Frozen):
    """What an agent reports for one round, as the message of its round condition."""

    version: Literal[1] = CONTRACT_VERSION
    job_uid: str
    cluster: str
    round: Annotated[int, Field(ge=1)]
    attempt: Annotated[int, Field(ge=1)] = 1
    state: RoundState
    update: UpdateRef | None = None
    metrics: Metrics = Field(default_factory=dict)
    reason: Reason = ""
    message: Annotated[str, StringConstraints(max_length=1024)] = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # A secure round: where this cluster stands in the protocol. Its `update` is then the
    # masked input, with `num_examples` 0 (the weight is inside the masked input).
    secure_aggregation: SecAggReport | None = None
    privacy: PrivacySpent | None = None  # record-level DP: what the round spent

    def to_message(self) -> str:
        """Compact JSON for a condition message; raises ValueError when over the bound."""
        text = self.model_dump_json(exclude_none=True)
        if len(text.encode()) > MAX_REPORT_BYTES:
            raise ValueError(f"round report is {len(text.encode())} bytes, over {MAX_REPORT_BYTES}")
        return text

    @classmethod
    def from_message(cls, text: str) -> RoundReport:
        if len(text.encode()) > MAX_REPORT_BYTES:
            raise ValueError(f"round report is over {MAX_REPORT_BYTES} bytes")
        return cls.model_validate_json(text)


class TrainingResult(_Frozen):
    """The record a training container writes to its termination message."""

    version: Literal[1] = CONTRACT_VERSION
    update_uri: str
    sha256: Sha256
    num_examples: Annotated[int, Field(ge=0)]
    metrics: Metrics = Field(default_factory=dict)
    privacy: PrivacySpent | None = None  # record-level DP: what the round spent

    def to_json(self) -> str:
        text = self.model_dump_json(exclude_none=True)
        if len(text.encode()) > MAX_RESULT_BYTES:
            raise ValueError(f"training result is over {MAX_RESULT_BYTES} bytes")
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> TrainingResult:
        return cls.model_validate_json(text)


class TrainingFailure(_Frozen):
    """The record a training container writes to its termination message when the round
    fails: the exception and the last lines of its stderr, so the reason reaches the hub
    without anyone reading the pod's logs."""

    version: Literal[1] = CONTRACT_VERSION
    failure: Annotated[str, StringConstraints(min_length=1, max_length=128)]  # ImportError
    message: Annotated[str, StringConstraints(max_length=1024)] = ""
    stderr: Annotated[str, StringConstraints(max_length=2048)] = ""

    def to_json(self) -> str:
        text = self.model_dump_json()
        if len(text.encode()) > MAX_RESULT_BYTES:
            raise ValueError(f"training failure record is over {MAX_RESULT_BYTES} bytes")
        return text

    @classmethod
    def from_json(cls, text: str | bytes) -> TrainingFailure:
        return cls.model_validate_json(text)

    def summary(self) -> str:
        """`ImportError: No module named 'nosuch'`."""
        return f"{self.failure}: {self.message}" if self.message else self.failure


class Dataset(_Frozen):
    """One entry of an agent's dataset catalogue. Exactly one of path, host_path, pvc."""

    name: Annotated[
        str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    ]
    path: str | None = None
    host_path: str | None = Field(default=None, alias="hostPath")
    pvc: str | None = None
    samples: Annotated[int, Field(ge=0)] | None = None
    task: str | None = None
    features: str | None = None
    labels: str | None = None
    # What this cluster's training Jobs get as a Flower app's `context.node_config`
    # (e.g. partition-id, num-partitions, data-path), as FL_NODE_CONFIG.
    node_config: Annotated[dict[ConfigKey, ScalarValue], Field(max_length=MAX_NODE_CONFIG)] = Field(
        default_factory=dict, alias="nodeConfig"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def model_post_init(self, _context: object) -> None:
        sources = [s for s in (self.path, self.host_path, self.pvc) if s]
        if len(sources) != 1:
            raise ValueError(f"dataset {self.name!r}: give exactly one of path, hostPath, pvc")

    def claim_value(self) -> str:
        """Compact `key=value` pairs for the ClusterClaim value (at most 1024 characters)."""
        parts = {"samples": self.samples, "task": self.task}
        text = ",".join(f"{k}={v}" for k, v in parts.items() if v is not None) or "present"
        return text[:1024]


def claimed_samples(claim_value: str) -> int | None:
    """The `samples=N` of a dataset ClusterClaim value (`Dataset.claim_value`), if any."""
    for part in claim_value.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "samples" and value.strip().isdigit():
            return int(value.strip())
    return None


class DatasetCatalogue(_Frozen):
    """The agent's `--datasets` file: `datasets: [...]`, names unique."""

    datasets: list[Dataset] = Field(default_factory=list)

    @field_validator("datasets")
    @classmethod
    def _unique(cls, value: list[Dataset]) -> list[Dataset]:
        names = [d.name for d in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dataset names must be unique; repeated: {', '.join(dupes)}")
        return value


def compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
