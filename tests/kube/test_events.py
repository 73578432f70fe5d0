"""EventRecorder against the API server: repeats are counted on one Event, and a burst
per object is the most a fault can cost."""

from __future__ import annotations

from typing import Any

from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.events import EventRecorder


async def _subject(api: KubeApi, name: str) -> dict[str, Any]:
    return await api.create(
        r.CONFIGMAP, {"metadata": {"name": name}, "data": {}}, namespace="default"
    )


async def test_a_repeated_event_is_counted_not_repeated(api: KubeApi) -> None:
    obj = await _subject(api, "counted")
    recorder = EventRecorder(api, component="test-controller")
    for _ in range(3):
        await recorder.record(obj, type_="Warning", reason="StoreUnavailable", message="EISDIR")
    await recorder.record(obj, type_="Normal", reason="RoundStarted", message="round 1")
    events = (await api.list(r.EVENT, namespace="default")).items
    by_reason = {e["reason"]: e for e in events}
    assert set(by_reason) == {"StoreUnavailable", "RoundStarted"}
    warning = by_reason["StoreUnavailable"]
    assert warning["count"] == 3
    assert warning["type"] == "Warning"
    assert warning["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert warning["involvedObject"]["kind"] == "ConfigMap"
    assert warning["source"] == {"component": "test-controller"}


async def test_a_burst_per_object_then_one_per_interval(api: KubeApi) -> None:
    noisy, quiet = await _subject(api, "noisy"), await _subject(api, "quiet")
    now = [0.0]
    recorder = EventRecorder(api, component="c", burst=5, refill_seconds=60, clock=lambda: now[0])
    for i in range(20):
        await recorder.record(noisy, type_="Warning", reason="Flapping", message=f"#{i}")
    await recorder.record(quiet, type_="Normal", reason="Fine", message="unaffected")
    now[0] = 60.0
    await recorder.record(noisy, type_="Warning", reason="Flapping", message="after a minute")
    events = (await api.list(r.EVENT, namespace="default")).items
    noisy_events = [e for e in events if e["involvedObject"]["name"] == "noisy"]
    assert len(noisy_events) == 6
    assert recorder.dropped == 15
    assert any(e["involvedObject"]["name"] == "quiet" for e in events)
