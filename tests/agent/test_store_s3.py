"""An S3 model store: the Job gets the credentials Secret as its environment, and the agent
verifies the update with the same Secret (the agent's own environment holds no credentials)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest

from fl_contract.models import StoreConfig
from fl_kube import resources as r
from fl_sandbox.sandbox import Sandbox
from tests.agent.harness import AgentCluster, reported, round_spec, start_agent

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


async def test_s3_update_verified_with_the_round_secret(
    sandbox: Sandbox,
    agent_cluster: AgentCluster,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    bucket = f"fl-{uuid.uuid4().hex[:16]}"
    boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="agent-test",
        aws_secret_access_key="agent-test-secret",
    ).create_bucket(Bucket=bucket)
    cluster, ns = agent_cluster.name, agent_cluster.namespace
    hub, spoke = agent_cluster.hub, agent_cluster.spoke
    secret_data = {"AWS_ACCESS_KEY_ID": "agent-test", "AWS_SECRET_ACCESS_KEY": "agent-test-secret"}
    await spoke.create(
        r.SECRET,
        {
            "metadata": {"name": "store-creds", "namespace": ns},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret_data.items()},
        },
        namespace=ns,
    )
    running = await start_agent(sandbox, cluster, datasets=agent_cluster.datasets)
    try:
        store = StoreConfig(
            uri=f"s3://{bucket}/fl",
            endpoint=moto_endpoint,
            region="us-east-1",
            credentials_secret="store-creds",
        )
        spec = round_spec(sandbox, cluster=cluster, uid="uid-s3")
        spec = spec.model_copy(
            update={"store": store, "update_uri": f"s3://{bucket}/fl/team-a/digits/u.safetensors"}
        )
        await agent_cluster.deliver(spec)
        condition, report = await reported(hub, cluster, "UpdateReady")
        assert report.update is not None
        assert report.update.uri == spec.update_uri
        assert "agent-test-secret" not in condition["message"]
    finally:
        await running.stop()
