"""Fixtures: an ApiServer in the test's event loop, reached through kubernetes_asyncio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast, overload

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from fl_sandbox.apiserver import ApiServer
from tests.conftest import CRD_DIR

OCM_CRDS = CRD_DIR
REPO_CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"

T = TypeVar("T")


def ocm_crds_or_skip() -> Path:
    if not OCM_CRDS.is_dir():
        pytest.skip(f"upstream OCM CRDs not found at {OCM_CRDS} (expected ../shared/ocm-crds)")
    return OCM_CRDS


def error_body(exc: ApiException) -> str:
    """The body of an error response: ApiClient decodes it to str before it raises, though
    the stubs still say bytes."""
    return cast(str, exc.body)


@overload
async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 3.0, message: str = ""
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T | None], *, within: float = 3.0, message: str = ""
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    *,
    within: float = 3.0,
    message: str = "",
) -> Any:
    """Poll until probe() is truthy; TimeoutError with the last value otherwise."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        last = value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message}: last value {last!r}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    crd_dirs = [OCM_CRDS] if OCM_CRDS.is_dir() else []
    srv = ApiServer(name="test", crd_dirs=crd_dirs, history_limit=1000)
    await srv.start()
    yield srv
    await srv.stop()


async def client_for(srv: ApiServer, path: Path, **identity: Any) -> ApiClient:
    kubeconfig = srv.write_kubeconfig(path, **identity)
    return await config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
async def api(server: ApiServer, tmp_path: Path) -> AsyncIterator[ApiClient]:
    api_client = await client_for(server, tmp_path / "admin.kubeconfig")
    yield api_client
    await api_client.close()


@pytest.fixture
def core(api: ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)
