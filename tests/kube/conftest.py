"""Fixtures: a real emulated API server on loopback and fl_kube clients connected to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fl_kube.client import KubeApi
from fl_sandbox.apiserver import ApiServer

ApiFactory = Callable[[], Awaitable[KubeApi]]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ApiServer]:
    srv = ApiServer(name="kube-test")
    srv.bookmark_interval = 0.2
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def api_factory(server: ApiServer, tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """Make independent clients (each its own connection pool), closed after the test."""
    clients: list[KubeApi] = []
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")

    async def make() -> KubeApi:
        api = await KubeApi.from_kubeconfig(kubeconfig, request_timeout=10)
        clients.append(api)
        return api

    yield make
    for api in clients:
        await api.close()


@pytest.fixture
async def api(api_factory: ApiFactory) -> KubeApi:
    return await api_factory()
