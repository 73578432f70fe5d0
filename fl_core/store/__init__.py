"""The model store: one small async interface, the backend chosen by the URI's scheme.

store = open_store(StoreConfig(uri="s3://models/fl"))        # a cluster: open_round_store(spec)
ref = await store.put(naming.model_key(namespace=..., job=..., round_number=1), data)
data = await store.get(ref.uri, sha256=ref.sha256)     # raises IntegrityError on mismatch
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fl_contract.models import RoundSpec, StoreConfig
from fl_core.store.base import (
    AccessDenied,
    IntegrityError,
    ModelStore,
    ObjectNotFound,
    StoreError,
    check_key,
)
from fl_core.store.file import FileStore, read_verified_file

__all__ = [
    "AccessDenied",
    "FileStore",
    "IntegrityError",
    "ModelStore",
    "ObjectNotFound",
    "StoreError",
    "check_key",
    "file_uri_root",
    "open_round_store",
    "open_store",
    "read_verified_file",
]


def open_store(
    config: StoreConfig,
    *,
    file_root: Path | None = None,
    s3_options: Mapping[str, str] | None = None,
) -> ModelStore:
    """The store for `config.uri`.

    `file_root`: where the `file://` URI's folder lives on this machine (the hub's
    `file_store_root`, the sandbox's model folder); by default the URI's own path.
    `s3_options`: extra obstore S3 settings (e.g. `access_key_id`, `secret_access_key`),
    overriding the `AWS_*` environment.
    """
    scheme = urlsplit(config.uri).scheme
    if scheme == "file":
        return FileStore(config.uri, root=file_root or file_uri_root(config.uri))
    if scheme == "s3":
        from fl_core.store.s3 import S3Store

        return S3Store(
            config.uri, endpoint=config.endpoint, region=config.region, options=s3_options
        )
    raise StoreError(f"store URI {config.uri!r}: scheme must be file:// or s3://")


def file_uri_root(uri: str) -> Path:
    """`file:///models` -> /models (host must be empty or localhost)."""
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or not parts.path:
        raise StoreError(f"file store URI {uri!r} must look like file:///absolute/folder")
    return Path(unquote(parts.path))


def open_round_store(
    spec: RoundSpec,
    *,
    file_root: Path | None = None,
    s3_options: Mapping[str, str] | None = None,
) -> ModelStore:
    """The store as the cluster of a round sees it: exactly the objects the round spec's
    presigned grants name (s3://, where clusters hold no credentials), else the store
    itself (file://; or s3:// with credentials of one's own, e.g. `fl-train` run by hand)."""
    if spec.access is not None:
        from fl_core.store.presigned import PresignedStore

        return PresignedStore(spec.store.uri, access=spec.access)
    return open_store(spec.store, file_root=file_root, s3_options=s3_options)
