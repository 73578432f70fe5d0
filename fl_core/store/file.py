"""`file://` store: a folder on a local or mounted filesystem (the sandbox, a PVC, hostPath).

Atomic publish: write a temporary file in the destination folder, fsync it, rename it over
the final name (atomic on POSIX within one filesystem), then fsync the folder so the rename
survives a crash. Blocking I/O runs in a worker thread; hashlib and the kernel release the
GIL, so the event loop stays responsive while large models move.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import shutil
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from fl_core.store.base import (
    ModelStore,
    ObjectNotFound,
    StoreError,
    new_buffer,
    new_hash,
)

FILE_CHUNK = 1024 * 1024  # small enough that hashing starts early, big enough to be cheap


class FileStore(ModelStore):
    """Keys map to files under `root`; URIs keep the configured base (`file:///models`)
    so that a hub and a Job that mount the same folder at different places agree on URIs."""

    def __init__(self, base_uri: str, *, root: Path) -> None:
        super().__init__(base_uri)
        self.root = root

    def path_for(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    async def _put(self, key: str, data: bytes | bytearray | memoryview) -> str:
        return await asyncio.to_thread(self._put_sync, self.path_for(key), data)

    async def _get(self, key: str) -> tuple[memoryview, str]:
        return await asyncio.to_thread(read_verified_file, self.path_for(key))

    async def _fetch(self, key: str) -> tuple[memoryview, Future[str]]:
        return await asyncio.to_thread(read_file_hashing, self.path_for(key))

    async def _exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_for(key).is_file)

    async def _delete_prefix(self, prefix: str, keep: frozenset[str]) -> None:
        path = self.path_for(prefix.rstrip("/"))
        kept = {self.path_for(key) for key in keep if key.startswith(prefix)}
        try:
            await asyncio.to_thread(_remove_tree, path, kept)
        except OSError as exc:
            raise StoreError(f"cannot delete {self.uri_for(prefix.rstrip('/'))}/: {exc}") from exc

    @staticmethod
    def _put_sync(path: Path, data: bytes | bytearray | memoryview) -> str:
        digest = new_hash()
        digest.update(data)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create folder {path.parent}: {exc}") from exc
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise StoreError(f"cannot write {path}: {exc}") from exc
        _fsync_dir(path.parent)
        return digest.hexdigest()


def _remove_tree(path: Path, kept: set[Path]) -> None:
    """`rm -r path`, except the files in `kept` (and the folders that hold them)."""
    if not kept:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)
        return
    for folder, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            file = Path(folder, name)
            if file not in kept:
                file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: it holds a kept file
            Path(folder).rmdir()


def read_verified_file(path: Path) -> tuple[memoryview, str]:
    """Read a whole file into one preallocated buffer, hashing it while reading; returns
    the buffer (a flat byte memoryview) and its sha256."""
    buffer, digest = read_file_hashing(path)
    return buffer, digest.result()


def read_file_hashing(path: Path) -> tuple[memoryview, Future[str]]:
    """Read a whole file into one fresh buffer and return it with its sha256 still being
    computed on a helper thread.

    sha256 (about 2 GB/s) is slower than reading from the page cache or a fast disk, so
    the helper hashes chunk k (hashlib releases the GIL) while this thread reads chunk
    k+1; reading ends well before hashing does, and the caller can decode and stage the
    update meanwhile, committing only once the hash matches (`fl_core.ingest`).
    """
    try:
        handle = path.open("rb", buffering=0)
    except FileNotFoundError:
        raise ObjectNotFound(f"no object at {path}") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    chunks: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
    with handle:
        size = os.fstat(handle.fileno()).st_size
        view = new_buffer(size)
        digest = _hashers().submit(_hash_chunks, chunks)
        try:
            pos = 0
            while pos < size:
                count = handle.readinto(view[pos : pos + FILE_CHUNK])
                if not count:
                    raise StoreError(f"{path} shrank while being read")
                chunks.put(view[pos : pos + count])
                pos += count
            if handle.read(1):
                raise StoreError(f"{path} grew while being read")
        finally:
            chunks.put(None)
    return view, digest


def _hash_chunks(chunks: queue.SimpleQueue[memoryview | None]) -> str:
    digest = new_hash()
    while (chunk := chunks.get()) is not None:
        digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _hashers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="sha256")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
