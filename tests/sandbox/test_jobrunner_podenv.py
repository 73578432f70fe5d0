"""How a Pod's first container becomes a local launch: path mapping, env, volumes."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from fl_sandbox.jobs.podenv import (
    ContainerConfigError,
    PodDirs,
    UnsupportedPodSpec,
    build_launch_plan,
    expand_vars,
    map_path,
    map_token,
)

MOUNTS = [
    ("/etc/federated-learning", Path("/r/spec")),
    ("/dev/termination-log", Path("/r/term")),
    ("/tmp/fl", Path("/r/work")),
    ("/data", Path("/srv/data")),
]
MOUNTS.sort(key=lambda m: len(m[0]), reverse=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/data", "/srv/data"),
        ("/data/train.npz", "/srv/data/train.npz"),
        ("/database", "/database"),  # a prefix of the name is not a path prefix
        ("/dev/termination-log", "/r/term"),
        ("/etc/federated-learning/round-spec.json", "/r/spec/round-spec.json"),
        ("relative/data", "relative/data"),
        ("s3://bucket/data", "s3://bucket/data"),
    ],
)
def test_map_path(value: str, expected: str) -> None:
    assert map_path(value, MOUNTS) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("--data=/data/x", "--data=/srv/data/x"),
        ("--out=/elsewhere", "--out=/elsewhere"),
        ("/tmp/fl/out", "/r/work/out"),
        ("lr=0.1", "lr=0.1"),
    ],
)
def test_map_token(token: str, expected: str) -> None:
    assert map_token(token, MOUNTS) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$(A)/x", "1/x"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("a$(A)b$(B)", "a1b2"),
    ],
)
def test_expand_vars(value: str, expected: str) -> None:
    assert expand_vars(value, {"A": "1", "B": "2"}) == expected


def pod(container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    base = {"name": "main", "image": "x", "command": ["python", "-c", "pass"]}
    base.update(container)
    return {
        "metadata": {"name": "p-abcde", "namespace": "ns", "uid": "u1", "labels": {"k": "v"}},
        "spec": {"containers": [base], "volumes": volumes or [], "nodeName": "sandbox"},
    }


def reader(objects: dict[tuple[str, str], dict[str, Any]]) -> Any:
    async def read(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert namespace == "ns"
        return objects.get((kind, name))

    return read


async def test_plan_maps_mounts_termination_path_and_working_dir(tmp_path: Path) -> None:
    dirs = PodDirs(tmp_path, "ns", "p-abcde")
    spec = pod(
        {
            "args": ["--spec=/etc/cfg/a.json", "/out/result"],
            "workingDir": "/work",
            "terminationMessagePath": "/out/result",
            "env": [
                {"name": "SPEC", "value": "/etc/cfg/a.json"},
                {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['k']"}}},
                {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            ],
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/etc/cfg"},
                {"name": "scratch", "mountPath": "/work", "subPath": "deep"},
                {"name": "claim", "mountPath": "/pvc"},
            ],
        },
        [
            {"name": "cfg", "secret": {"secretName": "s"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "claim", "persistentVolumeClaim": {"claimName": "models"}},
        ],
    )
    objects = {("Secret", "s"): {"data": {"a.json": base64.b64encode(b"{}").decode()}}}
    plan = await build_launch_plan(
        spec, dirs=dirs, read_object=reader(objects), base_env={"PATH": "/usr/bin"}
    )
    secret_dir = dirs.pod_dir / "volumes" / "cfg"
    assert (secret_dir / "a.json").read_bytes() == b"{}"
    assert plan.argv == [
        "python",
        "-c",
        "pass",
        f"--spec={secret_dir}/a.json",
        str(plan.termination_file),
    ]
    assert plan.env["SPEC"] == f"{secret_dir}/a.json"
    assert plan.env["LABEL"] == "v"
    assert plan.env["UID"] == "u1"
    assert plan.env["HOSTNAME"] == "p-abcde"
    assert plan.env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert plan.cwd == dirs.pod_dir / "volumes" / "scratch" / "deep"
    assert plan.cwd.is_dir()
    assert (tmp_path / "pvcs" / "ns" / "models").is_dir()
    assert plan.termination_file.read_bytes() == b""


async def test_env_overrides_env_from_and_missing_optional_sources_are_skipped(
    tmp_path: Path,
) -> None:
    spec = pod(
        {
            "envFrom": [
                {"configMapRef": {"name": "cm"}},
                {"secretRef": {"name": "absent", "optional": True}},
            ],
            "env": [
                {"name": "A", "value": "from-env"},
                {
                    "name": "OPT",
                    "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
                },
            ],
        }
    )
    objects = {("ConfigMap", "cm"): {"data": {"A": "from-cm", "B": "b"}}}
    plan = await build_launch_plan(
        spec, dirs=PodDirs(tmp_path, "ns", "p"), read_object=reader(objects)
    )
    assert plan.env["A"] == "from-env"
    assert plan.env["B"] == "b"
    assert "OPT" not in plan.env


@pytest.mark.parametrize(
    ("container", "volumes", "error", "match"),
    [
        ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]},
         [], ContainerConfigError, r"env\[0\].*configmap 'gone' not found"),
        ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "zz"}}}]},
         [], ContainerConfigError, "key 'zz'"),
        ({"volumeMounts": [{"name": "v", "mountPath": "/v"}]},
         [{"name": "v", "configMap": {"name": "gone"}}], ContainerConfigError, "gone"),
        ({"volumeMounts": [{"name": "undeclared", "mountPath": "/v"}]},
         [], UnsupportedPodSpec, r"volumeMounts\[0\]\.name"),
        ({"command": []}, [], UnsupportedPodSpec, "command is empty"),
        ({"volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "../escape"}]},
         [{"name": "v", "emptyDir": {}}], UnsupportedPodSpec, "subPath"),
    ],
)  # fmt: skip
async def test_problems_name_the_field(
    tmp_path: Path,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    error: type[Exception],
    match: str,
) -> None:
    objects = {("ConfigMap", "cm"): {"data": {"k": "v"}}}
    with pytest.raises(error, match=match):
        await build_launch_plan(
            pod(container, volumes), dirs=PodDirs(tmp_path, "ns", "p"), read_object=reader(objects)
        )


async def test_secret_files_are_private_and_modes_are_honoured(tmp_path: Path) -> None:
    spec = pod(
        {
            "volumeMounts": [
                {"name": "s", "mountPath": "/s"},
                {"name": "c", "mountPath": "/c"},
            ]
        },
        [
            {"name": "s", "secret": {"secretName": "creds"}},
            {
                "name": "c",
                "configMap": {
                    "name": "cm",
                    "items": [{"key": "run", "path": "run.sh", "mode": 0o755}],
                },
            },
        ],
    )
    objects = {
        ("Secret", "creds"): {"data": {"token": base64.b64encode(b"t0k3n").decode()}},
        ("ConfigMap", "cm"): {"data": {"run": "echo hi"}},
    }
    dirs = PodDirs(tmp_path, "ns", "p")
    await build_launch_plan(spec, dirs=dirs, read_object=reader(objects))
    token = dirs.pod_dir / "volumes" / "s" / "token"
    assert token.read_bytes() == b"t0k3n"
    assert token.stat().st_mode & 0o777 == 0o600
    assert (dirs.pod_dir / "volumes" / "s").stat().st_mode & 0o777 == 0o700
    assert (dirs.pod_dir / "volumes" / "c" / "run.sh").stat().st_mode & 0o777 == 0o755
