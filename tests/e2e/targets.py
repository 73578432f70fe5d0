"""Where the end-to-end suite runs: the sandbox (default, in `make test`) or a real OCM hub
(`make e2e E2E_TARGET=real`, variables in README "End-to-end tests").

Both are installed exactly as README "Deploy on a real OCM hub" tells an operator: `make
deploy` against the hub, a per-cluster AddOnDeploymentConfig, the add-on enabled per
cluster (`clusteradm addon enable` when it is installed, otherwise the ManagedClusterAddOn
it would create) and pointed at that config with `kubectl patch`. What differs is only what
the sandbox cannot do as a real cluster does: it has no kubelet for Deployments, so the
hub manager runs as a process with the Deployment's flags, and the agents run in process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fl_contract import keys
from fl_core.examples import digits
from fl_kube import resources as r
from fl_kube.client import KubeApi
from fl_kube.waiting import wait_for
from fl_sandbox.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO.parent / "shared" / "ocm-crds"
MANAGER_NAMESPACE = "open-cluster-management-federated-learning"
AGENT_NAMESPACE = "open-cluster-management-agent-addon"
MANAGER_LABEL = "app.kubernetes.io/name=federated-learning-hub-manager"
AGENT_LABEL = "app.kubernetes.io/name=federated-learning-agent"
DEFAULT_AGENT_IMAGE = "ocm-federated-learning/spoke-agent:0.1.0"
DEFAULT_TRAINER_IMAGE = "ocm-federated-learning/trainer:0.1.0"


class CommandFailed(RuntimeError):
    """A README command exited non-zero; the message carries its output."""


async def run(argv: Sequence[str], *, kubeconfig: Path, cwd: Path = REPO) -> str:
    """Run a command as the README shows it, with KUBECONFIG pointing at one cluster."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)} exited {process.returncode}:\n{text}")
    return text


def apply_argv(path: Path) -> list[str]:
    return ["kubectl", "apply", "-f", str(path)]


class Target(ABC):
    """A hub and its managed clusters, installed and driven as an operator would."""

    name: str
    clusters: list[str]
    hub: KubeApi
    spokes: dict[str, KubeApi]
    hub_kubeconfig: Path
    workdir: Path
    store: dict[str, Any] | None = None  # spec.server.storage of the jobs; None: file://

    # -- what differs between a real hub and the sandbox --------------------------------

    @abstractmethod
    def dataset_catalogue(self, cluster: str) -> str:
        """DATASET_CATALOGUE for the cluster (flow-style YAML, as the README shows)."""

    @abstractmethod
    def agent_image(self) -> str: ...

    def metrics_port(self, cluster: str) -> str:
        return "8081"

    @abstractmethod
    async def start_manager(self) -> None:
        """After `make deploy`: the hub manager runs (a Deployment does it on a real hub)."""

    @abstractmethod
    async def kill_manager(self) -> None:
        """SIGKILL the hub manager; it comes back as its Deployment brings it back."""

    @abstractmethod
    async def kill_agent(self, cluster: str) -> None:
        """SIGKILL a cluster's agent; it comes back as its Deployment brings it back."""

    @abstractmethod
    async def agent_credentials(self, cluster: str) -> Path:
        """A kubeconfig with the cluster's agent identity on the hub (what it really holds)."""

    @abstractmethod
    async def agent_running(self, cluster: str) -> bool: ...

    async def close(self) -> None:
        await self.hub.close()
        for spoke in self.spokes.values():
            await spoke.close()

    # -- the README, shared ---------------------------------------------------------------

    async def make_deploy(self) -> None:
        """README: `make deploy` (kubectl apply -k deploy/ ; kubectl apply -k addon_templates/)."""
        await run(["make", "deploy"], kubeconfig=self.hub_kubeconfig)

    async def enable_addon(self, cluster: str) -> None:
        """README: per-cluster AddOnDeploymentConfig, `clusteradm addon enable`, then the
        `kubectl patch` that points the add-on at that config."""
        config = {
            "apiVersion": "addon.open-cluster-management.io/v1alpha1",
            "kind": "AddOnDeploymentConfig",
            "metadata": {"name": f"federated-learning-{cluster}", "namespace": cluster},
            "spec": {
                "agentInstallNamespace": AGENT_NAMESPACE,
                "customizedVariables": [
                    {"name": "AGENT_IMAGE", "value": self.agent_image()},
                    {"name": "DATASET_CATALOGUE", "value": self.dataset_catalogue(cluster)},
                    {"name": "METRICS_PORT", "value": self.metrics_port(cluster)},
                ],
            },
        }
        path = self.workdir / f"adc-{cluster}.yaml"
        path.write_text(yaml.safe_dump(config))
        await run(apply_argv(path), kubeconfig=self.hub_kubeconfig)
        if shutil.which("clusteradm"):
            await run(
                [
                    "clusteradm",
                    "addon",
                    "enable",
                    "--names",
                    keys.ADDON_NAME,
                    "--clusters",
                    cluster,
                ],
                kubeconfig=self.hub_kubeconfig,
            )
        else:  # what `clusteradm addon enable` creates
            addon = {
                "apiVersion": r.MANAGED_CLUSTER_ADDON.api_version,
                "kind": "ManagedClusterAddOn",
                "metadata": {"name": keys.ADDON_NAME, "namespace": cluster},
                "spec": {},
            }
            mca_path = self.workdir / f"mca-{cluster}.yaml"
            mca_path.write_text(yaml.safe_dump(addon))
            await run(apply_argv(mca_path), kubeconfig=self.hub_kubeconfig)
        patch = {
            "spec": {
                "configs": [
                    {
                        "group": "addon.open-cluster-management.io",
                        "resource": "addondeploymentconfigs",
                        "name": f"federated-learning-{cluster}",
                        "namespace": cluster,
                    }
                ]
            }
        }
        await run(
            [
                "kubectl",
                "-n",
                cluster,
                "patch",
                "managedclusteraddon",
                keys.ADDON_NAME,
                "--type",
                "merge",
                "-p",
                json.dumps(patch),
            ],
            kubeconfig=self.hub_kubeconfig,
        )

    async def disable_addon(self, cluster: str) -> None:
        """README: `clusteradm addon disable` (deletes the ManagedClusterAddOn), and wait
        until it is gone: its pre-delete cleanup has run."""
        if shutil.which("clusteradm"):
            await run(
                [
                    "clusteradm",
                    "addon",
                    "disable",
                    "--names",
                    keys.ADDON_NAME,
                    "--clusters",
                    cluster,
                ],
                kubeconfig=self.hub_kubeconfig,
            )
        else:
            await run(
                ["kubectl", "-n", cluster, "delete", "managedclusteraddon", keys.ADDON_NAME],
                kubeconfig=self.hub_kubeconfig,
            )

    async def install(self) -> None:
        await self.make_deploy()
        await self.start_manager()
        for cluster in self.clusters:
            await self.enable_addon(cluster)

    async def uninstall(self) -> None:
        """README: delete the jobs, disable the add-on everywhere, then `kubectl delete -k`
        of addon_templates/ and deploy/."""
        await run(
            ["kubectl", "delete", "fl", "--all", "-A", "--wait=true", "--timeout=120s"],
            kubeconfig=self.hub_kubeconfig,
        )
        for cluster in self.clusters:
            if await self.hub.get_or_none(
                r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, namespace=cluster
            ):
                await self.disable_addon(cluster)
        for cluster in self.clusters:

            async def gone(c: str = cluster) -> bool:
                return await _gone(self.hub, r.MANAGED_CLUSTER_ADDON, keys.ADDON_NAME, c)

            await wait_for(
                gone,
                timeout=180,
                message=f"ManagedClusterAddOn {cluster}/{keys.ADDON_NAME} deleted",
            )
            await run(
                [
                    "kubectl",
                    "-n",
                    cluster,
                    "delete",
                    "addondeploymentconfig",
                    f"federated-learning-{cluster}",
                    "--ignore-not-found",
                ],
                kubeconfig=self.hub_kubeconfig,
            )
        await run(
            ["kubectl", "delete", "-k", "addon_templates/", "--ignore-not-found"],
            kubeconfig=self.hub_kubeconfig,
        )
        await run(
            ["kubectl", "delete", "-k", "deploy/", "--ignore-not-found", "--timeout=120s"],
            kubeconfig=self.hub_kubeconfig,
        )
        await self.stop_manager()

    async def stop_manager(self) -> None:  # noqa: B027 - nothing to do on a real hub
        """After uninstall: a real hub's Deployment is gone with deploy/."""


async def _gone(api: KubeApi, res: r.Resource, name: str, namespace: str | None) -> bool:
    return await api.get_or_none(res, name, namespace=namespace) is None


# -- the sandbox ----------------------------------------------------------------------------


class SandboxTarget(Target):
    """The sandbox: emulated API servers and OCM controllers, real manager and agents."""

    def __init__(self, workdir: Path, clusters: int) -> None:
        self.name = "sandbox"
        self.workdir = workdir
        self.sandbox = Sandbox(
            workdir=workdir / "sandbox",
            clusters=clusters,
            crd_dirs=[CRD_DIR] if CRD_DIR.is_dir() else [],
            hub_manager=False,
            agents=True,
            addon=False,
            datasets=True,
            authorize=True,
            tls=True,
        )
        self.clusters = list(self.sandbox.cluster_names)
        self._manager: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        sb = self.sandbox
        await sb.start()
        self.hub_kubeconfig = sb.hub_kubeconfig
        self.hub = await KubeApi.from_kubeconfig(sb.hub_kubeconfig)
        self.spokes = {
            name: await KubeApi.from_kubeconfig(sb.cluster_kubeconfig(name))
            for name in self.clusters
        }

    def dataset_catalogue(self, cluster: str) -> str:
        catalogue = yaml.safe_load(self.sandbox.catalogue_path(cluster).read_text())
        return yaml.safe_dump(catalogue, default_flow_style=True, width=10_000).strip()

    def agent_image(self) -> str:
        return DEFAULT_AGENT_IMAGE

    async def start_manager(self) -> None:
        """deploy/manager.yaml's container, as a process with the same flags."""
        self._manager = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "fl-hub-manager"),
            "--kubeconfig",
            str(self.sandbox.hub_kubeconfig),
            "--metrics-bind-address",
            "127.0.0.1:0",
            "--leader-elect",
            "--file-store-root",
            str(self.sandbox.model_store_dir),
            env={**os.environ, "POD_NAMESPACE": MANAGER_NAMESPACE, "POD_NAME": "manager-0"},
            stdout=(self.workdir / "manager.log").open("ab"),
            stderr=asyncio.subprocess.STDOUT,
        )

    async def kill_manager(self) -> None:
        assert self._manager is not None
        self._manager.send_signal(signal.SIGKILL)
        await self._manager.wait()
        await self.start_manager()

    async def stop_manager(self) -> None:
        if self._manager is not None and self._manager.returncode is None:
            self._manager.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self._manager.wait(), timeout=30)

    async def kill_agent(self, cluster: str) -> None:
        await self.sandbox.restart_agent(cluster)

    async def agent_credentials(self, cluster: str) -> Path:
        return self.sandbox.agent_hub_kubeconfig(cluster)

    async def agent_running(self, cluster: str) -> bool:
        return cluster in self.sandbox.running_agents()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_manager()
        if self._manager is not None and self._manager.returncode is None:
            self._manager.kill()
        await super().close()
        await self.sandbox.stop()


# -- a real hub -----------------------------------------------------------------------------


class RealTarget(Target):
    """A real OCM hub and managed clusters, from the environment (README "End-to-end tests")."""

    def __init__(self, workdir: Path, environ: dict[str, str]) -> None:
        self.name = "real"
        self.workdir = workdir
        self.environ = environ
        self.hub_kubeconfig = Path(_required(environ, "E2E_HUB_KUBECONFIG"))
        pairs = [p for p in _required(environ, "E2E_CLUSTERS").split(",") if p]
        self.cluster_kubeconfigs = {}
        for pair in pairs:
            name, _, path = pair.partition("=")
            self.cluster_kubeconfigs[name.strip()] = Path(path.strip())
        self.clusters = sorted(self.cluster_kubeconfigs)
        self.dataset_root = Path(_required(environ, "E2E_DATASET_ROOT"))
        ports = environ.get("E2E_METRICS_PORTS", "")
        self.ports = dict(p.split("=", 1) for p in ports.split(",") if "=" in p)
        endpoint = environ.get("E2E_S3_ENDPOINT")
        if endpoint:
            self.store = {
                "type": "S3Bucket",
                "s3": {
                    "bucketName": environ.get("E2E_S3_BUCKET", "federated-learning"),
                    "prefix": "e2e",
                    "region": environ.get("E2E_S3_REGION", "us-east-1"),
                    "endpoint": endpoint,
                },
            }

    async def start(self) -> None:
        self.hub = await KubeApi.from_kubeconfig(self.hub_kubeconfig)
        self.spokes = {
            name: await KubeApi.from_kubeconfig(path)
            for name, path in self.cluster_kubeconfigs.items()
        }
        folders = await asyncio.to_thread(
            digits.prepare_cluster_datasets, self.dataset_root, clusters=len(self.clusters)
        )
        self.samples = {}
        for name, folder in zip(self.clusters, folders, strict=True):
            with np.load(folder / "train.npz") as npz:
                self.samples[name] = len(npz["y"])
            self.folders = dict(zip(self.clusters, folders, strict=True))

    def dataset_catalogue(self, cluster: str) -> str:
        return (
            f"{{datasets: [{{name: digits, hostPath: {self.folders[cluster]}, "
            f"samples: {self.samples[cluster]}, task: classification, features: x, "
            "labels: y}]}"
        )

    def agent_image(self) -> str:
        return self.environ.get("E2E_AGENT_IMAGE", DEFAULT_AGENT_IMAGE)

    def metrics_port(self, cluster: str) -> str:
        return self.ports.get(cluster, "8081")

    async def start_manager(self) -> None:
        """README: for an S3 store, the credentials Secret in the manager's namespace, and a
        restart of the manager to read it."""
        access = self.environ.get("AWS_ACCESS_KEY_ID")
        if self.store is not None and access:
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "federated-learning-store", "namespace": MANAGER_NAMESPACE},
                "stringData": {
                    "AWS_ACCESS_KEY_ID": access,
                    "AWS_SECRET_ACCESS_KEY": self.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                },
            }
            path = self.workdir / "store-secret.yaml"
            path.write_text(yaml.safe_dump(secret))
            try:
                await run(apply_argv(path), kubeconfig=self.hub_kubeconfig)
            finally:
                path.unlink()  # credentials do not stay on disk
            await run(
                [
                    "kubectl",
                    "-n",
                    MANAGER_NAMESPACE,
                    "rollout",
                    "restart",
                    "deployment/federated-learning-hub-manager",
                ],
                kubeconfig=self.hub_kubeconfig,
            )
        await wait_for(
            lambda: self._pods_ready(self.hub, MANAGER_NAMESPACE, MANAGER_LABEL),
            timeout=120,
            message="the hub manager's Pod is Ready",
        )

    async def _pods_ready(self, api: KubeApi, namespace: str, selector: str) -> bool:
        pods = (await api.list(r.POD, namespace=namespace, label_selector=selector)).items
        return any(
            not (p["metadata"].get("deletionTimestamp"))
            and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
            for p in pods
        )

    async def _force_delete_pods(self, api: KubeApi, namespace: str, selector: str) -> None:
        """SIGKILL as Kubernetes offers it: delete with a grace period of 0."""
        pods = (await api.list(r.POD, namespace=namespace, label_selector=selector)).items
        for pod in pods:
            await api.delete(r.POD, pod["metadata"]["name"], namespace=namespace, grace_seconds=0)

    async def kill_manager(self) -> None:
        await self._force_delete_pods(self.hub, MANAGER_NAMESPACE, MANAGER_LABEL)

    async def kill_agent(self, cluster: str) -> None:
        await self._force_delete_pods(self.spokes[cluster], AGENT_NAMESPACE, AGENT_LABEL)

    async def agent_credentials(self, cluster: str) -> Path:
        """The agent's hub kubeconfig Secret on its cluster, written out with its files."""
        secret = await self.spokes[cluster].get(
            r.SECRET, f"{keys.ADDON_NAME}-hub-kubeconfig", namespace=AGENT_NAMESPACE
        )
        folder = Path(tempfile.mkdtemp(prefix=f"agent-{cluster}-", dir=self.workdir))
        for key, value in (secret.get("data") or {}).items():
            (folder / key).write_bytes(base64.b64decode(value))
        config = yaml.safe_load((folder / "kubeconfig").read_text())
        for user in config.get("users") or []:
            for field in ("client-certificate", "client-key"):
                value = (user.get("user") or {}).get(field)
                if value:
                    user["user"][field] = str(folder / Path(value).name)
        path = folder / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    async def agent_running(self, cluster: str) -> bool:
        return await self._pods_ready(self.spokes[cluster], AGENT_NAMESPACE, AGENT_LABEL)


def _required(environ: dict[str, str], name: str) -> str:
    value = environ.get(name)
    if not value:
        raise LookupError(f"E2E_TARGET=real needs {name} (README: End-to-end tests)")
    return value


async def make_target(workdir: Path) -> Target:
    """The target named by E2E_TARGET (sandbox by default), started."""
    kind = os.environ.get("E2E_TARGET", "sandbox")
    if kind == "real":
        real = RealTarget(workdir, dict(os.environ))
        await real.start()
        return real
    if kind != "sandbox":
        raise LookupError(f"E2E_TARGET={kind!r}: use sandbox or real")
    sandbox = SandboxTarget(workdir, clusters=int(os.environ.get("E2E_CLUSTERS_COUNT", "2")))
    await sandbox.start()
    return sandbox
