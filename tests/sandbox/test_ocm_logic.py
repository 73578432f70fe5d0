"""Pure OCM logic: placement selection, decision chunking, claim limits, config resolution,
feedback paths. Table-driven; the controllers around them are tested against API servers."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from fl_sandbox.ocm import addon_deploy, addonconfig, claims, feedback, scheduling
from fl_sandbox.ocm.conditions import set_conditions
from fl_sandbox.ocm.selectors import SelectorError, matches_label_selector


def cluster(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    claims_: dict[str, str] | None = None,
    taints: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    base = {"name": name, scheduling.CLUSTER_SET_LABEL: "default"}
    return {
        "metadata": {"name": name, "labels": {**base, **(labels or {})}},
        "spec": {"taints": taints or []},
        "status": {"clusterClaims": [{"name": k, "value": v} for k, v in (claims_ or {}).items()]},
    }


GLOBAL = {
    "metadata": {"name": "global"},
    "spec": {"clusterSelector": {"selectorType": "LabelSelector", "labelSelector": {}}},
}
DEFAULT = {
    "metadata": {"name": "default"},
    "spec": {"clusterSelector": {"selectorType": "ExclusiveClusterSetLabel"}},
}


def binding(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team"}, "spec": {"clusterSet": name}}


def placement(spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team", "uid": "u-1"}, "spec": spec}


CLAIM = "digits.dataset.federated-learning.io"


def claim_predicate(key: str = CLAIM) -> list[dict[str, Any]]:
    return [
        {
            "requiredClusterSelector": {
                "claimSelector": {"matchExpressions": [{"key": key, "operator": "Exists"}]}
            }
        }
    ]


FLEET = [
    cluster("c1", labels={"env": "prod"}, claims_={CLAIM: "100"}),
    cluster("c2", labels={"env": "dev"}),
    cluster("c3", labels={"env": "prod"}, claims_={CLAIM: "50"}),
]


@pytest.mark.parametrize(
    ("spec", "bindings", "expected", "reason"),
    [
        ({}, ["global"], ["c1", "c2", "c3"], "AllDecisionsScheduled"),
        ({}, [], [], "NoManagedClusterSetBindings"),
        ({"clusterSets": ["other"]}, ["global"], [], "NoIntersection"),
        ({"predicates": claim_predicate()}, ["global"], ["c1", "c3"], "AllDecisionsScheduled"),
        (
            {"predicates": claim_predicate("missing.example.io")},
            ["global"],
            [],
            "NoManagedClusterMatched",
        ),
        (
            {
                "predicates": [
                    {"requiredClusterSelector": {"labelSelector": {"matchLabels": {"env": "dev"}}}},
                    *claim_predicate(),
                ]
            },
            ["default"],
            ["c1", "c2", "c3"],
            "AllDecisionsScheduled",
        ),
        (
            {
                "predicates": [
                    {
                        "requiredClusterSelector": {
                            "labelSelector": {"matchLabels": {"env": "prod"}},
                            "claimSelector": {
                                "matchExpressions": [
                                    {"key": CLAIM, "operator": "In", "values": ["50"]}
                                ]
                            },
                        }
                    }
                ]
            },
            ["global"],
            ["c3"],
            "AllDecisionsScheduled",
        ),
        ({"numberOfClusters": 2}, ["global"], ["c1", "c2"], "AllDecisionsScheduled"),
        ({"numberOfClusters": 5}, ["global"], ["c1", "c2", "c3"], "NotAllDecisionsScheduled"),
    ],
)
def test_schedule_table(
    spec: dict[str, Any], bindings: list[str], expected: list[str], reason: str
) -> None:
    pl = placement(spec)
    result = scheduling.schedule(
        pl, clusters=FLEET, cluster_sets=[GLOBAL, DEFAULT], bindings=[binding(b) for b in bindings]
    )
    assert result.selected == expected
    assert scheduling.satisfied_condition(pl, result)["reason"] == reason


def test_binding_to_missing_set_does_not_count() -> None:
    result = scheduling.schedule(
        placement({}), clusters=FLEET, cluster_sets=[DEFAULT], bindings=[binding("global")]
    )
    assert result.selected == []
    assert result.bindings == 0


def test_number_of_clusters_keeps_current_decisions() -> None:
    result = scheduling.schedule(
        placement({"numberOfClusters": 2}),
        clusters=FLEET,
        cluster_sets=[GLOBAL],
        bindings=[binding("global")],
        decided=["c3"],
    )
    assert result.selected == ["c1", "c3"]


def test_taints_exclude_unless_tolerated() -> None:
    taint = {"key": "cluster.open-cluster-management.io/unavailable", "effect": "NoSelect"}
    fleet = [cluster("c1", taints=[taint]), cluster("c2")]
    sets, binds = [GLOBAL], [binding("global")]
    result = scheduling.schedule(placement({}), clusters=fleet, cluster_sets=sets, bindings=binds)
    assert result.selected == ["c2"]
    tolerant = placement({"tolerations": [{"key": taint["key"], "operator": "Exists"}]})
    result = scheduling.schedule(tolerant, clusters=fleet, cluster_sets=sets, bindings=binds)
    assert result.selected == ["c1", "c2"]
    expiring = placement(
        {"tolerations": [{"key": taint["key"], "operator": "Exists", "tolerationSeconds": 10}]}
    )
    added = dict(taint, timeAdded="2026-01-01T00:00:00Z")
    fleet = [cluster("c1", taints=[added])]
    late = dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
    result = scheduling.schedule(
        expiring, clusters=fleet, cluster_sets=sets, bindings=binds, now=late
    )
    assert result.selected == []


def test_invalid_selector_is_misconfigured_with_field_path() -> None:
    bad = placement(
        {
            "predicates": [
                {
                    "requiredClusterSelector": {
                        "claimSelector": {"matchExpressions": [{"key": "k", "operator": "Bogus"}]}
                    }
                }
            ]
        }
    )
    result = scheduling.schedule(
        bad, clusters=FLEET, cluster_sets=[GLOBAL], bindings=[binding("global")]
    )
    assert result.selected == []
    cond = scheduling.misconfigured_condition(result)
    assert cond["status"] == "True"
    assert "spec.predicates[0].requiredClusterSelector.claimSelector" in cond["message"]


def test_empty_result_has_one_empty_decision_and_omits_count() -> None:
    pl = placement({"predicates": claim_predicate("nothing.example.io")})
    result = scheduling.schedule(
        pl, clusters=FLEET, cluster_sets=[GLOBAL], bindings=[binding("global")]
    )
    objects = scheduling.decision_objects("p", result)
    assert [(o.name, o.clusters) for o in objects] == [("p-decision-1", ())]
    status = scheduling.placement_status(pl, result, objects, now="2026-01-01T00:00:00Z")
    assert "numberOfSelectedClusters" not in status
    assert status["decisionGroups"] == [
        {
            "decisionGroupIndex": 0,
            "decisionGroupName": "",
            "decisions": ["p-decision-1"],
            "clusterCount": 0,
        }
    ]
    satisfied = next(c for c in status["conditions"] if c["type"] == "PlacementSatisfied")
    assert (satisfied["status"], satisfied["reason"]) == ("False", "NoManagedClusterMatched")


def test_decisions_are_chunked_by_100() -> None:
    fleet = [cluster(f"c{i:03d}") for i in range(250)]
    pl = placement({})
    result = scheduling.schedule(
        pl, clusters=fleet, cluster_sets=[GLOBAL], bindings=[binding("global")]
    )
    objects = scheduling.decision_objects("p", result)
    assert [o.name for o in objects] == ["p-decision-1", "p-decision-2", "p-decision-3"]
    assert [len(o.clusters) for o in objects] == [100, 100, 50]
    assert [c for o in objects for c in o.clusters] == sorted(f"c{i:03d}" for i in range(250))
    body = scheduling.decision_body(pl, objects[0])
    assert body["metadata"]["labels"] == {
        scheduling.PLACEMENT_LABEL: "p",
        scheduling.DECISION_GROUP_INDEX_LABEL: "0",
        scheduling.DECISION_GROUP_NAME_LABEL: "",
    }
    assert body["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    status = scheduling.placement_status(pl, result, objects)
    assert status["numberOfSelectedClusters"] == 250


def test_decision_groups_follow_group_strategy() -> None:
    pl = placement(
        {
            "decisionStrategy": {
                "groupStrategy": {
                    "clustersPerDecisionGroup": 1,
                    "decisionGroups": [
                        {
                            "groupName": "prod",
                            "groupClusterSelector": {
                                "labelSelector": {"matchLabels": {"env": "prod"}}
                            },
                        }
                    ],
                }
            }
        }
    )
    result = scheduling.schedule(
        pl, clusters=FLEET, cluster_sets=[GLOBAL], bindings=[binding("global")]
    )
    assert result.groups == [("prod", ["c1"]), ("prod", ["c3"]), ("", ["c2"])]
    objects = scheduling.decision_objects("p", result)
    assert [(o.name, o.group_index, o.group_name) for o in objects] == [
        ("p-decision-1", 0, "prod"),
        ("p-decision-2", 1, "prod"),
        ("p-decision-3", 2, ""),
    ]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
    ],
)
def test_label_selector(selector: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert matches_label_selector(selector, labels) is expected


def test_label_selector_rejects_in_without_values() -> None:
    with pytest.raises(SelectorError, match=r"matchExpressions\[0\]\.values"):
        matches_label_selector({"matchExpressions": [{"key": "a", "operator": "In"}]}, {})


def _claim(name: str, value: str = "v", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"value": value}}


def test_claims_reserved_first_then_first_20_custom_by_name() -> None:
    spoke = [_claim(f"custom-{i:02d}.example.io") for i in range(25, -1, -1)]
    spoke.append(_claim("id.k8s.io", "cluster-uid"))
    spoke.append(_claim("hidden.example.io", **{claims.SPOKE_ONLY_LABEL: ""}))
    exposed = claims.exposed_claims(spoke)
    assert exposed[0] == {"name": "id.k8s.io", "value": "cluster-uid"}
    assert [c["name"] for c in exposed[1:]] == [f"custom-{i:02d}.example.io" for i in range(20)]


def test_config_resolution_order() -> None:
    group, resource = addonconfig.ADDON_GROUP, addonconfig.DEPLOYMENT_CONFIGS
    cma = {
        "spec": {
            "supportedConfigs": [
                {"group": group, "resource": addonconfig.TEMPLATES, "defaultConfig": {"name": "t"}},
                {
                    "group": group,
                    "resource": resource,
                    "defaultConfig": {"name": "dflt", "namespace": "open-cluster-management"},
                },
            ]
        }
    }
    assert addonconfig.uses_template(cma)
    mca: dict[str, Any] = {"spec": {}}
    ref = addonconfig.resolve_config(group=group, resource=resource, mca=mca, cma=cma)
    assert ref is not None
    assert (ref.namespace, ref.name) == ("open-cluster-management", "dflt")
    placed = [{"group": group, "resource": resource, "name": "pl", "namespace": "ns"}]
    ref = addonconfig.resolve_config(
        group=group, resource=resource, mca=mca, cma=cma, placement_configs=placed
    )
    assert ref is not None
    assert ref.name == "pl"
    mca = {
        "spec": {
            "configs": [{"group": group, "resource": resource, "name": "own", "namespace": "c1"}]
        }
    }
    ref = addonconfig.resolve_config(
        group=group, resource=resource, mca=mca, cma=cma, placement_configs=placed
    )
    assert ref is not None
    assert (ref.namespace, ref.name) == ("c1", "own")
    assert not addonconfig.uses_template({"spec": {"supportedConfigs": [{"resource": resource}]}})


def test_deployment_config_settings() -> None:
    assert (
        addonconfig.settings_from(None).install_namespace == "open-cluster-management-agent-addon"
    )
    adc = {
        "spec": {
            "agentInstallNamespace": "addon-ns-cluster1",
            "customizedVariables": [{"name": "LOG_LEVEL", "value": "debug"}],
        }
    }
    settings = addonconfig.settings_from(adc)
    assert settings.install_namespace == "addon-ns-cluster1"
    assert settings.variables == {"LOG_LEVEL": "debug"}
    assert addonconfig.settings_from({"spec": {"agentInstallNamespace": ""}}).install_namespace == (
        addonconfig.DEFAULT_INSTALL_NAMESPACE
    )


JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
    "data": {"a.b": "x", "list": [1, 2]},
}


def test_feedback_paths_and_types() -> None:
    rules: list[dict[str, Any]] = [
        {
            "type": "JSONPaths",
            "jsonPaths": [
                {"name": "succeeded", "path": ".status.succeeded"},
                {"name": "complete", "path": '.status.conditions[?(@.type=="Complete")].status'},
                {"name": "quoted", "path": ".data['a.b']"},
                {"name": "missing", "path": ".status.nothing"},
                {"name": "list", "path": ".data.list"},
            ],
        },
        {"type": "WellKnownStatus"},
    ]
    values, errors = feedback.values_for_rules(JOB, rules)
    by_name = {v["name"]: v["fieldValue"] for v in values}
    assert by_name["succeeded"] == {"type": "Integer", "integer": 1}
    assert by_name["complete"] == {"type": "String", "string": "True"}
    assert by_name["quoted"] == {"type": "String", "string": "x"}
    assert by_name["JobComplete"] == {"type": "String", "string": "True"}
    assert by_name["JobSucceeded"] == {"type": "Integer", "integer": 1}
    assert "missing" not in by_name
    assert any("list" in e for e in errors)


def test_feedback_bool_is_boolean_not_integer() -> None:
    values, _ = feedback.values_for_rules(
        {"apiVersion": "v1", "kind": "ConfigMap", "x": True},
        [{"type": "JSONPaths", "jsonPaths": [{"name": "x", "path": ".x"}]}],
    )
    assert values == [{"name": "x", "fieldValue": {"type": "Boolean", "boolean": True}}]


def test_conditions_keep_transition_time_when_status_unchanged() -> None:
    first = set_conditions(
        [], [{"type": "A", "status": "True", "reason": "R", "message": ""}], now="t1"
    )
    second = set_conditions(
        first, [{"type": "A", "status": "True", "reason": "R2", "message": ""}], now="t2"
    )
    assert second[0]["lastTransitionTime"] == "t1"
    assert second[0]["reason"] == "R2"
    third = set_conditions(
        second, [{"type": "A", "status": "False", "reason": "R", "message": ""}], now="t3"
    )
    assert third[0]["lastTransitionTime"] == "t3"


TEMPLATE = {
    "metadata": {"name": "t"},
    "spec": {
        "agentSpec": {
            "workload": {
                "manifests": [
                    {
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {
                            "name": "literal-ns",
                            "annotations": {addon_deploy.ORPHAN_ANNOTATION: ""},
                        },
                    },
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": "agent", "namespace": "literal-ns"},
                        "spec": {
                            "template": {
                                "spec": {
                                    "containers": [
                                        {
                                            "name": "a",
                                            "image": "{{IMAGE}}",
                                            "args": ["{{CLUSTER_NAME}}", "{{INSTALL_NAMESPACE}}"],
                                        }
                                    ]
                                }
                            }
                        },
                    },
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": {"name": "agent", "namespace": "literal-ns"},
                        "subjects": [
                            {"kind": "ServiceAccount", "name": "agent", "namespace": "literal-ns"}
                        ],
                    },
                ]
            }
        }
    },
}


def test_render_agent_spec() -> None:
    works = addon_deploy.render_agent_spec(
        TEMPLATE,
        cluster="c1",
        addon="fl",
        configured_namespace="ns1",
        variables={"IMAGE": "img:1"},
    )
    spec = works.deploy
    namespace, deployment, binding = spec["workload"]["manifests"]
    assert namespace["metadata"]["name"] == "ns1"
    assert deployment["metadata"]["namespace"] == "ns1"
    assert binding["subjects"][0]["namespace"] == "ns1"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert (container["image"], container["args"]) == ("img:1", ["c1", "ns1"])
    assert {"name": "hub-kubeconfig", "mountPath": "/managed/hub-kubeconfig"} in container[
        "volumeMounts"
    ]
    assert {"name": "CLUSTER_NAME", "value": "c1"} in container["env"]
    assert {"name": "INSTALL_NAMESPACE", "value": "ns1"} in container["env"]
    assert deployment["spec"]["template"]["spec"]["volumes"] == [
        {"name": "hub-kubeconfig", "secret": {"secretName": "fl-hub-kubeconfig"}}
    ]
    assert spec["deleteOption"] == {
        "propagationPolicy": "SelectivelyOrphan",
        "selectivelyOrphans": {
            "orphaningRules": [{"group": "", "resource": "namespaces", "name": "ns1"}]
        },
    }
    assert works.hook is None


def test_render_keeps_literal_namespaces_without_an_install_namespace() -> None:
    """As upstream: no agentInstallNamespace, no rewriting and no INSTALL_NAMESPACE."""
    works = addon_deploy.render_agent_spec(
        TEMPLATE, cluster="c1", addon="fl", configured_namespace=None, variables={"IMAGE": "i"}
    )
    namespace, deployment, binding = works.deploy["workload"]["manifests"]
    assert namespace["metadata"]["name"] == "literal-ns"
    assert deployment["metadata"]["namespace"] == "literal-ns"
    assert binding["subjects"][0]["namespace"] == "literal-ns"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["c1", ""]
    assert "INSTALL_NAMESPACE" not in {e["name"] for e in container["env"]}
    assert addon_deploy.registration_namespace(TEMPLATE, None) == "literal-ns"
    assert addon_deploy.registration_namespace(TEMPLATE, "ns2") == "ns2"


def test_render_unknown_variables_become_empty_as_upstream() -> None:
    works = addon_deploy.render_agent_spec(
        TEMPLATE, cluster="c1", addon="fl", configured_namespace="ns1", variables={}
    )
    deployment = works.deploy["workload"]["manifests"][1]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == ""


def test_render_errors_say_what_to_do() -> None:
    with pytest.raises(addon_deploy.RenderError, match="escaping"):
        addon_deploy.render_agent_spec(
            TEMPLATE,
            cluster="c1",
            addon="fl",
            configured_namespace="ns1",
            variables={"IMAGE": 'a"b'},
        )


def test_pre_delete_hooks_go_to_their_own_work() -> None:
    hook = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "cleanup",
            "namespace": "literal-ns",
            "annotations": {addon_deploy.PRE_DELETE_KEY: ""},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "{{IMAGE}}"}]}}},
    }
    template: dict[str, Any] = copy.deepcopy(TEMPLATE)
    template["spec"]["agentSpec"]["workload"]["manifests"].append(hook)
    works = addon_deploy.render_agent_spec(
        template, cluster="c1", addon="fl", configured_namespace="ns1", variables={"IMAGE": "i"}
    )
    kinds = [m["kind"] for m in works.deploy["workload"]["manifests"]]
    assert "Job" not in kinds
    assert works.hook is not None
    (job,) = works.hook["workload"]["manifests"]
    assert job["metadata"]["namespace"] == "ns1"
    assert works.hook["manifestConfigs"] == [
        {
            "resourceIdentifier": {
                "group": "batch",
                "resource": "jobs",
                "name": "cleanup",
                "namespace": "ns1",
            },
            "feedbackRules": [{"type": "WellKnownStatus"}],
        }
    ]
    work: dict[str, Any] = {"spec": works.hook, "status": {}}
    assert not addon_deploy.hook_completed(work)
    work["status"] = {
        "conditions": [{"type": "Available", "status": "True"}],
        "resourceStatus": {
            "manifests": [
                {
                    "resourceMeta": {"resource": "jobs", "name": "cleanup", "namespace": "ns1"},
                    "statusFeedback": {
                        "values": [
                            {
                                "name": "JobComplete",
                                "fieldValue": {"type": "String", "string": "True"},
                            }
                        ]
                    },
                }
            ]
        },
    }
    assert addon_deploy.hook_completed(work)
