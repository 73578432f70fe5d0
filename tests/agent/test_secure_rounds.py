"""A secure round's stages on one real agent, the test playing the hub and two other
clusters (with the secure-aggregation library, as they would): the per-round Secret, the
shares, the masked round's report, the reveal, and the refusal to reveal for other sets."""

from __future__ import annotations

import base64
import json
from typing import Any

from fl_contract import keys, naming
from fl_contract.models import ModelRef, RoundReport, RoundSpec, SecAggConfig, SecAggRound
from fl_contract.secagg import decode_bundle, encode_bundle
from fl_core.privacy import secagg
from fl_core.privacy.secagg_round import context, decode_keys, encode_keys, params_of
from fl_core.store import open_store
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from tests.agent.harness import AgentCluster, round_report, round_spec, start_agent

UID = "uid-secure"
OTHERS = ("cluster2", "cluster3")
PARAMS = SecAggConfig(
    threshold=2,
    num_shares=2,
    clipping_range=8.0,
    quantization_range=2**22,
    modulus=2**32,
    max_weight=5,
)


class Hub:
    """What the hub does for cluster1 in one round attempt, by hand."""

    def __init__(self, sb: Sandbox, ac: AgentCluster, attempt: int) -> None:
        self.sb, self.ac, self.attempt = sb, ac, attempt
        self.base = round_spec(sb, cluster=ac.name, uid=UID, attempt=attempt)
        self.store = open_store(self.base.store)
        self.others = {c: secagg.ClientSecrets.generate() for c in OTHERS}

    def uri(self, kind: naming.SecAggObject) -> str:
        key = naming.secagg_key(
            namespace="team-a",
            job="digits",
            round_number=1,
            cluster=self.ac.name,
            attempt=self.attempt,
            kind=kind,
        )
        return f"{self.base.store.uri}/{key}"

    async def send(self, **part: Any) -> RoundSpec:
        secure = SecAggRound(
            params=PARAMS, shares_uri=self.uri("shares"), revealed_uri=self.uri("revealed"), **part
        )
        spec = self.base.model_copy(update={"secure_aggregation": secure})
        name = naming.round_spec_configmap_name(UID)
        if await self.ac.spoke.get_or_none(r.CONFIGMAP, name, namespace=self.ac.namespace):
            body = {"data": {keys.ROUND_SPEC_KEY: spec.to_json()}}
            await self.ac.spoke.patch(r.CONFIGMAP, name, body, namespace=self.ac.namespace)
        else:
            await self.ac.deliver(spec)
        return spec

    async def report(self, check: Any) -> RoundReport:
        async def probe() -> RoundReport | None:
            found = await round_report(self.ac.hub, self.ac.name)
            if found is None or found[1].attempt != self.attempt:
                return None
            return found[1] if check(found[1]) else None

        result: RoundReport = await wait_for(probe, timeout=30, message="the agent's report")
        return result

    async def to_reveal(self) -> tuple[RoundReport, ModelRef]:
        """Keys, shares and mask stages; returns the masked round's report and the inbox
        the hub would write for cluster1."""
        await self.send(stage="keys")
        keyed = await self.report(lambda rep: rep.secure_aggregation is not None)
        assert keyed.secure_aggregation is not None
        mine = keyed.secure_aggregation.public_keys
        neighbours = {c: encode_keys(s.public_keys()) for c, s in self.others.items()}
        await self.send(stage="shares", neighbours=neighbours)
        shared = await self.report(
            lambda rep: (
                rep.secure_aggregation is not None and rep.secure_aggregation.stage == "shares"
            )
        )
        assert shared.secure_aggregation is not None
        assert shared.secure_aggregation.shares is not None
        ref = shared.secure_aggregation.shares
        assert ref.uri == self.uri("shares")
        bundles = decode_bundle(await self.store.get(ref.uri, sha256=ref.sha256))
        assert set(bundles) == {self.ac.name, *OTHERS}  # one share kept, one per neighbour
        # The other clusters' shares for cluster1, sorted into its inbox as the hub does.
        ctx = context(UID, 1, self.attempt)
        keyring = {self.ac.name: mine, **neighbours}
        inbox = {self.ac.name: bundles[self.ac.name]}
        for cluster, secrets in self.others.items():
            theirs = {c: decode_keys(k) for c, k in keyring.items() if c != cluster}
            inbox[cluster] = secagg.share_keys(cluster, secrets, params_of(PARAMS), theirs, ctx)[
                self.ac.name
            ]
        written = await self.store.put_uri(self.uri("inbox"), encode_bundle(inbox))
        inbox_ref = ModelRef(uri=written.uri, sha256=written.sha256)
        self.neighbours = neighbours
        await self.send(stage="mask", neighbours=neighbours, inbox=inbox_ref)
        masked = await self.report(lambda rep: rep.state == "UpdateReady")
        return masked, inbox_ref


async def _secrets(ac: AgentCluster) -> list[str]:
    names = []
    for attempt in (1, 2):
        for name in (
            naming.secagg_secret_name(UID, 1, attempt),
            naming.secagg_reveal_record_name(UID, 1, attempt),
        ):
            if await ac.spoke.get_or_none(r.SECRET, name, namespace=ac.namespace):
                names.append(name)
    return names


async def test_the_agent_plays_its_stages_and_reveals_only_once(
    sandbox: Sandbox, agent_cluster: AgentCluster
) -> None:
    ac = agent_cluster
    running = await start_agent(sandbox, ac.name, datasets=ac.datasets)
    try:
        hub = Hub(sandbox, ac, attempt=1)
        masked, inbox = await hub.to_reveal()
        # The Secret: named for the round, owned by the round spec, mounted into the Job.
        secret = await ac.spoke.get(
            r.SECRET, naming.secagg_secret_name(UID, 1), namespace=ac.namespace
        )
        assert secret["metadata"]["ownerReferences"][0]["kind"] == "ConfigMap"
        assert set(secret["data"]) == {keys.SECAGG_SECRETS_KEY}
        job = await ac.spoke.get(
            r.JOB, naming.training_job_name(UID, 1, secure=True), namespace=ac.namespace
        )
        volumes = job["spec"]["template"]["spec"]["volumes"]
        assert {"secretName": secret["metadata"]["name"]}.items() <= next(
            v["secret"] for v in volumes if "secret" in v
        ).items()
        # The masked round's report: the input's reference, no weight, no metrics.
        assert masked.update is not None
        assert masked.update.num_examples == 0
        assert masked.metrics == {}
        assert "w" not in json.dumps(masked.model_dump(mode="json")["update"])

        await hub.send(
            stage="reveal",
            neighbours=hub.neighbours,
            inbox=inbox,
            survivors=["cluster1", "cluster2"],
            dropped=["cluster3"],
        )
        revealed = await hub.report(
            lambda rep: (
                rep.secure_aggregation is not None and rep.secure_aggregation.stage == "reveal"
            )
        )
        assert revealed.state == "UpdateReady"
        assert revealed.update == masked.update
        assert revealed.secure_aggregation is not None
        ref = revealed.secure_aggregation.revealed
        assert ref is not None
        shares = decode_bundle(await hub.store.get(ref.uri, sha256=ref.sha256))
        assert set(shares) == {"cluster1", "cluster2", "cluster3"}
        # Revealed and reported: the round's secrets are gone.
        await wait_for(lambda: _no(_secrets(ac)), timeout=20, message="secrets deleted")

        # Attempt 2: an earlier reveal of this attempt was agreed for other sets (a crash
        # after it was recorded, or a hub that lies): the agent refuses to reveal again.
        hub = Hub(sandbox, ac, attempt=2)
        masked, inbox = await hub.to_reveal()
        record = {"survivors": ["cluster1", "cluster3"], "dropped": ["cluster2"]}
        await ac.spoke.create(
            r.SECRET,
            {
                "metadata": {
                    "name": naming.secagg_reveal_record_name(UID, 1, 2),
                    "namespace": ac.namespace,
                },
                "data": {
                    keys.SECAGG_REVEALED_KEY: base64.b64encode(
                        json.dumps(record, sort_keys=True).encode()
                    ).decode()
                },
            },
            namespace=ac.namespace,
        )
        await hub.send(
            stage="reveal",
            neighbours=hub.neighbours,
            inbox=inbox,
            survivors=["cluster1", "cluster2"],
            dropped=["cluster3"],
        )
        refused = await hub.report(lambda rep: rep.state == "TrainingFailed")
        assert refused.reason == "SecAggRevealRefused", refused
        assert not await hub.store.exists(hub.uri("revealed"))
        await wait_for(lambda: _no(_secrets(ac)), timeout=20, message="secrets deleted")
    finally:
        await running.stop()


async def _no(coro: Any) -> bool:
    return not await coro
