"""Loading the project's manifests, and rendering the AddOnTemplate as OCM does."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
OCM_CRDS = REPO.parent / "shared" / "ocm-crds"
DEPLOY = REPO / "deploy"
ADDON_TEMPLATES = REPO / "addon_templates"
OUR_CRDS = DEPLOY / "crds"
SAMPLES = DEPLOY / "samples"
DASHBOARD = DEPLOY / "grafana" / "federated-learning-dashboard.json"

# Values the addon-manager provides itself (templateagent built-in and default values).
BUILTIN_VARIABLES = ("CLUSTER_NAME", "INSTALL_NAMESPACE", "HUB_KUBECONFIG")
_VARIABLE = re.compile(r"\{\{([^{}]*)\}\}")


def yaml_files() -> list[Path]:
    return sorted(p for folder in (DEPLOY, ADDON_TEMPLATES) for p in folder.rglob("*.yaml"))


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def objects(folder: Path) -> list[dict[str, Any]]:
    """Every Kubernetes object under a folder (kustomization files left out)."""
    found = []
    for path in sorted(folder.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        found.extend(load_docs(path))
    return found


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def template_variables(template: Mapping[str, Any]) -> set[str]:
    text = json.dumps(template["spec"]["agentSpec"]["workload"]["manifests"])
    return set(_VARIABLE.findall(text))


def render_manifests(
    template: Mapping[str, Any], variables: Mapping[str, str]
) -> list[dict[str, Any]]:
    """OCM's rendering: each manifest's JSON, `{{NAME}}` replaced verbatim, parsed again.

    The substitution does not escape, so a value with a quote or a newline breaks the JSON
    exactly as it would on a hub.
    """
    rendered = []
    for manifest in template["spec"]["agentSpec"]["workload"]["manifests"]:
        text = _VARIABLE.sub(lambda m: variables.get(m.group(1), ""), json.dumps(manifest))
        rendered.append(json.loads(text))
    return rendered


def containers(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in manifests:
        if obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                yield obj["metadata"]["name"], container
