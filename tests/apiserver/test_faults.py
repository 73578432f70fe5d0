"""Fault injection observed through the client, and the request log."""

from __future__ import annotations

from typing import cast

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from multidict import CIMultiDictProxy

from fl_sandbox.apiserver import ApiServer

PREFIX = "/api/v1/namespaces/default/configmaps"


async def test_429_with_retry_after_then_recovers(
    server: ApiServer, core: client.CoreV1Api
) -> None:
    server.faults.fail(1.0, status=429, retry_after=2, methods=["GET"], path_prefix=PREFIX, count=1)
    with pytest.raises(ApiException) as exc:
        await core.list_namespaced_config_map("default")
    assert exc.value.status == 429
    # An ApiException raised for a response always carries its headers.
    headers = cast("CIMultiDictProxy[str]", exc.value.headers)
    assert headers["Retry-After"] == "2"
    await core.list_namespaced_config_map("default")  # the rule retired after one failure
    # Writes were never affected.
    await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="ok"))
    )


async def test_share_of_500s(server: ApiServer, core: client.CoreV1Api) -> None:
    server.faults.fail(0.5, status=500, path_prefix=PREFIX)
    codes = []
    for _ in range(10):
        try:
            await core.list_namespaced_config_map("default")
            codes.append(200)
        except ApiException as exc:
            codes.append(exc.status)
    assert sorted(codes) == [200] * 5 + [500] * 5
    server.faults.clear()
    await core.list_namespaced_config_map("default")
    await core.list_namespace()  # other paths never failed


async def test_request_log_and_counts(server: ApiServer, core: client.CoreV1Api) -> None:
    before = len(server.request_log)
    await core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a"))
    )
    await core.read_namespaced_config_map("a", "default")
    with pytest.raises(ApiException):
        await core.read_namespaced_config_map("missing", "default")
    await core.list_namespaced_config_map("default", label_selector="x=y")
    records = server.request_log[before:]
    assert [(r.method, r.status, r.verb) for r in records] == [
        ("POST", 201, "create"),
        ("GET", 200, "get"),
        ("GET", 404, "get"),
        ("GET", 200, "list"),
    ]
    assert records[-1].query == "labelSelector=x%3Dy"
    assert records[0].user == "admin"
    assert records[0].path == PREFIX
    counts = server.count_requests()
    assert counts[("GET", "configmaps")] >= 3
    assert counts[("POST", "configmaps")] >= 1
