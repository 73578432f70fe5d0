"""The model store against real backends: a folder, and moto's S3 server over HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from fl_contract import naming
from fl_contract.models import StoreConfig
from fl_contract.weights import decode_weights, encode_weights, sha256_hex
from fl_core.store import IntegrityError, ObjectNotFound, StoreError, open_store


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
