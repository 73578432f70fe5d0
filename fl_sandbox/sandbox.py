"""A local OCM fleet: a hub API server, one API server per managed cluster, the emulated
OCM controllers, a Job runner per cluster, and optionally the real hub manager and agents.

Everything speaks HTTP to the API servers through ``fl_kube``, as on real clusters; the
only shortcut is that a cluster's add-on agent identity is issued by the hub API server
directly (what OCM does with a CSR). Layout of ``workdir``::

    .fl-sandbox.lock                        held while a sandbox runs here (its pid)
    hub.kubeconfig                          admin of the hub
    clusters/<name>.kubeconfig              admin of each managed cluster
    clusters/<name>/datasets.yaml           the agent's dataset catalogue
    clusters/<name>/<addon>-hub.kubeconfig  the agent's hub identity (also a Secret)
    clusters/<name>/agent-spoke.kubeconfig  the in-process agent's own cluster (an admin)
    datasets/<name>/train.npz               the cluster's digits partition
    jobs/<name>/                            Job runner scratch space
    models/                                 root of file:// model stores
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import yaml
from prometheus_client import CollectorRegistry

from fl_contract import keys
from fl_kube import Conflict, ControllerMetrics, KubeApi
from fl_kube import resources as r
from fl_kube.waiting import wait_for
from fl_sandbox.apiserver import ApiServer
from fl_sandbox.jobs.forkserver import ForkServer
from fl_sandbox.ocm import conditions as cond
from fl_sandbox.ocm.addonconfig import DEFAULT_INSTALL_NAMESPACE
from fl_sandbox.ocm.addons import AddonInstaller
from fl_sandbox.ocm.placement import PlacementController
from fl_sandbox.ocm.registration import Registration
from fl_sandbox.ocm.runtime import Runtime
from fl_sandbox.ocm.workagent import WorkAgent
from fl_sandbox.workdir_lock import SandboxBusy, WorkdirLock

log = logging.getLogger(__name__)

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
ADDON_TEMPLATES_DIR: Final = REPO_ROOT / "addon_templates"
HUB_NAMESPACES: Final = ("open-cluster-management", "open-cluster-management-hub")
FIELD_MANAGER: Final = "fl-sandbox"
DATASET_NAME: Final = "digits"
_YAML_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when built
AGENT_SPOKE_USER: Final = "fl-sandbox:agent"
# Above this many clusters a sandbox is light unless told otherwise (see ``Sandbox``).
LIGHT_ABOVE: Final = 20
# What a light cluster's periodic work is slowed to: idle clusters should cost no CPU.
LIGHT_FEEDBACK_INTERVAL: Final = 60.0  # work agent's status feedback re-read
LIGHT_RESYNC_PERIOD: Final = 300.0  # emulated controllers' full resync
LIGHT_LEASE_RENEW: Final = 60.0  # agent's health lease: renewed every minute...
LIGHT_LEASE_DURATION: Final = 120  # ...valid for two (stale after 5 x 120 s)
LIGHT_CATALOGUE_POLL: Final = 60.0  # agent's re-read of its dataset catalogue
LIGHT_BOOKMARK_INTERVAL: Final = 60.0  # watch bookmarks (kube-apiserver: about a minute)
LIGHT_REQUEST_LOG: Final = 2_000  # request records kept per API server (tallies stay whole)
FILES_PER_CLUSTER: Final = 64  # both ends of its connections (one process), sockets, logs
PROCESSES_PER_CPU: Final = 4  # training processes at once per CPU in a light sandbox


def _import_optional(module: str, attribute: str) -> Any:
    """An attribute of an optional module, or None while that module does not exist yet."""
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        log.info("%s.%s is not available (%s): skipping it", module, attribute, exc)
        return None


class _InProcessAgents:
    """Runs one real spoke agent per cluster in this process (``AgentHost``)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._tasks: dict[tuple[str, str], tuple[tuple[str, Path], asyncio.Task[None]]] = {}
        self._closed = False

    async def ensure(
        self, *, cluster: str, addon: str, namespace: str, hub_kubeconfig: Path
    ) -> None:
        if self._closed:
            return
        key = (cluster, addon)
        wanted = (namespace, hub_kubeconfig)
        current = self._tasks.get(key)
        if current is not None and current[0] == wanted and not current[1].done():
            return
        await self.remove(cluster=cluster, addon=addon)
        run_agent = _import_optional("spoke_agent.app", "run_agent")
        settings_cls = _import_optional("spoke_agent.settings", "AgentSettings")
        if run_agent is None or settings_cls is None:
            return
        light: dict[str, Any] = (
            {
                "metrics_bind_address": "0",
                "lease_renew_seconds": LIGHT_LEASE_RENEW,
                "lease_duration_seconds": LIGHT_LEASE_DURATION,
                "catalogue_poll_seconds": LIGHT_CATALOGUE_POLL,
            }
            if self._sandbox.light
            else {"metrics_bind_address": "127.0.0.1:0"}
        )
        settings = settings_cls(
            cluster_name=cluster,
            hub_kubeconfig=str(hub_kubeconfig),
            kubeconfig=str(self._sandbox.agent_spoke_kubeconfig(cluster)),
            namespace=namespace,
            datasets=self._sandbox.catalogue_path(cluster) if self._sandbox.datasets else None,
            **light,
        )
        task = asyncio.create_task(_logged(run_agent(settings), f"agent {cluster}"))
        self._tasks[key] = (wanted, task)

    async def remove(self, *, cluster: str, addon: str) -> None:
        entry = self._tasks.pop((cluster, addon), None)
        if entry is not None:
            await _cancel(entry[1])

    async def restart(self, cluster: str, addon: str) -> None:
        """Stop the agent abruptly and start it again with the same settings (a crash and
        the Deployment's restart)."""
        entry = self._tasks.pop((cluster, addon), None)
        if entry is None:
            raise LookupError(f"no agent runs for {cluster}/{addon}")
        await _cancel(entry[1])
        namespace, hub_kubeconfig = entry[0]
        await self.ensure(
            cluster=cluster, addon=addon, namespace=namespace, hub_kubeconfig=hub_kubeconfig
        )

    def running(self) -> list[str]:
        return sorted(
            cluster for (cluster, _addon), (_, task) in self._tasks.items() if not task.done()
        )

    async def stop(self) -> None:
        self._closed = True
        for cluster, addon in list(self._tasks):
            await self.remove(cluster=cluster, addon=addon)


async def _logged(coro: Any, what: str) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s stopped with an error", what)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Sandbox:
    """A hub and ``clusters`` managed clusters on loopback; an async context manager.

    ``authorize``: every API server authenticates requests and enforces RBAC (agents act
    with the identities the add-on registration issues them; the emulated controllers, the
    in-process hub manager and the admin kubeconfigs are ``system:masters``). ``tls``: https
    with a self-signed certificate (one for all servers), trusted by the kubeconfigs (kubectl
    sends a token only to a TLS server). ``fork_server``: `fl-train` containers are forked
    from one process that has imported the training runtime (``fl_sandbox.jobs.forkserver``),
    the sandbox's cheap container start; False starts every container as a new process.

    ``light`` (default: above ``LIGHT_ABOVE`` clusters) makes each managed cluster cheap
    enough for a thousand on a small machine: its API server serves the OCM kinds without
    their upstream schemas and keeps few request records (``tally`` keeps the counts); its
    agent has no metrics server, renews its lease every minute and re-reads its catalogue
    every minute; status feedback is re-read every minute, the controllers resync every five
    minutes; training processes share ``PROCESSES_PER_CPU`` slots per CPU (not two per
    cluster). What a light fleet does not have is listed in the README (Scale).
    """

    def __init__(
        self,
        *,
        workdir: Path,
        clusters: int = 2,
        crd_dirs: Sequence[Path] = (),
        hub_manager: bool = False,
        agents: bool = False,
        datasets: bool = True,
        authorize: bool = False,
        tls: bool = False,
        addon: bool = True,
        feedback_interval: float = 2.0,
        addon_lease_grace: float | None = None,
        resync_period: float | None = 30.0,
        start_timeout: float = 30.0,
        fork_server: bool = True,
        light: bool | None = None,
    ) -> None:
        if clusters < 1:
            raise ValueError(f"clusters must be at least 1, not {clusters}")
        self.light = clusters > LIGHT_ABOVE if light is None else light
        if self.light:
            feedback_interval = max(feedback_interval, LIGHT_FEEDBACK_INTERVAL)
            if resync_period is not None:
                resync_period = max(resync_period, LIGHT_RESYNC_PERIOD)
        self.workdir = Path(workdir).resolve()
        self.cluster_names = [f"cluster{i}" for i in range(1, clusters + 1)]
        self.crd_dirs = [Path(d) for d in crd_dirs]
        self.hub_manager = hub_manager
        self.agents = agents
        self.datasets = datasets
        self.authorize = authorize
        self.tls = tls
        self.addon = addon
        self.feedback_interval = feedback_interval
        self.addon_lease_grace = addon_lease_grace
        self.resync_period = resync_period
        self.start_timeout = start_timeout
        self.use_fork_server = fork_server
        self.fork_server: ForkServer | None = None
        self.hub_kubeconfig = self.workdir / "hub.kubeconfig"
        self.model_store_dir = self.workdir / "models"
        self.registry = CollectorRegistry()
        self._hub: ApiServer | None = None
        self.spokes: dict[str, ApiServer] = {}
        self._hub_api: KubeApi | None = None
        self.spoke_apis: dict[str, KubeApi] = {}
        self.runtime: Runtime | None = None
        self.installer: AddonInstaller | None = None
        self.registration: Registration | None = None
        self.work_agents: dict[str, WorkAgent] = {}
        self.job_runners: dict[str, Any] = {}
        self._agent_host = _InProcessAgents(self)
        self._agent_kubeconfigs: set[str] = set()
        self._hub_manager_task: asyncio.Task[None] | None = None
        self._started = False
        self._lock = WorkdirLock(self.workdir)

    # -- servers and clients -----------------------------------------------------------

    @property
    def hub(self) -> ApiServer:
        """The hub API server (``request_log``, ``faults``, ``url``, ``write_kubeconfig``)."""
        if self._hub is None:
            raise RuntimeError("the sandbox is not started")
        return self._hub

    @property
    def hub_api(self) -> KubeApi:
        """An admin client of the hub (the one the emulated controllers use)."""
        if self._hub_api is None:
            raise RuntimeError("the sandbox is not started")
        return self._hub_api

    # -- paths -------------------------------------------------------------------------

    def cluster_kubeconfig(self, name: str) -> Path:
        """The admin kubeconfig of a managed cluster."""
        self._check_cluster(name)
        return self.workdir / "clusters" / f"{name}.kubeconfig"

    def agent_hub_kubeconfig(self, name: str, addon: str = keys.ADDON_NAME) -> Path:
        """The hub kubeconfig of the cluster's add-on agent (its per-cluster identity)."""
        self._check_cluster(name)
        return self.workdir / "clusters" / name / f"{addon}-hub.kubeconfig"

    def agent_spoke_kubeconfig(self, name: str) -> Path:
        """The in-process agent's kubeconfig of its own cluster: an admin, as the cluster's
        admin kubeconfig, but under its own user name (``AGENT_SPOKE_USER``), so the API
        server's ``tally`` tells the agent's requests from the emulated controllers'."""
        self._check_cluster(name)
        path = self.workdir / "clusters" / name / "agent-spoke.kubeconfig"
        if name not in self._agent_kubeconfigs:  # once per run: a token lives with its server
            self.spokes[name].write_kubeconfig(path, user=AGENT_SPOKE_USER)
            self._agent_kubeconfigs.add(name)
        return path

    def catalogue_path(self, name: str) -> Path:
        """The cluster's dataset catalogue (agent ``--datasets``)."""
        self._check_cluster(name)
        return self.workdir / "clusters" / name / "datasets.yaml"

    def dataset_dir(self, name: str) -> Path:
        """Where the cluster's digits partition lives (``train.npz``)."""
        self._check_cluster(name)
        return self.workdir / "datasets" / name

    def agent_namespace(self, name: str, addon: str = keys.ADDON_NAME) -> str:
        """The add-on install namespace, from the ManagedClusterAddOn's ``status.namespace``."""
        self._check_cluster(name)
        if self.installer is None:
            raise LookupError("the sandbox is not started")
        mca = self.installer.addons.get(addon, name)
        namespace = ((mca or {}).get("status") or {}).get("namespace")
        if not namespace:
            raise LookupError(
                f"ManagedClusterAddOn {name}/{addon} has no status.namespace yet: is the "
                "add-on enabled (Sandbox(addon=True)) and its ClusterManagementAddOn applied?"
            )
        return str(namespace)

    def set_cluster_reachable(self, name: str, reachable: bool) -> None:
        """Simulate a cluster losing (or regaining) contact with the hub.

        Unreachable: its ManagedCluster turns Available Unknown and gets the NoSelect taint
        ``cluster.open-cluster-management.io/unreachable`` (so placements drop it), its
        add-ons turn Available Unknown, its agent stops and its work agent pauses.
        Reachable again: all of that is undone.
        """
        self._check_cluster(name)
        if self.registration is None or self.installer is None:
            raise RuntimeError("the sandbox is not started")
        self.registration.set_reachable(name, reachable)
        self.work_agents[name].paused = not reachable
        self.installer.enqueue_cluster(name)

    def running_agents(self) -> list[str]:
        """Clusters whose in-process agent is running (``agents=True``)."""
        return self._agent_host.running()

    async def restart_agent(self, name: str, addon: str = keys.ADDON_NAME) -> None:
        """Kill a cluster's in-process agent mid-work and start it again, as a crash would."""
        self._check_cluster(name)
        await self._agent_host.restart(name, addon)

    def _check_cluster(self, name: str) -> None:
        if name not in self.cluster_names:
            raise KeyError(f"no cluster {name!r} in this sandbox ({', '.join(self.cluster_names)})")

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start servers and controllers; return once every cluster is joined and available
        (and, with ``addon=True``, every add-on has its install namespace). SandboxBusy when
        another sandbox runs in ``workdir``."""
        if self._started:
            raise RuntimeError("this sandbox is already started")
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        self._lock.acquire()
        _raise_open_files(FILES_PER_CLUSTER * len(self.cluster_names) + 4096)
        (self.workdir / "clusters").mkdir(parents=True, exist_ok=True)
        self.model_store_dir.mkdir(parents=True, exist_ok=True)
        if self.use_fork_server:  # first: it imports the training runtime meanwhile
            self.fork_server = ForkServer()
            await self.fork_server.start()

        hub = ApiServer(name="hub", crd_dirs=self.crd_dirs, authorize=self.authorize, tls=self.tls)
        self._hub = hub
        if self.light:
            hub.bookmark_interval = LIGHT_BOOKMARK_INTERVAL
        await hub.start()
        hub.write_kubeconfig(self.hub_kubeconfig)
        for name in self.cluster_names:
            server = ApiServer(
                name=name,
                crd_dirs=() if self.light else self.crd_dirs,
                authorize=self.authorize,
                tls=self.tls,
            )
            if self.light:
                server.request_log_limit = LIGHT_REQUEST_LOG
                server.bookmark_interval = LIGHT_BOOKMARK_INTERVAL
            self.spokes[name] = server
            await server.start()
            server.write_kubeconfig(self.cluster_kubeconfig(name))
            (self.workdir / "clusters" / name).mkdir(parents=True, exist_ok=True)

        self._hub_api = await KubeApi.from_kubeconfig(self.hub_kubeconfig)
        for name in self.cluster_names:
            self.spoke_apis[name] = await KubeApi.from_kubeconfig(self.cluster_kubeconfig(name))
        if self.datasets:
            await self._prepare_datasets()

        runtime = Runtime(
            metrics=ControllerMetrics(self.registry), resync_period=self.resync_period
        )
        self.runtime = runtime
        registration = Registration(
            runtime,
            hub=self.hub_api,
            spokes=self.spoke_apis,
            spoke_urls={name: str(self.spokes[name].url) for name in self.cluster_names},
        )
        self.registration = registration
        PlacementController(runtime, hub=self.hub_api)
        for name in self.cluster_names:
            self.work_agents[name] = WorkAgent(
                runtime,
                cluster=name,
                hub=self.hub_api,
                spoke=self.spoke_apis[name],
                hub_url=str(self.hub.url),
                feedback_interval=self.feedback_interval,
            )
        self.installer = AddonInstaller(
            runtime,
            hub=self.hub_api,
            spokes=self.spoke_apis,
            issue_kubeconfig=self.hub.write_kubeconfig,
            kubeconfig_path=lambda cluster, addon: self.agent_hub_kubeconfig(cluster, addon),
            agents=self._agent_host if self.agents else None,
            lease_grace=self.addon_lease_grace,
            cluster_available=registration.available_condition,
        )
        self._add_job_runners(runtime)

        await registration.bootstrap()
        for namespace in HUB_NAMESPACES:
            await self._ensure_namespace(self.hub_api, namespace)
        await runtime.start(sync_timeout=self.start_timeout)
        if self.addon:
            await self._install_addon()
        await self._wait_ready()
        if self.hub_manager:
            self._start_hub_manager()

    async def _prepare_datasets(self) -> None:
        prepare = _import_optional("fl_core.examples.digits", "prepare_cluster_datasets")
        if prepare is None:
            return
        root = self.workdir / "datasets"
        folders = await asyncio.to_thread(prepare, root, clusters=len(self.cluster_names))
        for index, (name, folder) in enumerate(zip(self.cluster_names, folders, strict=True)):
            target = self.dataset_dir(name)
            if Path(folder) != target:
                await asyncio.to_thread(Path(folder).replace, target)
            samples = await asyncio.to_thread(_count_samples, target / "train.npz")
            catalogue = {
                "datasets": [
                    {
                        "name": DATASET_NAME,
                        "hostPath": str(target),
                        "samples": samples,
                        "task": "classification",
                        "features": "x",
                        "labels": "y",
                        # What Flower's simulation gives node i: a Flower app's node_config.
                        "nodeConfig": {
                            "partition-id": index,
                            "num-partitions": len(self.cluster_names),
                        },
                    }
                ]
            }
            text = yaml.safe_dump(catalogue, sort_keys=False)
            await asyncio.to_thread(self.catalogue_path(name).write_text, text)

    def _add_job_runners(self, runtime: Runtime) -> None:
        runner_cls = _import_optional("fl_sandbox.jobrunner", "JobRunner") or _import_optional(
            "fl_sandbox.jobs", "JobRunner"
        )
        if runner_cls is None:
            return
        shared = (
            asyncio.Semaphore(PROCESSES_PER_CPU * (os.cpu_count() or 1)) if self.light else None
        )
        for name in self.cluster_names:
            root = self.workdir / "jobs" / name
            root.mkdir(parents=True, exist_ok=True)
            runner = runner_cls(
                self.spoke_apis[name],
                root=root,
                max_parallel=2,
                pod_credentials=functools.partial(self._service_account_kubeconfig, name),
                fork_server=self.fork_server,
                **({"slots": shared} if shared is not None else {}),
            )
            self.job_runners[name] = runner
            runtime.background(runner.run)

    def _service_account_kubeconfig(self, cluster: str, namespace: str, account: str) -> Path:
        """A Pod's in-cluster identity: its ServiceAccount on its own cluster."""
        path = self.workdir / "serviceaccounts" / cluster / f"{namespace}.{account}.kubeconfig"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.spokes[cluster].write_kubeconfig(
                path,
                user=f"system:serviceaccount:{namespace}:{account}",
                groups=(
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{namespace}",
                    "system:authenticated",
                ),
            )
        return path

    @staticmethod
    async def _ensure_namespace(api: KubeApi, name: str) -> None:
        with contextlib.suppress(Conflict):
            await api.create(r.NAMESPACE, {"metadata": {"name": name}})

    async def _install_addon(self) -> None:
        """Apply the add-on's hub objects and enable it on every cluster, as an admin would
        (``kubectl apply -k addon_templates/``, then ``clusteradm addon enable``)."""
        documents = _addon_documents(ADDON_TEMPLATES_DIR)
        if not any(doc.get("kind") == "ClusterManagementAddOn" for doc in documents):
            log.info(
                "no ClusterManagementAddOn in %s: the add-on is not installed", ADDON_TEMPLATES_DIR
            )
            return
        for doc in documents:
            namespace = (doc.get("metadata") or {}).get("namespace")
            if namespace:
                await self._ensure_namespace(self.hub_api, str(namespace))
        for doc in documents:
            res = r.by_kind(str(doc.get("apiVersion")), str(doc.get("kind")))
            await self.hub_api.apply(res, doc, field_manager=FIELD_MANAGER)
        for doc in documents:
            if doc.get("kind") != "ClusterManagementAddOn":
                continue
            addon = str(doc["metadata"]["name"])
            for cluster in self.cluster_names:
                with contextlib.suppress(Conflict):
                    await self.hub_api.create(
                        r.MANAGED_CLUSTER_ADDON,
                        {
                            "metadata": {"name": addon, "namespace": cluster},
                            "spec": {},
                        },
                    )

    async def _wait_ready(self) -> None:
        assert self.installer is not None
        hub = self.hub_api
        names = set(self.cluster_names)

        async def clusters_available() -> set[str] | None:
            listed = await hub.list(r.MANAGED_CLUSTER)
            ready = {
                str(c["metadata"]["name"])
                for c in listed.items
                if cond.is_true((c.get("status") or {}).get("conditions"), "ManagedClusterJoined")
                and cond.is_true(
                    (c.get("status") or {}).get("conditions"), "ManagedClusterConditionAvailable"
                )
            }
            return ready if names <= ready else None

        joined: set[str] = await wait_for(
            clusters_available,
            timeout=self.start_timeout,
            message="managed clusters did not become available",
        )
        installer = self.installer

        def addons_installed() -> bool:
            for addon in installer.addons.list():
                meta = addon.get("metadata") or {}
                if meta.get("namespace") not in names:
                    continue
                cma = installer.cmas.get(str(meta.get("name")))
                if cma is None:
                    continue
                if not (addon.get("status") or {}).get("namespace"):
                    return False
            return True

        installed: bool = await wait_for(
            addons_installed,
            timeout=self.start_timeout,
            message="add-ons did not get their install namespace",
        )
        log.info(
            "sandbox ready: clusters %s joined, add-ons installed: %s", sorted(joined), installed
        )

    def _start_hub_manager(self) -> None:
        run = _import_optional("hub_manager.app", "run_hub_manager")
        settings_cls = _import_optional("hub_manager.settings", "HubSettings")
        if run is None or settings_cls is None:
            return
        settings = settings_cls(
            kubeconfig=str(self.hub_kubeconfig),
            leader_election=True,
            # Jobs without spec.server.storage use this folder by its real path, so the hub,
            # the agents' checks and the training processes all read and write the same files.
            default_store_path=str(self.model_store_dir),
            metrics_bind_address="127.0.0.1:0",
        )
        self._hub_manager_task = asyncio.create_task(
            _logged(run(settings), "hub manager"), name="hub-manager"
        )

    async def stop(self) -> None:
        """Stop agents, hub manager, controllers, Job runners and servers; idempotent."""
        if self._hub_manager_task is not None:
            await _cancel(self._hub_manager_task)
            self._hub_manager_task = None
        if self.runtime is not None:  # first: no controller may start an agent after this
            await self.runtime.stop()
            self.runtime = None
        await self._agent_host.stop()
        for runner in self.job_runners.values():
            stop = getattr(runner, "stop", None)
            if stop is not None:
                result = stop()
                if asyncio.iscoroutine(result):
                    await result
        self.job_runners.clear()
        if self.fork_server is not None:
            await self.fork_server.stop()
            self.fork_server = None
        apis = [self._hub_api, *self.spoke_apis.values()]
        self._hub_api = None
        self.spoke_apis = {}
        for api in apis:
            if api is not None:
                await api.close()
        servers = [*self.spokes.values(), self._hub]
        self.spokes = {}
        self._hub = None
        for server in servers:
            if server is not None:
                await server.stop()
        self._lock.release()


def _raise_open_files(wanted: int) -> None:
    """Allow this process ``wanted`` open files if it may (the soft limit up to the hard
    one; the hard one too where permitted): a thousand clusters in one process, with both
    ends of every connection, need tens of thousands."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, soft), max(wanted, hard)))
    except (ValueError, OSError):
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.warning("open files limited to %s where %d may be needed", hard, wanted)


def _count_samples(path: Path) -> int:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return int(data["y"].shape[0])


def _addon_documents(folder: Path) -> list[dict[str, Any]]:
    """The objects in the add-on's YAML files (kustomization and non-objects skipped)."""
    if not folder.is_dir():
        return []
    documents: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.load_all(path.read_text(), Loader=_YAML_LOADER):
            if isinstance(doc, dict) and doc.get("kind") and doc.get("apiVersion"):
                try:
                    r.by_kind(str(doc["apiVersion"]), str(doc["kind"]))
                except KeyError:
                    log.info("%s: %s is not served by the sandbox; skipped", path, doc["kind"])
                    continue
                documents.append(doc)
    return documents


__all__ = ["DEFAULT_INSTALL_NAMESPACE", "Sandbox", "SandboxBusy"]
