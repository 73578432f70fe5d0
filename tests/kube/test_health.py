"""The metrics and probe endpoints, served for real on a loopback port."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from fl_kube.health import HealthServer, parse_bind
from fl_kube.metrics import ControllerMetrics


@pytest.mark.parametrize(
    ("bind", "expected"),
    [(":8080", ("0.0.0.0", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9", ("::1", 9))],
)
def test_parse_bind(bind: str, expected: tuple[str, int]) -> None:
    assert parse_bind(bind) == expected


@pytest.mark.parametrize("bind", ["8080", "host:", "host:http"])
def test_parse_bind_rejects(bind: str) -> None:
    with pytest.raises(ValueError, match="bind address"):
        parse_bind(bind)


async def test_serves_metrics_and_probes() -> None:
    registry = CollectorRegistry()
    ControllerMetrics(registry).register_controller("demo", max_concurrent=2)
    ready = False
    server = HealthServer(bind="127.0.0.1:0", registry=registry, ready=lambda: ready)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/metrics") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                text = await response.text()
            assert (
                'controller_runtime_reconcile_total{controller="demo",result="success"} 0.0' in text
            )
            assert 'workqueue_depth{name="demo"} 0.0' in text
            async with http.get(f"{base}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 503
            ready = True
            async with http.get(f"{base}/readyz") as response:
                assert response.status == 200
    finally:
        await server.stop()
