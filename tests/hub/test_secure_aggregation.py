"""spec.privacy.secureAggregation end to end: the real hub manager, agents, Job runner and
training runtime in the sandbox, over HTTP. The hub must learn only the weighted sum."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fl_contract import keys, naming
from fl_contract.models import PublicKeyPair, RoundSpec, SecAggConfig
from fl_contract.secagg import decode_masked
from fl_contract.weights import WeightsFormatError, decode_weights
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox
from hub_manager.crd_spec import parse_spec
from hub_manager.secure_record import SecureRecord, SecureUris, round_part, secagg_params
from tests.hub import helpers as h
from tests.hub.test_store_access import _keys as _s3_keys
from tests.s3_server import CREDENTIALS, S3Server, s3_server

__all__ = ["s3_server"]

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REFERENCE_ACCURACY = 0.9556  # the plain job (tests/demo checks it), round 10
TOLERANCE = 0.005
SECURE = {"secureAggregation": {"enabled": True}}
DIGITS_CLIENT = {
    "command": ["fl-train"],
    "args": ["--example", "digits"],
    "dataset": "digits",
}


def _secure_sample(rounds: int) -> dict[str, Any]:
    """deploy/samples/digits-secure-aggregation.yaml: the reference job, made secure."""
    path = REPO / "deploy/samples/digits-secure-aggregation.yaml"
    body: dict[str, Any] = yaml.safe_load(path.read_text())
    plain = yaml.safe_load((REPO / "deploy/samples/digits-fedavg.yaml").read_text())
    assert {k: v for k, v in body["spec"].items() if k != "privacy"} == plain["spec"]
    body["metadata"]["namespace"] = "team-a"
    body["spec"]["server"]["rounds"] = rounds
    # Keep every round's masked inputs, to look at them afterwards.
    body["spec"]["server"]["storage"] = {"retention": {"keepUpdates": 1000}}
    return body


async def _apply(sb: Sandbox, body: dict[str, Any]) -> dict[str, Any]:
    api = h.hub(sb)
    if await api.get_or_none(r.NAMESPACE, "team-a") is None:
        await api.create(r.NAMESPACE, {"metadata": {"name": "team-a"}})
    return await api.create(r.FEDERATED_LEARNING, body, namespace="team-a")


def _store_files(sb: Sandbox, name: str) -> list[Path]:
    return sorted(p for p in (sb.model_store_dir / "team-a" / name).rglob("*") if p.is_file())


def _assert_no_clear_update(sb: Sandbox, name: str, *, participants: int) -> None:
    """No file in the store is a cluster's update in clear; the masked inputs look uniform."""
    files = _store_files(sb, name)
    updates = [p for p in files if "/updates/" in str(p)]
    assert len(updates) >= participants, files
    for path in files:
        if path.name in ("global.safetensors", "server-state.safetensors"):
            continue
        data = path.read_bytes()
        if path.parent.name == "records":  # a round's record: states and reasons, no weights
            assert set(json.loads(data)) >= {"round", "participants"}, path
            continue
        if path.suffix == ".json":  # encrypted share bundles, inboxes, revealed shares
            body = json.loads(data)
            assert set(body) == {"version", "items"}, path
            continue
        with pytest.raises(WeightsFormatError):
            decode_weights(data)  # a masked input is no weights file
        masked, layout = decode_masked(data)
        assert set(layout) == {"W", "b"}, layout
        values = np.frombuffer(masked, dtype="<u4").astype(np.float64) / 2**32
        # Uniform on [0, 1): mean 1/2, variance 1/12, each bit set half the time.
        assert abs(values.mean() - 0.5) < 0.05, path
        assert abs(values.var() - 1 / 12) < 0.02, path
        top_bits = (np.frombuffer(masked, dtype="<u4") >> 31).mean()
        assert abs(top_bits - 0.5) < 0.1, path


async def _assert_api_objects_hold_no_update(sb: Sandbox, uid: str) -> None:
    """What the hub can read (its ManifestWorks, add-on statuses, the job, Events) names
    store objects and public keys, never weights: no long list of numbers anywhere."""
    api = h.hub(sb)
    objects: list[Any] = []
    for res in (r.MANAGED_CLUSTER_ADDON, r.MANIFEST_WORK, r.EVENT, r.FEDERATED_LEARNING):
        objects += (await api.list(res)).items
    text = json.dumps(objects)
    assert "secureAggregation" in text or "secure_aggregation" in text
    numbers = [len(part) for part in text.split("[") if part[:1].isdigit() or part[:1] == "-"]
    assert max(numbers, default=0) < 200, "an API object holds a long numeric array"
    for report in _reports(objects, uid):
        update = report.get("update") or {}
        assert update.get("num_examples", 0) == 0, report  # the weight stays in the cluster
        assert not report.get("metrics"), report


def _reports(objects: list[Any], uid: str) -> list[dict[str, Any]]:
    found = []
    for obj in objects:
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if str(cond.get("type", "")).startswith(keys.ROUND_CONDITION_PREFIX):
                report = json.loads(cond.get("message") or "{}")
                if report.get("job_uid") == uid:
                    found.append(report)
    return found


async def _secrets_left(sb: Sandbox) -> list[str]:
    left = []
    for cluster in sb.cluster_names:
        api = sb.spoke_apis[cluster]
        namespace = sb.agent_namespace(cluster)
        items = (await api.list(r.SECRET, namespace=namespace)).items
        left += [
            s["metadata"]["name"]
            for s in items
            if (s["metadata"].get("labels") or {}).get(keys.LABEL_COMPONENT)
            == keys.COMPONENT_SECAGG
        ]
    return left


@pytest.mark.timeout(300)
async def test_secure_digits_job_matches_the_plain_accuracy_and_hides_updates(
    sandbox_factory: Any,
) -> None:
    async with sandbox_factory(clusters=3, hub_manager=True, agents=True) as sb:
        job = await _apply(sb, _secure_sample(rounds=10))
        status = await h.wait_status(
            sb, "digits-secagg", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=240
        )
        assert status["phase"] == "Completed", status
        history = status["history"]
        assert [e["round"] for e in history] == list(range(1, 11))
        assert all(e["accepted"] == 3 for e in history), history
        accuracy = history[-1]["accuracy"]
        print(f"\nsecure digits job, round 10 accuracy: {accuracy:.4f}")
        assert accuracy == pytest.approx(REFERENCE_ACCURACY, abs=TOLERANCE)
        assert status["secureAggregation"]["stage"] == "reveal"
        _assert_no_clear_update(sb, "digits-secagg", participants=3)
        await _assert_api_objects_hold_no_update(sb, job["metadata"]["uid"])

        async def cleaned() -> bool:
            return not await _secrets_left(sb)

        await wait_for(cleaned, timeout=30, message="the per-round Secrets are deleted")


@pytest.mark.timeout(120)
async def test_a_cluster_dropping_after_key_sharing_does_not_stop_the_round(
    sandbox_factory: Any,
) -> None:
    async with sandbox_factory(clusters=3, hub_manager=True, agents=True) as sb:
        # cluster3 advertises its keys and shares its secrets, then its training fails.
        (sb.dataset_dir("cluster3") / "train.npz").unlink()
        await h.create_job(
            sb,
            "secure",
            rounds=1,
            min_available=3,
            min_fit=2,
            timeout="60s",
            client=DIGITS_CLIENT,
            server={"evaluation": {"evaluator": "digits"}},
            privacy={"secureAggregation": {"enabled": True, "threshold": 2}},
        )
        status = await h.wait_status(
            sb, "secure", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=90
        )
        assert status["phase"] == "Completed", (
            status.get("message"),
            status.get("participants"),
            status.get("secureAggregation"),
        )
        (entry,) = status["history"]
        assert entry["accepted"] == 2, entry
        assert entry["accuracy"] > 0.5
        record = status["secureAggregation"]
        assert sorted(record["sharers"]) == ["cluster1", "cluster2", "cluster3"]
        assert record["survivors"] == ["cluster1", "cluster2"]
        (failure,) = entry["failures"]
        assert failure["cluster"] == "cluster3"


@pytest.mark.timeout(120)
async def test_fewer_clusters_than_the_threshold_fail_the_round_with_a_clear_message(
    sandbox_factory: Any,
) -> None:
    async with sandbox_factory(clusters=3, hub_manager=True, agents=True) as sb:
        for cluster in ("cluster2", "cluster3"):
            (sb.dataset_dir(cluster) / "train.npz").unlink()
        await h.create_job(
            sb,
            "secure",
            rounds=1,
            min_available=3,
            min_fit=1,
            timeout="60s",
            client=DIGITS_CLIENT,
            privacy={"secureAggregation": {"enabled": True, "threshold": 2}},
        )
        status = await h.wait_status(sb, "secure", h.phase_is("Failed"), timeout=90)
        assert "SecAggBelowThreshold" in status["message"], status["message"]
        assert "threshold" in status["message"]


@pytest.mark.timeout(150)
async def test_a_hub_restart_mid_protocol_finishes_the_round(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=3, hub_manager=False, agents=True) as sb:
        async with h.manager(sb):
            await h.create_job(
                sb,
                "secure",
                rounds=2,
                min_available=3,
                timeout="60s",
                client=DIGITS_CLIENT,
                server={"evaluation": {"evaluator": "digits"}},
                privacy=SECURE,
            )
            await h.wait_status(
                sb,
                "secure",
                lambda s: (
                    (s.get("secureAggregation") or {}).get("stage") in ("mask", "reveal")
                    and s.get("round") == 1
                ),
                timeout=60,
            )
        # The manager is gone mid-round; the agents carry on. A new one takes over.
        async with h.manager(sb):
            status = await h.wait_status(
                sb, "secure", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=90
            )
        assert status["phase"] == "Completed", status
        assert [(e["round"], e["attempt"], e["accepted"]) for e in status["history"]] == [
            (1, 1, 3),
            (2, 1, 3),
        ]
        assert not status.get("rejectedUpdates"), status


@pytest.mark.timeout(120)
async def test_an_agent_restart_keeps_its_round_secrets(sandbox_factory: Any) -> None:
    async with sandbox_factory(clusters=3, hub_manager=True, agents=True) as sb:
        await h.create_job(
            sb,
            "secure",
            rounds=1,
            min_available=3,
            timeout="60s",
            client=DIGITS_CLIENT,
            privacy=SECURE,
        )
        status = await h.wait_status(
            sb, "secure", lambda s: bool((s.get("secureAggregation") or {}).get("keys")), timeout=60
        )
        advertised = status["secureAggregation"]["keys"]["cluster1"]
        await sb.restart_agent("cluster1")
        status = await h.wait_status(
            sb, "secure", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=90
        )
        assert status["phase"] == "Completed", status.get("message")
        # The restarted agent went on with the keys it had advertised (new ones would not
        # match its shares, and its input would not count).
        assert status["history"][0]["accepted"] == 3, status["history"]
        assert status["secureAggregation"]["keys"]["cluster1"] == advertised


@pytest.mark.timeout(150)
async def test_secure_aggregation_turned_off_mid_round_never_counts_a_masked_input(
    sandbox_factory: Any,
) -> None:
    async with sandbox_factory(clusters=3, hub_manager=True, agents=True) as sb:
        await h.create_job(
            sb,
            "switch",
            rounds=1,
            min_available=3,
            retries=1,
            timeout="60s",
            client=DIGITS_CLIENT,
            server={"evaluation": {"evaluator": "digits"}},
            privacy=SECURE,
        )
        await h.wait_status(
            sb,
            "switch",
            lambda s: (s.get("secureAggregation") or {}).get("stage") == "mask",
            timeout=60,
        )
        await h.hub(sb).patch(
            r.FEDERATED_LEARNING,
            "switch",
            {"spec": {"privacy": {"secureAggregation": {"enabled": False}}}},
            namespace="team-a",
        )
        status = await h.wait_status(
            sb, "switch", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=90
        )
        assert status["phase"] == "Completed", status.get("message")
        (entry,) = status["history"]
        assert entry["numExamples"] > 0  # plain updates, counted with their examples
        reasons = {u["reason"] for u in status.get("rejectedUpdates") or []}
        assert reasons <= {"MaskedInput"}, status["rejectedUpdates"]
        model = status["model"]
        weights = decode_weights(await h.store_bytes(sb, model["uri"], model["sha256"]))
        assert set(weights) == {"W", "b"}


@pytest.mark.timeout(60)
async def test_refused_combinations_name_the_fields(sandbox_factory: Any) -> None:
    cases: dict[str, tuple[dict[str, Any], dict[str, Any], list[str]]] = {
        "krum": (
            {"strategy": {"name": "Krum"}},
            {"enabled": True},
            ["spec.privacy.secureAggregation.enabled", "spec.server.strategy.name"],
        ),
        "median": (
            {"strategy": {"name": "FedMedian"}},
            {"enabled": True},
            ["spec.privacy.secureAggregation.enabled", "FedMedian"],
        ),
        "trimmed": (
            {"strategy": {"name": "FedTrimmedAvg"}},
            {"enabled": True},
            ["spec.privacy.secureAggregation.enabled", "FedTrimmedAvg"],
        ),
        "single": (
            {"minAvailableClients": 1},
            {"enabled": True},
            ["spec.server.minAvailableClients", "at least 2 clusters"],
        ),
        "threshold": (
            {},
            {"enabled": True, "threshold": 4},
            ["spec.privacy.secureAggregation.threshold", "spec.server.minAvailableClients"],
        ),
        "shares": (
            {},
            {"enabled": True, "threshold": 3, "numShares": 2},
            ["spec.privacy.secureAggregation.numShares", "threshold"],
        ),
    }
    async with sandbox_factory(clusters=2, hub_manager=True, agents=False) as sb:
        for name, (server, secure, _) in cases.items():
            await h.create_job(
                sb, name, min_available=3, server=server, privacy={"secureAggregation": secure}
            )
        for name, (_, _, fields) in cases.items():
            status = await h.wait_status(sb, name, h.phase_is("Failed"))
            spec_valid = h.condition(status, "SpecValid")
            assert spec_valid is not None
            assert spec_valid["status"] == "False", spec_valid
            for field in fields:
                assert field in spec_valid["message"], (name, spec_valid["message"])
        # Secure FedAdam is fine.
        await h.create_job(
            sb,
            "fine",
            min_available=2,
            server={"strategy": {"name": "FedAdam"}},
            privacy={"secureAggregation": {"enabled": True}},
        )
        status = await h.wait_status(sb, "fine", lambda s: h.condition(s, "SpecValid") is not None)
        assert h.condition(status, "SpecValid")["status"] == "True"  # type: ignore[index]


@pytest.mark.timeout(120)
async def test_secure_job_on_s3_signs_each_cluster_only_its_own_objects(
    sandbox_factory: Any, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():  # the hub manager's environment
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    storage = {
        "type": "S3Bucket",
        "s3": {"bucketName": bucket, "prefix": "fl", "endpoint": s3_server.endpoint},
    }
    async with sandbox_factory(clusters=3, hub_manager=True, agents=True) as sb:
        job = await h.create_job(
            sb,
            "secure-s3",
            rounds=1,
            min_available=3,
            timeout="60s",
            client=DIGITS_CLIENT,
            server={"storage": storage, "evaluation": {"evaluator": "digits"}},
            privacy=SECURE,
        )
        uid = job["metadata"]["uid"]
        seen: dict[str, set[tuple[str, str]]] = {c: set() for c in sb.cluster_names}

        async def reveal_stage_grants() -> bool:
            for cluster in sb.cluster_names:
                work = await h.hub(sb).get_or_none(
                    r.MANIFEST_WORK, naming.manifest_work_name(uid), namespace=cluster
                )
                if work is None:
                    return False
                spec = RoundSpec.from_json(
                    work["spec"]["workload"]["manifests"][0]["data"][keys.ROUND_SPEC_KEY]
                )
                assert spec.access is not None
                assert spec.secure_aggregation is not None
                seen[cluster] |= {(g.uri, g.method) for g in spec.access.grants}
            return all(any("/inbox/" in uri for uri, _ in grants) for grants in seen.values())

        await wait_for(reveal_stage_grants, timeout=60, message="the inboxes are granted")
        status = await h.wait_status(
            sb, "secure-s3", lambda s: s.get("phase") in ("Completed", "Failed"), timeout=90
        )
        assert status["phase"] == "Completed", status.get("message")
        assert status["history"][0]["accepted"] == 3
        for cluster, grants in seen.items():
            prefix = "/team-a/secure-s3/rounds/1/"
            own = {
                (uri, method)
                for uri, method in grants
                if uri.endswith(f"/{cluster}.json") or uri.endswith(f"/{cluster}.safetensors")
            }
            assert {(u.split(prefix)[1], m) for u, m in own} == {
                (f"secagg/a1/shares/{cluster}.json", "PUT"),
                (f"secagg/a1/revealed/{cluster}.json", "PUT"),
                (f"secagg/a1/inbox/{cluster}.json", "GET"),
                (f"updates/{cluster}.safetensors", "PUT"),
                (f"updates/{cluster}.safetensors", "GET"),
            }
            assert grants == own, grants - own  # no global model in round 1, nothing else
        # Default retention: the round's secure-aggregation objects go with its updates.
        assert _s3_keys(s3_server, bucket) == [
            "fl/team-a/secure-s3/records/round-1.json",
            "fl/team-a/secure-s3/rounds/1/global.safetensors",
        ]


@pytest.mark.parametrize(
    ("participants", "secure", "expected"),
    [
        (2, {}, (2, 1)),  # the smallest secure round: one neighbour each, none may drop
        (3, {}, (2, 2)),  # every other cluster, a majority of 3 holders: 1 may drop
        (5, {}, (3, 4)),
        (100, {}, (8, 14)),  # SecAgg+: 2 ceil(log2 n) neighbours
        (3, {"threshold": 3}, (3, 2)),
        (100, {"threshold": 20}, (20, 19)),  # numShares grows to hold threshold shares
        (4, {"numShares": 10}, (3, 3)),  # never more than the other participants
    ],
)
def test_secagg_parameters_of_a_round(
    participants: int, secure: dict[str, Any], expected: tuple[int, int]
) -> None:
    spec = parse_spec(
        {
            "server": {"minAvailableClients": participants},
            "client": {"image": "trainer"},
            "privacy": {"secureAggregation": {"enabled": True, **secure}},
        }
    )
    params = secagg_params(spec, participants, max_weight=400.0)
    assert (params.threshold, params.num_shares) == expected
    assert params.max_weight == 400.0


def test_a_dropped_cluster_keeps_the_stage_it_dropped_in() -> None:
    pair = PublicKeyPair(c_pk="A" * 43 + "=", s_pk="B" * 43 + "=")
    record = SecureRecord(
        round=1,
        attempt=1,
        stage="reveal",
        params=SecAggConfig(
            threshold=2, num_shares=3, clipping_range=8, quantization_range=2**22, modulus=2**32
        ),
        keys={c: pair for c in ("c1", "c2", "c3")},  # c4 advertised no keys
        sharers=["c1", "c2", "c3"],
        inboxes={c: "0" * 64 for c in ("c1", "c2", "c3")},
        survivors=["c1", "c2"],
    )
    participants = ("c1", "c2", "c3", "c4")

    def part(cluster: str) -> Any:
        uris = SecureUris(shares="s", inbox="i", revealed="r", update="u")
        return round_part(
            record, job_uid="uid", cluster=cluster, uris=uris, participants=participants
        )

    assert [part(c).stage for c in participants] == ["reveal", "reveal", "mask", "keys"]
    revealing = part("c1")
    assert revealing.survivors == ["c1", "c2"]
    assert revealing.dropped == ["c3"]
    assert set(revealing.neighbours) == {"c2", "c3"}  # the sharers among its neighbours
    assert part("c4").neighbours == {}
