"""The Dockerfiles, checked without a Docker engine.

Each image copies a subset of the packages: the entry point must import from that subset
alone (checked in a subprocess that sees only the copied folders, not this checkout), and
the final stage must be slim and unprivileged.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .manifests import REPO, load_docs

IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
PACKAGES = ("fl_contract", "fl_kube", "fl_core", "fl_sandbox", "hub_manager", "spoke_agent")
BUILD_TOOLS = ("apt-get", "apk ", "gcc", "build-essential", "make ", "curl ", "wget ")

# Runs in a fresh interpreter: forget this checkout's editable install, import the entry
# point's module from the copied tree only, and say where each package came from.
_PROBE = """
import importlib, sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
sys.path.insert(0, sys.argv[1])
module = importlib.import_module(sys.argv[2])
getattr(module, sys.argv[3])
for name in sys.argv[4].split(","):
    if name in sys.modules:
        print(name, getattr(sys.modules[name], "__file__", None) or sys.modules[name].__path__)
"""


def _stages(text: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _entrypoint(final: list[str]) -> list[str]:
    (line,) = [line for line in final if line.upper().startswith("ENTRYPOINT ")]
    return list(re.findall(r'"([^"]+)"', line))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_is_slim_and_unprivileged(dockerfile: Path) -> None:
    stages = _stages(dockerfile.read_text())
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    final = stages[-1]
    assert all(not line.upper().startswith("RUN ") for line in final), "nothing built at the end"
    assert not any(tool in line for line in final for tool in BUILD_TOOLS)
    (user,) = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric UID, so runAsNonRoot can be checked by the kubelet"
    assert int(uid) != 0
    assert any("PYTHONDONTWRITEBYTECODE=1" in line for line in final), "read-only root fs"
    base = final[0].split()[1]
    if base.startswith("${"):
        (base,) = re.findall(rf"^ARG {base[2:-1]}=(\S+)", dockerfile.read_text(), re.M)
    assert "-slim" in base, "a slim base image"
    assert _entrypoint(final)[0] in SCRIPTS
    assert (dockerfile.parent / f"{dockerfile.name}.dockerignore").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_entry_point_imports_from_the_copied_packages_alone(
    dockerfile: Path, tmp_path: Path
) -> None:
    stages = _stages(dockerfile.read_text())
    copied = [
        line.split()[1:-1]
        for line in stages[0]
        if line.upper().startswith("COPY ") and "--from" not in line
    ]
    tree = tmp_path / "src"
    tree.mkdir()
    for sources in copied:
        for source in sources:
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, tree / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, tree / source)
    script = _entrypoint(stages[-1])[0]
    module, function = SCRIPTS[script].split(":")
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tree), module, function, ",".join(PACKAGES)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    for line in probe.stdout.splitlines():
        name, origin = line.split(" ", 1)
        assert origin.startswith(str(tree)), f"{name} came from {origin}, not the image"


def test_hub_manager_image_ships_only_the_addon_objects_it_applies() -> None:
    """The manager applies the add-on kinds at start; the RBAC files are `make deploy`'s."""
    from hub_manager.addon import ADDON_KINDS

    text = (IMAGES / "hub-manager.Dockerfile").read_text()
    shipped = set(re.findall(r"addon_templates/([\w.-]+\.yaml)", text))
    applied = {
        path.name
        for path in (REPO / "addon_templates").glob("*.yaml")
        if any((d.get("apiVersion"), d.get("kind")) in ADDON_KINDS for d in load_docs(path))
    }
    assert shipped == applied
