"""`s3://bucket/prefix` store for any S3-compatible service (AWS, MinIO, Ceph, moto).

Why obstore: it wraps the Rust `object_store` crate (the one behind Arrow/DataFusion and
Delta Lake), so signing, retries, multipart uploads and streaming run in native code outside
the GIL with a true asyncio API; it is typed, actively maintained, has no transitive Python
dependencies and moves hundreds of MB/s per stream, where aiobotocore spends most of its
time in Python and pulls in botocore's large dependency tree.

Atomic publish: the bytes go to a temporary key next to the final one, then a server-side
copy (obstore's `rename`: copy + delete) puts them at the final key. An S3 object appears
only when its upload completes, so a reader of the final key never sees a partial object,
and an interrupted upload leaves at most a `*.tmp` key, never a half-written model.
Server-side copy is limited to 5 GiB objects, far above any model this project moves.

Credentials and endpoint: obstore reads the usual `AWS_*` environment variables
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
`AWS_ENDPOINT_URL`, web identity, container credentials); the store config's `endpoint`
and `region` and explicit options override them. Plain `http://` endpoints are allowed
(local MinIO or moto), with path-style requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store as _ObS3Store

from fl_core.store.base import ModelStore, ObjectNotFound, StoreError, new_buffer, new_hash

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config

_HASH_IN_THREAD = 1024 * 1024  # chunks this big are hashed off the event loop
# SigV4 query signatures are valid for at most 7 days (S3 refuses longer ones).
MAX_PRESIGN = timedelta(days=7)


class S3Store(ModelStore):
    can_presign = True

    def __init__(
        self,
        base_uri: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        options: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(base_uri)
        parts = urlsplit(self.base_uri)
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreError(f"S3 store URI {base_uri!r} must look like s3://bucket[/prefix]")
        config: dict[str, Any] = dict(options or {})
        if endpoint:
            config["endpoint"] = endpoint
        if region:
            config["region"] = region
        client: dict[str, Any] = {}
        effective = config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL") or ""
        if str(effective).startswith("http://"):
            client["allow_http"] = True
        self._store = _ObS3Store(
            parts.netloc,
            prefix=parts.path.strip("/") or None,
            config=cast("S3Config", config),
            client_options=cast("ClientConfig", client) if client else None,
        )

    # Every obstore call below is the blocking one, run on a worker thread. A process that
    # used obstore's asyncio API (its tokio runtime resolving Python futures) aborts with
    # SIGABRT at interpreter exit now and then (seen with obstore 0.12 and async copy/get:
    # about one run in five), which would fail a training Job after its update was written.
    # The blocking calls release the GIL in native code, so the event loop stays free.

    async def _put(self, key: str, data: bytes | bytearray | memoryview) -> str:
        digest = new_hash()
        await _hash(digest, data)
        temp = f"{key}.{uuid.uuid4().hex}.tmp"
        try:
            await asyncio.to_thread(obstore.put, self._store, temp, memoryview(data))
            await asyncio.to_thread(obstore.rename, self._store, temp, key, overwrite=True)
        except Exception as exc:
            with contextlib.suppress(Exception):  # best-effort clean-up of our temporary key
                await asyncio.to_thread(obstore.delete, self._store, temp)
            raise StoreError(f"cannot write {self.uri_for(key)}: {exc}") from exc
        return digest.hexdigest()

    async def _get(self, key: str) -> tuple[memoryview, str]:
        try:
            return await asyncio.to_thread(self._read, key)
        except (NotFoundError, FileNotFoundError):
            raise ObjectNotFound(f"no object at {self.uri_for(key)}") from None
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot read {self.uri_for(key)}: {exc}") from exc

    def _read(self, key: str) -> tuple[memoryview, str]:
        """Stream the object into one buffer, hashing each chunk as it lands."""
        result = obstore.get(self._store, key)
        size = int(result.meta["size"])
        view = new_buffer(size)
        digest = new_hash()
        pos = 0
        for chunk in result.stream(min_chunk_size=4 * 1024 * 1024):
            end = pos + len(chunk)
            if end > size:
                raise StoreError(f"{self.uri_for(key)} grew while being read")
            view[pos:end] = chunk
            digest.update(view[pos:end])
            pos = end
        if pos != size:
            raise StoreError(f"{self.uri_for(key)}: read {pos} of {size} bytes")
        return view, digest.hexdigest()

    async def presign(
        self, uri: str, *, method: Literal["GET", "PUT"], expires_in: timedelta
    ) -> str:
        """A SigV4 presigned URL (obstore's `sign`) with this store's credentials."""
        key = self.key_for(uri)
        if not timedelta(seconds=1) <= expires_in <= MAX_PRESIGN:
            raise StoreError(
                f"cannot presign {method} {uri} for {expires_in}: S3 allows 1 s to 7 days"
            )
        try:
            # Signing may fetch credentials (web identity, instance metadata): off the loop.
            return await asyncio.to_thread(obstore.sign, self._store, method, key, expires_in)
        except Exception as exc:
            raise StoreError(f"cannot presign {method} {uri}: {exc}") from exc

    async def _exists(self, key: str) -> bool:
        try:
            await asyncio.to_thread(obstore.head, self._store, key)
        except (NotFoundError, FileNotFoundError):
            return False
        except Exception as exc:
            raise StoreError(f"cannot reach {self.uri_for(key)}: {exc}") from exc
        return True

    async def _delete_prefix(self, prefix: str, keep: frozenset[str]) -> None:
        try:
            await asyncio.to_thread(self._delete_all, prefix, keep)
        except Exception as exc:
            raise StoreError(f"cannot delete {self.uri_for(prefix.rstrip('/'))}/: {exc}") from exc

    def _delete_all(self, prefix: str, keep: frozenset[str]) -> None:
        for batch in obstore.list(self._store, prefix):
            paths = [meta["path"] for meta in batch if meta["path"] not in keep]
            if paths:
                obstore.delete(self._store, paths)


async def _hash(digest: Any, data: bytes | bytearray | memoryview) -> None:
    if len(data) >= _HASH_IN_THREAD:
        await asyncio.to_thread(digest.update, data)
    else:
        digest.update(data)
