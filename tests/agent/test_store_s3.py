"""An S3 model store as a cluster sees it: no credentials anywhere on the cluster (no
Secret, none in the agent's or the Job's environment), only the presigned URLs that the
hub put in this cluster's round spec. The Job writes its update through the PUT URL, the
agent reads it back through the GET URL, and neither can do anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fl_contract import naming
from fl_contract.models import RoundSpec, StoreConfig
from fl_core.store import ModelStore, open_store
from fl_kube import resources as r
from fl_sandbox.sandbox import Sandbox
from hub_manager.store_access import AccessGranter
from tests.agent.harness import AgentCluster, reported, round_spec, start_agent
from tests.s3_server import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    PresignedAuth,
    S3Server,
    s3_clock,
    s3_server,
)

__all__ = ["s3_clock", "s3_server"]
ENDPOINTS: dict[str, str] = {}  # store URI -> the server's endpoint


@pytest.fixture
def hub_store(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    """The hub's view of a fresh bucket: it alone holds credentials (passed explicitly;
    this process, which also runs the agent, has none in its environment)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config = StoreConfig(
        uri=f"s3://{s3_server.new_bucket()}/fl", endpoint=s3_server.endpoint, region=REGION
    )
    ENDPOINTS[config.uri] = s3_server.endpoint
    return open_store(
        config, s3_options={"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    )


def _s3_spec(sandbox: Sandbox, store: ModelStore, *, cluster: str, uid: str) -> RoundSpec:
    spec = round_spec(sandbox, cluster=cluster, uid=uid)
    key = naming.update_key(namespace="team-a", job="digits", round_number=1, cluster=cluster)
    config = StoreConfig(uri=store.base_uri, endpoint=ENDPOINTS[store.base_uri], region=REGION)
    return spec.model_copy(update={"store": config, "update_uri": store.uri_for(key)})


async def _granted(spec: RoundSpec, store: ModelStore) -> RoundSpec:
    return await AccessGranter().grant(spec, store=store, current_work=None)


async def test_s3_update_written_and_verified_with_presigned_urls_only(
    sandbox: Sandbox, agent_cluster: AgentCluster, hub_store: ModelStore
) -> None:
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    running = await start_agent(sandbox, cluster, datasets=agent_cluster.datasets)
    try:
        spec = await _granted(
            _s3_spec(sandbox, hub_store, cluster=cluster, uid="uid-s3"), hub_store
        )
        assert spec.access is not None
        await agent_cluster.deliver(spec)
        condition, report = await reported(agent_cluster.hub, cluster, "UpdateReady")
        assert report.update is not None
        assert report.update.uri == spec.update_uri
        data = await hub_store.get(report.update.uri, sha256=report.update.sha256)
        assert data  # where the hub reads it, with the hub's credentials
        assert "X-Amz" not in condition["message"]
        assert "http" not in condition["message"]  # the report names the s3:// URI only
        secrets = (await agent_cluster.spoke.list(r.SECRET, namespace=ns)).items
        assert [s["metadata"]["name"] for s in secrets] == ["federated-learning-hub-kubeconfig"]
    finally:
        await running.stop()


async def test_a_grant_for_another_key_writes_nothing_there(
    sandbox: Sandbox, agent_cluster: AgentCluster, hub_store: ModelStore
) -> None:
    """Grants signed for cluster2's key do not let cluster1's Job write its own key, and
    the failure names the object, not the URL."""
    cluster = agent_cluster.name
    running = await start_agent(sandbox, cluster, datasets=agent_cluster.datasets)
    try:
        own = _s3_spec(sandbox, hub_store, cluster=cluster, uid="uid-s3-other")
        other = _s3_spec(sandbox, hub_store, cluster="cluster2", uid="uid-s3-other")
        spec = own.model_copy(update={"access": (await _granted(other, hub_store)).access})
        await agent_cluster.deliver(spec)
        condition, _report = await reported(agent_cluster.hub, cluster, "TrainingFailed")
        assert "grants no PUT access" in condition["message"]
        assert spec.update_uri in condition["message"]
        assert "X-Amz" not in condition["message"]
        assert not await hub_store.exists(spec.update_uri)
    finally:
        await running.stop()


async def test_expired_urls_are_refused(
    sandbox: Sandbox,
    agent_cluster: AgentCluster,
    hub_store: ModelStore,
    s3_clock: PresignedAuth,
) -> None:
    cluster = agent_cluster.name
    running = await start_agent(sandbox, cluster, datasets=agent_cluster.datasets)
    try:
        spec = await _granted(
            _s3_spec(sandbox, hub_store, cluster=cluster, uid="uid-s3-late"), hub_store
        )
        assert spec.access is not None
        s3_clock.skew = spec.access.expires - datetime.now(UTC) + timedelta(minutes=1)
        await agent_cluster.deliver(spec)
        condition, _ = await reported(agent_cluster.hub, cluster, "TrainingFailed")
        assert "Request has expired" in condition["message"]
        assert "X-Amz" not in condition["message"]
        assert not await hub_store.exists(spec.update_uri)
    finally:
        await running.stop()
