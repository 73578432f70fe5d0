"""The model store through the real hub manager: what each cluster is given of an s3://
store (presigned URLs for its own objects, in its own round spec, nothing else), and what
the hub deletes (the retention policy), for s3:// (moto) and file://."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import numpy as np
import pytest

from fl_contract import naming
from fl_contract.models import JobRef, RoundSpec, StoreConfig
from fl_contract.weights import encode_weights, sha256_hex
from fl_core.store import AccessDenied, open_store
from fl_core.store.presigned import PresignedStore
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from hub_manager.store_access import ACCESS_SLACK, AccessGranter
from hub_manager.work import desired_manifest_work
from tests.hub import helpers as h
from tests.s3_server import ACCESS_KEY, CREDENTIALS, REGION, SECRET_KEY, S3Server, s3_server

__all__ = ["s3_server"]


def _keys(server: S3Server, bucket: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents") or [])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def _gone(sb: Sandbox, name: str) -> bool:
    return not await h.exists(sb, r.FEDERATED_LEARNING, name, namespace="team-a")


async def test_s3_job_gives_each_cluster_only_its_own_objects(
    sandbox_factory: Any, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():  # the hub manager's environment
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    storage = {
        "type": "S3Bucket",
        "s3": {"bucketName": bucket, "prefix": "fl", "endpoint": s3_server.endpoint},
    }
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        c1, c2 = cs["cluster1"], cs["cluster2"]
        try:
            job = await h.create_job(sb, "s3job", rounds=2, server={"storage": storage})
            uid = job["metadata"]["uid"]
            for round_number in (1, 2):
                s1 = await c1.wait_spec(uid, round_number=round_number)
                s2 = await c2.wait_spec(uid, round_number=round_number)
                for spec in (s1, s2):
                    assert spec.access is not None
                    granted = {(g.uri, g.method) for g in spec.access.grants}
                    expected = {(spec.update_uri, "PUT"), (spec.update_uri, "GET")}
                    if spec.global_model is not None:
                        expected.add((spec.global_model.uri, "GET"))
                    assert granted == expected
                    assert spec.access.expires - spec.deadline <= ACCESS_SLACK
                    assert spec.access.expires - spec.deadline > ACCESS_SLACK - timedelta(
                        seconds=30
                    )
                assert s1.access
                assert s2.access
                await c2.train(s2)
                # cluster2's report makes the hub reconcile and send again: cluster1's
                # grants stay the same (signed once per round, not at every reconcile).
                await h.wait_status(
                    sb,
                    "s3job",
                    lambda s: any(
                        p.get("cluster") == "cluster2" and p.get("state") == "Accepted"
                        for p in s.get("participants") or []
                    ),
                )
                assert (await c1.wait_spec(uid, round_number=round_number)).access == s1.access
                # cluster1 cannot read cluster2's update with what it was given.
                mine = PresignedStore(s1.store.uri, access=s1.access)
                with pytest.raises(AccessDenied):
                    await mine.get(s2.update_uri, sha256="0" * 64)
                await c1.train(s1, shift=2.0)
            status = await h.wait_status(sb, "s3job", h.phase_is("Completed"))
            assert "X-Amz" not in json.dumps(status)
            # Default retention: updates gone once their round is published; models and
            # the rounds' records kept.
            keys = _keys(s3_server, bucket)
            assert keys == [
                "fl/team-a/s3job/records/round-1.json",
                "fl/team-a/s3job/records/round-2.json",
                "fl/team-a/s3job/rounds/1/global.safetensors",
                "fl/team-a/s3job/rounds/2/global.safetensors",
            ]
            addons = await h.hub(sb).list(r.MANAGED_CLUSTER_ADDON)
            assert "X-Amz" not in json.dumps(addons.items)
            await h.hub(sb).delete(r.FEDERATED_LEARNING, "s3job", namespace="team-a")
            await wait_for(lambda: _gone(sb, "s3job"), timeout=20, message="job deleted")
            assert _keys(s3_server, bucket) == []  # onDelete: Delete (the default)
        finally:
            await h.close_clusters(cs)


async def test_retention_policy_on_a_file_store(sandbox_factory: Any) -> None:
    """keepUpdates 1, keepRounds 1, onDelete Retain; and the default on another job."""
    retention = {"keepUpdates": 1, "keepRounds": 1, "onDelete": "Retain"}
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        cs = await h.clusters(sb)
        try:
            kept = await h.create_job(
                sb, "kept", rounds=3, server={"storage": {"retention": retention}}
            )
            for round_number in (1, 2, 3):
                await h.train_round(cs, kept["metadata"]["uid"], round_number)
            await h.wait_status(sb, "kept", h.phase_is("Completed"))
            default = await h.create_job(sb, "default", rounds=1)
            await h.train_round(cs, default["metadata"]["uid"], 1)
            await h.wait_status(sb, "default", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        root = sb.model_store_dir
        records = ["records/round-1.json", "records/round-2.json", "records/round-3.json"]
        assert _files(root / "team-a/kept") == [
            *records,  # small, and kept whatever keepRounds says
            "rounds/3/global.safetensors",
            "rounds/3/updates/cluster1.safetensors",
            "rounds/3/updates/cluster2.safetensors",
        ]
        assert _files(root / "team-a/default") == [
            "records/round-1.json",
            "rounds/1/global.safetensors",
        ]
        for name in ("kept", "default"):
            await h.hub(sb).delete(r.FEDERATED_LEARNING, name, namespace="team-a")
            await wait_for(functools.partial(_gone, sb, name), timeout=20, message=name)
        assert _files(root / "team-a/kept") == [
            *records,
            "rounds/3/global.safetensors",
            "rounds/3/updates/cluster1.safetensors",
            "rounds/3/updates/cluster2.safetensors",
        ]
        assert not (root / "team-a/default").exists()


async def test_the_initial_model_outlives_the_job(sandbox_factory: Any) -> None:
    """The user's initial model, even inside the job's folder, is never deleted."""
    async with sandbox_factory(clusters=2) as sb, h.manager(sb):
        initial_key = naming.model_key(namespace="team-a", job="init", round_number=0)
        path = sb.model_store_dir / initial_key
        path.parent.mkdir(parents=True)
        data = encode_weights({k: np.zeros(v, dtype=np.float32) for k, v in h.SHAPES.items()})
        path.write_bytes(data)
        uri = sb.model_store_dir.resolve().as_uri() + "/" + initial_key
        initial = {"uri": uri, "sha256": sha256_hex(data)}
        cs = await h.clusters(sb)
        try:
            job = await h.create_job(sb, "init", rounds=1, server={"initialModel": initial})
            await h.train_round(cs, job["metadata"]["uid"], 1)
            await h.wait_status(sb, "init", h.phase_is("Completed"))
        finally:
            await h.close_clusters(cs)
        await h.hub(sb).delete(r.FEDERATED_LEARNING, "init", namespace="team-a")
        await wait_for(lambda: _gone(sb, "init"), timeout=20, message="job deleted")
        assert _files(sb.model_store_dir / "team-a/init") == ["rounds/0/global.safetensors"]


async def test_grants_are_signed_once_per_round_and_reused_after_a_restart(
    s3_server: S3Server, tmp_path: Path
) -> None:
    config = StoreConfig(
        uri=f"s3://{s3_server.new_bucket()}/fl", endpoint=s3_server.endpoint, region=REGION
    )
    store = open_store(
        config, s3_options={"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    )
    obj = {"metadata": {"namespace": "team-a", "name": "j", "uid": "uid-grants"}}
    key = naming.update_key(namespace="team-a", job="j", round_number=1, cluster="cluster1")
    spec = RoundSpec(
        job=JobRef(namespace="team-a", name="j", uid="uid-grants"),
        cluster="cluster1",
        round=1,
        update_uri=store.uri_for(key),
        store=config,
        image="trainer",
        deadline=datetime.now(UTC) + timedelta(minutes=1),
    )
    granter = AccessGranter()
    first = await granter.grant(spec, store=store, current_work=None)
    assert first.access is not None
    assert (await granter.grant(spec, store=store, current_work=None)) == first
    work = desired_manifest_work(
        obj, cluster="cluster1", agent_namespace="addon-ns", round_spec=first
    )
    restarted = AccessGranter()  # a new manager finds the grants in the ManifestWork
    assert (await restarted.grant(spec, store=store, current_work=work)) == first
    retry = spec.model_copy(update={"attempt": 2, "update_uri": store.uri_for(key + ".a2")})
    retried = await restarted.grant(retry, store=store, current_work=work)
    assert retried.access is not None
    assert {g.uri for g in retried.access.grants} == {retry.update_uri}
    files = open_store(StoreConfig(uri=f"file://{tmp_path}"))
    plain = spec.model_copy(update={"store": StoreConfig(uri=f"file://{tmp_path}")})
    assert (await granter.grant(plain, store=files, current_work=None)).access is None
