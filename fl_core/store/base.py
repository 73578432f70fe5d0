"""The model store interface: named blobs (weights files) addressed by URI, written
atomically and read back only when their sha256 matches."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Collection
from concurrent.futures import Future
from datetime import timedelta
from typing import Literal

import numpy as np

from fl_contract.models import ModelRef

READ_CHUNK = 4 * 1024 * 1024  # hashed while still in cache; big enough to keep syscalls rare


class StoreError(Exception):
    """The store could not do what was asked (bad URI or key, I/O failure)."""


class ObjectNotFound(StoreError):
    """No object at that URI."""


class IntegrityError(StoreError):
    """The object's bytes do not hash to the expected sha256 (corrupt, truncated, replaced)."""


class AccessDenied(StoreError):
    """The store refused the request (no grant for that object, a wrong or expired URL):
    asking again with the same access cannot help."""


class ModelStore(ABC):
    """A flat namespace of keys under one base URI (`file:///models`, `s3://bucket/prefix`).

    `put` is atomic: a reader sees either no object or the whole object at the final key,
    never a partial one. `get` hashes while it reads and returns only verified bytes.
    """

    # Whether `presign` works: a cluster then gets presigned URLs instead of credentials.
    can_presign = False

    def __init__(self, base_uri: str) -> None:
        self.base_uri = base_uri.rstrip("/")

    def uri_for(self, key: str) -> str:
        """The URI of `key` in this store (what round specs and reports carry)."""
        return f"{self.base_uri}/{check_key(key)}"

    def key_for(self, uri: str) -> str:
        """The key of a URI of this store; StoreError when the URI lies elsewhere."""
        prefix = self.base_uri + "/"
        if not uri.startswith(prefix):
            raise StoreError(f"URI {uri!r} is not inside the store {self.base_uri!r}")
        return check_key(uri[len(prefix) :])

    async def put(self, key: str, data: bytes | bytearray | memoryview) -> ModelRef:
        """Publish `data` at `key` atomically; returns its URI and sha256."""
        key = check_key(key)
        digest = await self._put(key, data)
        return ModelRef(uri=self.uri_for(key), sha256=digest)

    async def put_uri(self, uri: str, data: bytes | bytearray | memoryview) -> ModelRef:
        """`put` addressed by URI (what a round spec's `update_uri` holds)."""
        return await self.put(self.key_for(uri), data)

    async def get(self, uri: str, *, sha256: str) -> bytes:
        """The verified bytes at `uri`. Prefer `get_buffer` on hot paths (no extra copy)."""
        return bytes(await self.get_buffer(uri, sha256=sha256))

    async def get_buffer(self, uri: str, *, sha256: str) -> memoryview:
        """The bytes at `uri` as a flat, writable byte memoryview, read into one
        preallocated buffer and hashed while reading (no further copy; `decode_weights`
        takes it as is). IntegrityError when the hash differs, ObjectNotFound when absent."""
        key = self.key_for(uri)
        buffer, digest = await self._get(key)
        if digest != sha256.lower():
            raise IntegrityError(
                f"{uri}: sha256 is {digest}, expected {sha256}; the object is corrupt or was "
                "replaced, refusing it"
            )
        return buffer

    async def fetch(self, uri: str) -> tuple[memoryview, Future[str]]:
        """The bytes at `uri` and their sha256, which may still be computing on a helper
        thread: for callers that overlap their own work with hashing and check the hash
        before anything counts (`fl_core.ingest`). Unverified: prefer `get_buffer`."""
        return await self._fetch(self.key_for(uri))

    async def _fetch(self, key: str) -> tuple[memoryview, Future[str]]:
        buffer, digest = await self._get(key)
        done: Future[str] = Future()
        done.set_result(digest)
        return buffer, done

    async def exists(self, uri: str) -> bool:
        return await self._exists(self.key_for(uri))

    async def delete_prefix(self, key_prefix: str, *, keep: Collection[str] = ()) -> None:
        """Delete every object under a folder-like prefix (`ns/job/`) but the `keep` keys;
        absent is fine."""
        await self._delete_prefix(
            check_key(key_prefix.rstrip("/")) + "/", frozenset(check_key(k) for k in keep)
        )

    async def presign(
        self, uri: str, *, method: Literal["GET", "PUT"], expires_in: timedelta
    ) -> str:
        """A URL that lets whoever holds it do `method` on the one object at `uri`, without
        credentials, for `expires_in`. A bearer secret: never log it. StoreError where the
        backend cannot sign (file://, whose clients share the hub's folder)."""
        raise StoreError(f"the store {self.base_uri} cannot presign URLs")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (nothing to do for most backends)."""

    @abstractmethod
    async def _put(self, key: str, data: bytes | bytearray | memoryview) -> str: ...

    @abstractmethod
    async def _get(self, key: str) -> tuple[memoryview, str]: ...

    @abstractmethod
    async def _exists(self, key: str) -> bool: ...

    @abstractmethod
    async def _delete_prefix(self, prefix: str, keep: frozenset[str]) -> None: ...


def check_key(key: str) -> str:
    """A key is a relative `/`-separated path without empty, `.` or `..` segments."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StoreError(f"store key {key!r} must be a non-empty relative path")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"store key {key!r} must not hold empty, '.' or '..' segments")
    return key


def new_hash() -> hashlib._Hash:
    return hashlib.sha256()


def new_buffer(size: int) -> memoryview:
    """An uninitialised byte buffer. numpy asks the kernel for transparent huge pages on
    large allocations, which makes first-touch page faults (most of the cost of reading
    a fresh 40 MB buffer) several times cheaper than with `bytearray`."""
    return np.empty(size, dtype=np.uint8).data
