"""The model store against real backends: a folder, and moto's S3 server over HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from fl_contract import naming
from fl_contract.models import ModelRef, ObjectGrant, StoreAccess, StoreConfig
from fl_contract.weights import decode_weights, encode_weights, sha256_hex
from fl_core.store import (
    AccessDenied,
    IntegrityError,
    ModelStore,
    ObjectNotFound,
    StoreError,
    open_store,
)
from fl_core.store.presigned import PresignedStore
from tests.s3_server import PresignedAuth


def _model(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_weights({"w": rng.standard_normal((64, 10)).astype(np.float32)})


@pytest.fixture(params=["file", "s3"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    if request.param == "file":
        return StoreConfig(uri=f"file://{tmp_path}/models")
    return request.getfixturevalue("s3_config")  # type: ignore[no-any-return]


async def test_put_get_roundtrip_and_layout(store_config: StoreConfig) -> None:
    store = open_store(store_config)
    key = naming.model_key(namespace="team-a", job="digits", round_number=1)
    data = _model()
    ref = await store.put(key, data)
    assert ref.uri == f"{store_config.uri}/team-a/digits/rounds/1/global.safetensors"
    assert ref.sha256 == sha256_hex(data)
    assert await store.exists(ref.uri)
    got = await store.get(ref.uri, sha256=ref.sha256)
    assert got == data
    buffer = await store.get_buffer(ref.uri, sha256=ref.sha256)
    np.testing.assert_array_equal(decode_weights(buffer)["w"], decode_weights(data)["w"])


async def test_wrong_hash_and_missing_object(store_config: StoreConfig) -> None:
    store = open_store(store_config)
    ref = await store.put("ns/job/rounds/0/global.safetensors", _model())
    with pytest.raises(IntegrityError, match="expected"):
        await store.get(ref.uri, sha256="0" * 64)
    missing = store.uri_for("ns/job/rounds/9/global.safetensors")
    assert not await store.exists(missing)
    with pytest.raises(ObjectNotFound):
        await store.get(missing, sha256=ref.sha256)


async def test_overwrite_leaves_no_temporary_objects(store_config: StoreConfig) -> None:
    store = open_store(store_config)
    key = naming.update_key(namespace="ns", job="j", round_number=2, cluster="cluster1")
    await store.put(key, _model(1))
    second = _model(2)
    ref = await store.put_uri(store.uri_for(key), second)
    assert await store.get(ref.uri, sha256=sha256_hex(second)) == second
    if store_config.uri.startswith("file://"):
        folder = Path(store_config.uri[len("file://") :]) / "ns/j/rounds/2/updates"
        assert sorted(os.listdir(folder)) == ["cluster1.safetensors"]


async def test_delete_prefix_removes_only_that_job(store_config: StoreConfig) -> None:
    store = open_store(store_config)
    a = await store.put("ns/job/rounds/1/global.safetensors", _model())
    b = await store.put("ns/job-2/rounds/1/global.safetensors", _model())
    await store.delete_prefix("ns/job")
    assert not await store.exists(a.uri)
    assert await store.exists(b.uri)
    await store.delete_prefix("ns/absent/")  # absent is fine


async def test_file_store_detects_corruption_on_disk(tmp_path: Path) -> None:
    store = open_store(StoreConfig(uri="file:///models"), file_root=tmp_path)
    ref = await store.put("ns/j/rounds/1/global.safetensors", _model())
    assert ref.uri == "file:///models/ns/j/rounds/1/global.safetensors"
    path = tmp_path / "ns/j/rounds/1/global.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(raw)
    with pytest.raises(IntegrityError):
        await store.get(ref.uri, sha256=ref.sha256)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a/."])
async def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = open_store(StoreConfig(uri=f"file://{tmp_path}"))
    with pytest.raises(StoreError, match="store key"):
        await store.put(key, b"x")


def test_uri_outside_the_store_is_refused(tmp_path: Path) -> None:
    store = open_store(StoreConfig(uri=f"file://{tmp_path}/a"))
    with pytest.raises(StoreError, match="not inside"):
        store.key_for(f"file://{tmp_path}/b/x.safetensors")
    with pytest.raises(StoreError, match="file:///absolute"):
        open_store(StoreConfig(uri="file://host/models"))


async def test_processes_using_the_s3_store_exit_cleanly(s3_config: StoreConfig) -> None:
    """A training Job's process writes through the store and exits: the exit must be clean.

    obstore's asyncio API made such processes abort at interpreter exit now and then, after
    the write had succeeded; several runs make a regression visible.
    """
    code = (
        "import asyncio, sys\n"
        "from fl_contract.models import StoreConfig\n"
        "from fl_core.store import open_store\n"
        "async def main() -> None:\n"
        "    store = open_store(StoreConfig.model_validate_json(sys.argv[1]))\n"
        "    ref = await store.put(f'exit/{sys.argv[2]}.bin', b'update' * 1000)\n"
        "    await store.get(ref.uri, sha256=ref.sha256)\n"
        "asyncio.run(main())\n"
    )
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            s3_config.model_dump_json(),
            str(i),
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(8)
    ]
    results = [await proc.communicate() for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert codes == [0] * 8, [err.decode()[-300:] for _, err in results]


# -- presigned access: what a cluster holds instead of store credentials ----------------

CLUSTER1_UPDATE = naming.update_key(namespace="ns", job="j", round_number=1, cluster="cluster1")
CLUSTER2_UPDATE = naming.update_key(namespace="ns", job="j", round_number=1, cluster="cluster2")
GLOBAL_MODEL = naming.model_key(namespace="ns", job="j", round_number=0)


async def _grants(store: ModelStore, *, expires_in: timedelta) -> StoreAccess:
    """What the hub hands cluster1 for one round: GET the model, PUT and GET its update."""
    wanted: list[tuple[str, Literal["GET", "PUT"]]] = [
        (store.uri_for(GLOBAL_MODEL), "GET"),
        (store.uri_for(CLUSTER1_UPDATE), "PUT"),
        (store.uri_for(CLUSTER1_UPDATE), "GET"),
    ]
    grants = [
        ObjectGrant(
            uri=uri,
            method=method,
            url=await store.presign(uri, method=method, expires_in=expires_in),
        )
        for uri, method in wanted
    ]
    return StoreAccess(expires=datetime.now(UTC) + expires_in, grants=grants)


def _without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _http(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method)) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


async def test_presigned_put_and_get_of_the_granted_objects(
    s3_config: StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = open_store(s3_config)
    model = await hub.put(GLOBAL_MODEL, _model(1))
    access = await _grants(hub, expires_in=timedelta(minutes=5))
    _without_credentials(monkeypatch)
    cluster = PresignedStore(s3_config.uri, access=access)
    assert decode_weights(await cluster.get_buffer(model.uri, sha256=model.sha256))["w"].shape
    update = _model(2)
    ref = await cluster.put(CLUSTER1_UPDATE, update)
    assert ref == ModelRef(uri=hub.uri_for(CLUSTER1_UPDATE), sha256=sha256_hex(update))
    assert await cluster.get(ref.uri, sha256=ref.sha256) == update  # the agent's check
    assert await cluster.exists(ref.uri)
    assert await hub.get(ref.uri, sha256=ref.sha256) == update  # where the hub reads it
    with pytest.raises(IntegrityError):
        await cluster.get(ref.uri, sha256="0" * 64)


async def test_a_cluster_reaches_no_object_it_was_not_granted(
    s3_config: StoreConfig, s3_clock: PresignedAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = open_store(s3_config)
    other = await hub.put(CLUSTER2_UPDATE, _model(3))
    access = await _grants(hub, expires_in=timedelta(minutes=5))
    _without_credentials(monkeypatch)
    cluster = PresignedStore(s3_config.uri, access=access)
    with pytest.raises(AccessDenied, match=r"grants no GET access to .*cluster2"):
        await cluster.get(other.uri, sha256=other.sha256)
    with pytest.raises(AccessDenied, match="grants no PUT access"):
        await cluster.put(CLUSTER2_UPDATE, _model(4))
    with pytest.raises(AccessDenied):
        await cluster.delete_prefix("ns/j")
    # Nor over plain HTTP with its URLs bent to another key, method or expiry.
    get_own = access.url(hub.uri_for(CLUSTER1_UPDATE), "GET")
    put_own = access.url(hub.uri_for(CLUSTER1_UPDATE), "PUT")
    assert get_own
    assert put_own
    bent = [
        ("GET", get_own.replace("cluster1.safetensors", "cluster2.safetensors"), None),
        ("GET", put_own.replace("cluster1.safetensors", "cluster2.safetensors"), None),
        ("PUT", get_own, b"forged"),
        ("PUT", put_own.replace("cluster1.safetensors", "cluster2.safetensors"), b"forged"),
        ("GET", get_own.replace("X-Amz-Expires=300", "X-Amz-Expires=604800"), None),
        ("GET", get_own.split("?")[0], None),
    ]
    for method, url, data in bent:
        status, body = _http(url, method, data)
        assert status == 403, (method, body)
    assert s3_clock.refused.count("SignatureDoesNotMatch") >= 5
    assert await hub.get(other.uri, sha256=other.sha256) == _model(3)  # untouched


async def test_an_expired_url_is_refused_and_the_error_holds_no_url(
    s3_config: StoreConfig, s3_clock: PresignedAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = open_store(s3_config)
    model = await hub.put(GLOBAL_MODEL, _model(1))
    access = await _grants(hub, expires_in=timedelta(minutes=5))
    _without_credentials(monkeypatch)
    cluster = PresignedStore(s3_config.uri, access=access)
    s3_clock.skew = timedelta(minutes=6)
    with pytest.raises(AccessDenied, match="403 AccessDenied: Request has expired") as info:
        await cluster.get(model.uri, sha256=model.sha256)
    with pytest.raises(AccessDenied, match="Request has expired"):
        await cluster.put(CLUSTER1_UPDATE, _model(2))
    message = str(info.value)
    assert model.uri in message
    assert "X-Amz" not in message
    assert "http://" not in message


async def test_presigning_limits(s3_config: StoreConfig, tmp_path: Path) -> None:
    hub = open_store(s3_config)
    uri = hub.uri_for(CLUSTER1_UPDATE)
    assert hub.can_presign
    with pytest.raises(StoreError, match="7 days"):
        await hub.presign(uri, method="GET", expires_in=timedelta(days=8))
    with pytest.raises(StoreError, match="not inside"):
        await hub.presign("s3://elsewhere/x", method="GET", expires_in=timedelta(minutes=1))
    files = open_store(StoreConfig(uri=f"file://{tmp_path}"))
    assert not files.can_presign
    with pytest.raises(StoreError, match="cannot presign"):
        await files.presign(files.uri_for("a/b"), method="GET", expires_in=timedelta(minutes=1))


def test_grants_stay_out_of_repr_and_into_the_round_spec_json() -> None:
    grant = ObjectGrant(uri="s3://b/k", method="GET", url="http://s3/b/k?X-Amz-Signature=abc")
    access = StoreAccess(expires=datetime.now(UTC), grants=[grant])
    assert "X-Amz-Signature" not in repr(access)
    assert "X-Amz-Signature" not in str(access)
    assert StoreAccess.model_validate_json(access.model_dump_json()).url("s3://b/k", "GET") == (
        "http://s3/b/k?X-Amz-Signature=abc"
    )
    assert access.url("s3://b/k", "PUT") is None


async def test_the_s3_server_refuses_anonymous_requests(s3_config: StoreConfig) -> None:
    hub = open_store(s3_config)
    ref = await hub.put(GLOBAL_MODEL, _model(1))
    status, body = _http(f"{s3_config.endpoint}/{ref.uri[len('s3://') :]}")
    assert status == 403
    assert "AccessDenied" in body
