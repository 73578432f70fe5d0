"""Label selector strings and objects."""

from __future__ import annotations

import pytest

from fl_kube.selectors import (
    labels_to_selector,
    matches,
    parse_selector,
    selector_to_string,
)

LABELS = {"env": "prod", "tier": "gpu", "region": "eu"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("env=prod", True),
        ("env==prod", True),
        ("env=dev", False),
        ("env!=dev", True),
        ("missing!=x", True),
        ("env in (dev, prod)", True),
        ("env notin (dev,prod)", False),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("env=prod,region in (us),tier", False),
        ("env=prod, region in (eu,us), tier", True),
    ],
)
def test_string_selectors(selector: str, expected: bool) -> None:
    assert matches(selector, LABELS) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (None, True),
        ({}, True),
        ({"matchLabels": {"env": "prod"}}, True),
        ({"matchLabels": {"env": "prod", "tier": "cpu"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gpu"]}]}, False),
        ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, False),
    ],
)
def test_selector_objects(selector: dict[str, object] | None, expected: bool) -> None:
    assert matches(selector, LABELS) is expected
    # The string form selects the same objects as the object form.
    assert matches(selector_to_string(selector), LABELS) is expected


def test_object_to_string_round_trips() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "c", "operator": "In", "values": ["y", "x"]},
            {"key": "d", "operator": "DoesNotExist"},
        ],
    }
    text = selector_to_string(selector)
    assert text == "a=1,b=2,c in (x,y),!d"
    assert [str(r) for r in parse_selector(text)] == ["a=1", "b=2", "c in (x,y)", "!d"]
    assert labels_to_selector({"z": "1", "a": "2"}) == "a=2,z=1"


@pytest.mark.parametrize(
    ("selector", "field"),
    [
        ({"matchExpressions": [{"operator": "In", "values": ["a"]}]}, "matchExpressions[0].key"),
        ({"matchExpressions": [{"key": "a", "operator": "Has"}]}, "matchExpressions[0].operator"),
        ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "matchExpressions[0].values"),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "matchExpressions[0].values",
        ),
    ],
)
def test_bad_selector_objects_name_the_field(selector: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        matches(selector, LABELS)


def test_bad_selector_string() -> None:
    with pytest.raises(ValueError, match="invalid label selector"):
        parse_selector("a in b")
