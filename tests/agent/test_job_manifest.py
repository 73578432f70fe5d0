"""The training Job manifest: name, mounts, environment, security, deadline, ownership."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fl_contract import keys, naming
from fl_contract.models import Dataset, JobRef, Resources, RoundSpec, StoreConfig
from spoke_agent.jobs import DeadlinePassed, build_training_job

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
UID = "0d5e2c1e-8e43-4c77-9a4f-3f7b1c7f7f10"


def make_spec(**overrides: Any) -> RoundSpec:
    values: dict[str, Any] = {
        "job": JobRef(namespace="team-a", name="digits", uid=UID),
        "cluster": "cluster1",
        "round": 3,
        "attempt": 1,
        "update_uri": "file:///models/team-a/digits/rounds/3/updates/cluster1.safetensors",
        "store": StoreConfig(uri="file:///models"),
        "image": "registry.example/trainer:1",
        "command": ["fl-train"],
        "args": ["--example", "digits"],
        "dataset": "digits",
        "deadline": NOW + timedelta(seconds=90.5),
    }
    values.update(overrides)
    return RoundSpec(**values)


CM = {"metadata": {"name": naming.round_spec_configmap_name(UID), "uid": "cm-uid-1"}}
DATASET = Dataset(name="digits", host_path="/srv/data/digits", samples=100, task="classification")


def build(spec: RoundSpec | None = None, dataset: Dataset | None = DATASET) -> dict[str, Any]:
    return build_training_job(
        spec or make_spec(), namespace="addon-ns", spec_configmap=CM, dataset=dataset, now=NOW
    )


def env_of(job: dict[str, Any]) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_name_labels_and_owner_make_the_job_findable_and_collectable() -> None:
    job = build()
    meta = job["metadata"]
    assert meta["name"] == naming.training_job_name(UID, 3, 1)
    assert meta["namespace"] == "addon-ns"
    assert meta["labels"][keys.LABEL_COMPONENT] == keys.COMPONENT_TRAINING
    assert meta["labels"][keys.LABEL_JOB_UID] == UID
    assert meta["labels"][keys.LABEL_ROUND] == "3"
    assert meta["labels"][keys.LABEL_CLUSTER] == "cluster1"
    assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": CM["metadata"]["name"],
        "uid": "cm-uid-1",
        "controller": True,
        "blockOwnerDeletion": False,
    }


def test_a_retry_attempt_gets_its_own_name() -> None:
    assert build(make_spec(attempt=2))["metadata"]["name"] == naming.training_job_name(UID, 3, 2)


def test_container_gets_spec_dataset_work_dir_and_result_path() -> None:
    job = build()
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/trainer:1"
    assert container["command"] == ["fl-train"]
    assert container["args"] == ["--example", "digits"]
    assert container["terminationMessagePath"] == keys.TERMINATION_MESSAGE_PATH
    env = env_of(job)
    assert env[keys.ENV_ROUND_SPEC_PATH] == f"{keys.ROUND_SPEC_MOUNT}/{keys.ROUND_SPEC_KEY}"
    assert env[keys.ENV_DATASET_PATH] == keys.DATASET_MOUNT
    assert env[keys.ENV_DATASET_NAME] == "digits"
    assert env[keys.ENV_WORK_DIR] == keys.WORK_DIR_MOUNT
    assert env[keys.ENV_RESULT_PATH] == keys.TERMINATION_MESSAGE_PATH
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    spec_mount = next(m for m in mounts.values() if m["mountPath"] == keys.ROUND_SPEC_MOUNT)
    assert spec_mount["readOnly"] is True
    assert volumes[spec_mount["name"]]["configMap"]["name"] == CM["metadata"]["name"]
    data_mount = next(m for m in mounts.values() if m["mountPath"] == keys.DATASET_MOUNT)
    assert data_mount["readOnly"] is True
    assert volumes[data_mount["name"]]["hostPath"] == {
        "path": "/srv/data/digits",
        "type": "Directory",
    }
    work_mount = next(m for m in mounts.values() if m["mountPath"] == keys.WORK_DIR_MOUNT)
    assert "emptyDir" in volumes[work_mount["name"]]
    assert "envFrom" not in container
    assert "resources" not in container


@pytest.mark.parametrize(
    ("dataset", "source"),
    [
        (
            Dataset(name="digits", pvc="digits-data"),
            {"persistentVolumeClaim": {"claimName": "digits-data", "readOnly": True}},
        ),
        (Dataset(name="digits", path="/var/lib/digits"), {"hostPath": {"path": "/var/lib/digits"}}),
    ],
)
def test_dataset_sources(dataset: Dataset, source: dict[str, Any]) -> None:
    volumes = build(dataset=dataset)["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "dataset"]
    assert {k: v for k, v in volume.items() if k != "name"} == source


def test_round_without_dataset_mounts_none() -> None:
    job = build(make_spec(dataset=None), dataset=None)
    env = env_of(job)
    assert keys.ENV_DATASET_PATH not in env
    mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert all(m["mountPath"] != keys.DATASET_MOUNT for m in mounts)


def test_dataset_must_be_the_one_the_spec_names() -> None:
    with pytest.raises(ValueError, match="dataset"):
        build(dataset=Dataset(name="other", path="/x"))


def test_no_store_credentials_and_resources_from_the_spec() -> None:
    """An s3:// round's Job gets no Secret: its round spec holds presigned URLs instead."""
    spec = make_spec(
        store=StoreConfig(uri="s3://models/fl"),
        resources=Resources(requests={"cpu": "500m"}, limits={"memory": "1Gi"}),
    )
    container = build(spec)["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in container
    assert not [e for e in container["env"] if "valueFrom" in e or e["name"].startswith("AWS_")]
    assert container["resources"] == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}


def test_security_and_lifecycle() -> None:
    job = build()
    spec = job["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["activeDeadlineSeconds"] == 91  # 90.5 s left, rounded up
    assert spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_a_passed_deadline_builds_no_job() -> None:
    with pytest.raises(DeadlinePassed):
        build(make_spec(deadline=NOW - timedelta(seconds=1)))


def test_the_same_inputs_build_the_same_job() -> None:
    assert build() == build()


def test_long_names_are_left_out_of_labels_not_truncated() -> None:
    spec = make_spec(job=JobRef(namespace="team-a", name="x" * 100, uid=UID))
    labels = build(spec)["metadata"]["labels"]
    assert keys.LABEL_JOB_NAME not in labels
    assert labels[keys.LABEL_JOB_NAMESPACE] == "team-a"


def test_the_catalogue_entry_node_config_reaches_the_container_as_json() -> None:
    """A Flower app's node_config: the cluster's own values, from its catalogue entry."""
    entry = Dataset.model_validate(
        {
            "name": "digits",
            "hostPath": "/srv/data/digits",
            "nodeConfig": {"partition-id": 2, "num-partitions": 3, "data-path": "/data"},
        }
    )
    env = env_of(build(make_spec(framework="flower", command=[], args=[]), dataset=entry))
    assert json.loads(env[keys.ENV_NODE_CONFIG]) == {
        "partition-id": 2,
        "num-partitions": 3,
        "data-path": "/data",
    }
    assert keys.ENV_NODE_CONFIG not in env_of(build())  # no nodeConfig, no variable


@pytest.mark.parametrize("node_config", [{"bad key": 1}, {"k": [1, 2]}])
def test_a_node_config_is_flat_scalars_under_identifier_keys(node_config: Any) -> None:
    with pytest.raises(ValueError, match="nodeConfig"):
        Dataset.model_validate({"name": "d", "pvc": "claim", "nodeConfig": node_config})
