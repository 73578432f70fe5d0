"""The work agent against real API servers: apply, update in place, feedback, removal of a
manifest, deletion of the work (and only what it applied), server-side apply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fl_kube import KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.ocm.conditions import find
from fl_sandbox.ocm.workagent import FINALIZER
from fl_sandbox.sandbox import Sandbox

CLUSTER = "cluster1"


@pytest.fixture
async def apis(sandbox: Sandbox) -> AsyncIterator[tuple[KubeApi, KubeApi]]:
    async with (
        await KubeApi.from_kubeconfig(sandbox.hub_kubeconfig) as hub,
        await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig(CLUSTER)) as spoke,
    ):
        yield hub, spoke


def configmap(name: str, data: dict[str, str], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "demo"}},
        "data": data,
    }


def work(name: str, manifests: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": CLUSTER},
        "spec": {"workload": {"manifests": manifests}, **spec},
    }


async def applied_records(spoke: KubeApi, work_name: str) -> list[dict[str, Any]]:
    """The AppliedManifestWorks recording one work (the add-on's own work has one too)."""
    listed = await spoke.list(r.APPLIED_MANIFEST_WORK)
    return [a for a in listed.items if a["spec"]["manifestWorkName"] == work_name]


async def spoke_data(spoke: KubeApi, name: str) -> dict[str, str] | None:
    obj = await spoke.get_or_none(r.CONFIGMAP, name, namespace="default")
    return None if obj is None else dict(obj.get("data") or {})


async def work_condition(hub: KubeApi, name: str, type_: str) -> tuple[str, str] | None:
    obj = await hub.get(r.MANIFEST_WORK, name, namespace=CLUSTER)
    condition = find((obj.get("status") or {}).get("conditions"), type_)
    if condition is None or condition.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return (condition["status"], condition["reason"])


async def test_configmap_is_applied_updated_and_removed(apis: tuple[KubeApi, KubeApi]) -> None:
    hub, spoke = apis
    await hub.create(r.MANIFEST_WORK, work("w1", [configmap("cm-a", {"k": "1"})]))

    async def applied() -> bool:
        return await work_condition(hub, "w1", "Applied") == ("True", "AppliedManifestWorkComplete")

    await wait_for(applied, timeout=10, message="work applied")
    assert await spoke_data(spoke, "cm-a") == {"k": "1"}
    obj = await hub.get(r.MANIFEST_WORK, "w1", namespace=CLUSTER)
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert await work_condition(hub, "w1", "Available") == ("True", "ResourcesAvailable")
    assert await work_condition(hub, "w1", "Degraded") == ("False", "ResourcesNotDegraded")
    [manifest] = obj["status"]["resourceStatus"]["manifests"]
    assert manifest["resourceMeta"] == {
        "ordinal": 0,
        "group": "",
        "version": "v1",
        "kind": "ConfigMap",
        "resource": "configmaps",
        "name": "cm-a",
        "namespace": "default",
    }
    assert find(manifest["conditions"], "Applied")["reason"] == "AppliedManifestComplete"  # type: ignore[index]
    uid = (await spoke.get(r.CONFIGMAP, "cm-a", namespace="default"))["metadata"]["uid"]

    # Update in place: same object (uid), new data.
    await hub.patch(
        r.MANIFEST_WORK,
        "w1",
        {
            "spec": {
                "workload": {"manifests": [configmap("cm-a", {"k": "2"}), configmap("cm-b", {})]}
            }
        },
        namespace=CLUSTER,
    )

    async def updated() -> bool:
        return (
            await spoke_data(spoke, "cm-a") == {"k": "2"} and await spoke_data(spoke, "cm-b") == {}
        )

    await wait_for(updated, timeout=10, message="manifests updated")
    assert (await spoke.get(r.CONFIGMAP, "cm-a", namespace="default"))["metadata"]["uid"] == uid

    # A manifest removed from the work is deleted from the spoke; the other stays.
    await hub.patch(
        r.MANIFEST_WORK,
        "w1",
        {"spec": {"workload": {"manifests": [configmap("cm-b", {})]}}},
        namespace=CLUSTER,
    )

    async def cm_a_gone() -> bool:
        return await spoke_data(spoke, "cm-a") is None

    await wait_for(cm_a_gone, timeout=10, message="removed manifest deleted")
    assert await spoke_data(spoke, "cm-b") == {}

    # Deleting the work deletes what it applied, then releases the finalizer.
    await hub.delete(r.MANIFEST_WORK, "w1", namespace=CLUSTER)

    async def work_gone() -> bool:
        return await hub.get_or_none(r.MANIFEST_WORK, "w1", namespace=CLUSTER) is None

    await wait_for(work_gone, timeout=10, message="work deleted")
    assert await spoke_data(spoke, "cm-b") is None
    assert await applied_records(spoke, "w1") == []


async def test_deletion_leaves_objects_the_work_did_not_create(
    sandbox: Sandbox, apis: tuple[KubeApi, KubeApi]
) -> None:
    hub, spoke = apis
    await spoke.create(r.CONFIGMAP, configmap("bystander", {"v": "mine"}), namespace="default")
    await hub.create(r.MANIFEST_WORK, work("w2", [configmap("owned", {"v": "work"})]))

    async def applied() -> bool:
        return await spoke_data(spoke, "owned") == {"v": "work"}

    await wait_for(applied, timeout=10, message="applied")

    async def recorded() -> list[dict[str, Any]] | None:
        records = await applied_records(spoke, "w2")
        return records if records and (records[0].get("status") or {}) else None

    [record] = await wait_for(recorded, timeout=10, message="applied resources recorded")
    assert record["spec"]["manifestWorkName"] == "w2"
    owned_uid = (await spoke.get(r.CONFIGMAP, "owned", namespace="default"))["metadata"]["uid"]
    assert [(a["name"], a["uid"]) for a in record["status"]["appliedResources"]] == [
        ("owned", owned_uid)
    ]
    await hub.delete(r.MANIFEST_WORK, "w2", namespace=CLUSTER)

    async def work_gone() -> bool:
        return await hub.get_or_none(r.MANIFEST_WORK, "w2", namespace=CLUSTER) is None

    await wait_for(work_gone, timeout=10, message="work deleted")
    assert await spoke_data(spoke, "owned") is None
    assert await spoke_data(spoke, "bystander") == {"v": "mine"}
    # Deletes only on its own cluster.
    async with await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig("cluster2")) as other:
        assert await applied_records(other, "w2") == []


async def test_orphan_delete_option_keeps_objects(apis: tuple[KubeApi, KubeApi]) -> None:
    hub, spoke = apis
    await hub.create(
        r.MANIFEST_WORK,
        work("w3", [configmap("kept", {"a": "b"})], deleteOption={"propagationPolicy": "Orphan"}),
    )

    async def applied() -> bool:
        return await spoke_data(spoke, "kept") == {"a": "b"}

    await wait_for(applied, timeout=10, message="applied")
    await hub.delete(r.MANIFEST_WORK, "w3", namespace=CLUSTER)

    async def work_gone() -> bool:
        return await hub.get_or_none(r.MANIFEST_WORK, "w3", namespace=CLUSTER) is None

    await wait_for(work_gone, timeout=10, message="work deleted")
    assert await spoke_data(spoke, "kept") == {"a": "b"}


async def test_feedback_and_server_side_apply(apis: tuple[KubeApi, KubeApi]) -> None:
    hub, spoke = apis
    identifier = {"group": "", "resource": "configmaps", "name": "fb", "namespace": "default"}
    await hub.create(
        r.MANIFEST_WORK,
        work(
            "w4",
            [configmap("fb", {"phase": "one", "count": "3"})],
            manifestConfigs=[
                {
                    "resourceIdentifier": identifier,
                    "updateStrategy": {
                        "type": "ServerSideApply",
                        "serverSideApply": {"force": True},
                    },
                    "feedbackRules": [
                        {
                            "type": "JSONPaths",
                            "jsonPaths": [
                                {"name": "phase", "path": ".data.phase"},
                                {"name": "app", "path": ".metadata.labels.app"},
                                {"name": "extra", "path": ".data.extra"},
                            ],
                        }
                    ],
                }
            ],
        ),
    )

    async def feedback() -> dict[str, Any] | None:
        obj = await hub.get(r.MANIFEST_WORK, "w4", namespace=CLUSTER)
        manifests = ((obj.get("status") or {}).get("resourceStatus") or {}).get("manifests") or []
        if not manifests:
            return None
        values = (manifests[0].get("statusFeedback") or {}).get("values") or []
        return {v["name"]: v["fieldValue"] for v in values} or None

    values = await wait_for(feedback, timeout=10, message="feedback values")
    assert values == {
        "phase": {"type": "String", "string": "one"},
        "app": {"type": "String", "string": "demo"},
    }
    managed = (await spoke.get(r.CONFIGMAP, "fb", namespace="default"))["metadata"].get(
        "managedFields"
    ) or []
    assert any(entry.get("manager") == "work-agent" for entry in managed)
    # A field set on the spoke by someone else shows up in the feedback (polled) without
    # touching the work; a field the work owns is put back (drift is corrected).
    await spoke.patch(
        r.CONFIGMAP, "fb", {"data": {"phase": "drifted", "extra": "x"}}, namespace="default"
    )

    async def extra_seen() -> bool:
        found = await feedback()
        return bool(found) and found.get("extra") == {"type": "String", "string": "x"}  # type: ignore[union-attr]

    await wait_for(extra_seen, timeout=10, message="feedback follows the spoke")

    async def phase_restored() -> bool:
        return (await spoke_data(spoke, "fb") or {}).get("phase") == "one"

    await wait_for(phase_restored, timeout=10, message="owned field restored")


async def test_unknown_kind_is_reported_not_retried_forever(apis: tuple[KubeApi, KubeApi]) -> None:
    hub, spoke = apis
    bogus = {"apiVersion": "example.io/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    await hub.create(r.MANIFEST_WORK, work("w5", [bogus, configmap("fine", {})]))

    async def failed() -> bool:
        return await work_condition(hub, "w5", "Applied") == ("False", "AppliedManifestWorkFailed")

    await wait_for(failed, timeout=10, message="Applied False")
    obj = await hub.get(r.MANIFEST_WORK, "w5", namespace=CLUSTER)
    manifests = obj["status"]["resourceStatus"]["manifests"]
    first = find(manifests[0]["conditions"], "Applied")
    assert first is not None
    assert "Gadget" in first["message"]
    second = find(manifests[1]["conditions"], "Applied")
    assert second is not None
    assert second["status"] == "True"  # the valid manifest is applied all the same
    assert await spoke_data(spoke, "fine") == {}


async def test_manifests_needing_a_later_namespace_are_retried(
    apis: tuple[KubeApi, KubeApi],
) -> None:
    hub, spoke = apis
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "later"}}
    await hub.create(
        r.MANIFEST_WORK, work("w7", [configmap("in-later", {"a": "1"}, "later"), namespace])
    )

    async def applied() -> bool:
        return await work_condition(hub, "w7", "Applied") == ("True", "AppliedManifestWorkComplete")

    await wait_for(applied, timeout=10, message="applied once the namespace exists")
    found = await spoke.get(r.CONFIGMAP, "in-later", namespace="later")
    assert found["data"] == {"a": "1"}


async def test_unreachable_cluster_applies_nothing_until_back(
    sandbox: Sandbox, apis: tuple[KubeApi, KubeApi]
) -> None:
    hub, spoke = apis
    sandbox.set_cluster_reachable(CLUSTER, False)
    await hub.create(r.MANIFEST_WORK, work("w8", [configmap("later-cm", {"x": "1"})]))
    # The same hub sees cluster2's work agent apply a work meanwhile: events are flowing.
    await hub.create(
        r.MANIFEST_WORK,
        {
            "metadata": {"name": "w8", "namespace": "cluster2"},
            "spec": {"workload": {"manifests": [configmap("other-cm", {"x": "1"})]}},
        },
    )
    async with await KubeApi.from_kubeconfig(sandbox.cluster_kubeconfig("cluster2")) as other:

        async def other_applied() -> bool:
            return await other.get_or_none(r.CONFIGMAP, "other-cm", namespace="default") is not None

        await wait_for(other_applied, timeout=10, message="reachable cluster applies")
    assert await spoke_data(spoke, "later-cm") is None
    assert (await hub.get(r.MANIFEST_WORK, "w8", namespace=CLUSTER)).get("status") in (None, {})
    sandbox.set_cluster_reachable(CLUSTER, True)

    async def applied() -> bool:
        return await spoke_data(spoke, "later-cm") == {"x": "1"}

    await wait_for(applied, timeout=10, message="applied once reachable")


async def test_kinds_outside_fl_kube_are_found_by_discovery(
    apis: tuple[KubeApi, KubeApi],
) -> None:
    hub, spoke = apis
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "metrics", "namespace": "default"},
        "spec": {"ports": [{"name": "metrics", "port": 8081}]},
    }
    await hub.create(r.MANIFEST_WORK, work("w9", [service]))
    services = r.Resource("", "v1", "services", "Service", True)

    async def applied() -> dict[str, Any] | None:
        return await spoke.get_or_none(services, "metrics", namespace="default")

    found = await wait_for(applied, timeout=10, message="Service applied")
    assert found["spec"]["ports"][0]["port"] == 8081

    async def reported() -> bool:
        return await work_condition(hub, "w9", "Applied") == ("True", "AppliedManifestWorkComplete")

    await wait_for(reported, timeout=10, message="work status written")
    obj = await hub.get(r.MANIFEST_WORK, "w9", namespace=CLUSTER)
    assert obj["status"]["resourceStatus"]["manifests"][0]["resourceMeta"]["resource"] == "services"
    await hub.delete(r.MANIFEST_WORK, "w9", namespace=CLUSTER)

    async def gone() -> bool:
        return await spoke.get_or_none(services, "metrics", namespace="default") is None

    await wait_for(gone, timeout=10, message="Service deleted with the work")
