"""Emulated add-on install for template-based add-ons, as OCM's addon-manager and the
klusterlet's add-on registration do it.

For each ManagedClusterAddOn whose ClusterManagementAddOn supports ``addontemplates``:
resolve its AddOnDeploymentConfig (install namespace, customized variables), issue the
agent's per-cluster hub identity (KubeClient registration) as a kubeconfig, put it in the
Secret ``<addon>-hub-kubeconfig`` in the install namespace on the spoke (and in a file),
start the agent through an ``AgentHost``, and report ``status.namespace``,
``status.registrations``, ``configReferences`` and the conditions ``Configured``,
``RegistrationApplied``, ``ManifestApplied`` and ``Available``. ``Available`` follows the
agent's Lease (named after the add-on, in the install namespace on the spoke): True while
it is renewed within the grace period, False once it goes stale, Unknown before it exists.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from fl_kube import Conflict, Informer, KubeApi, NotFound, Result
from fl_kube import resources as r
from fl_kube.timestamps import parse_time
from fl_sandbox.ocm import addonconfig
from fl_sandbox.ocm import conditions as cond
from fl_sandbox.ocm.addon_deploy import (
    ADDON_NAME_LABEL,
    PRE_DELETE_FINALIZER,
    AgentWorks,
    RenderError,
    deploy_work,
    deploy_work_name,
    hook_completed,
    hook_work_name,
    registration_namespace,
    render_agent_spec,
)
from fl_sandbox.ocm.addon_strategy import InstallStrategy
from fl_sandbox.ocm.runtime import Runtime
from fl_sandbox.ocm.workagent import contains

log = logging.getLogger(__name__)

KUBE_CLIENT_SIGNER: Final = "kubernetes.io/kube-apiserver-client"
LEASE_GRACE_FACTOR: Final = 5  # upstream: stale after 5 x leaseDurationSeconds

Key = tuple[str, str]  # (cluster, add-on name)
IssueKubeconfig = Callable[..., Path]  # (path, *, user, groups) -> path


def _progressing(manifest_applied: Mapping[str, Any]) -> dict[str, Any]:
    """``Progressing`` as the addon-manager derives it from the deploy work."""
    if manifest_applied["status"] == "True":
        return cond.condition(
            "Progressing", False, reason="Completed", message="completed with no errors."
        )
    if manifest_applied["reason"] in ("ManifestWorkApplyFailed", "AddonManifestRenderFailed"):
        return cond.condition(
            "Progressing", False, reason="Failed", message=str(manifest_applied["message"])
        )
    return cond.condition(
        "Progressing", True, reason="Progressing", message="progressing... work is not ready"
    )


class AgentHost(Protocol):
    """Runs (or stops) the add-on's agent for a cluster; the sandbox runs it in process."""

    async def ensure(
        self, *, cluster: str, addon: str, namespace: str, hub_kubeconfig: Path
    ) -> None:
        """Run the agent with these settings, restarting it if they changed."""

    async def remove(self, *, cluster: str, addon: str) -> None:
        """Stop the agent if it runs."""


def agent_user(cluster: str, addon: str) -> str:
    """The agent's hub user name (template add-ons: ``<addon>-agent`` service account)."""
    return f"system:open-cluster-management:cluster:{cluster}:addon:{addon}:agent:{addon}-agent"


def agent_groups(cluster: str, addon: str) -> list[str]:
    """The agent's hub groups: per cluster, add-on wide, authenticated."""
    return [
        f"system:open-cluster-management:cluster:{cluster}:addon:{addon}",
        f"system:open-cluster-management:addon:{addon}",
        "system:authenticated",
    ]


def hub_kubeconfig_secret_name(addon: str) -> str:
    return f"{addon}-hub-kubeconfig"


@dataclass
class _Installed:
    namespace: str
    kubeconfig: Path


class AddonInstaller:
    """Installs template-based add-ons on every cluster and reports their health."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        hub: KubeApi,
        spokes: Mapping[str, KubeApi],
        issue_kubeconfig: IssueKubeconfig,
        kubeconfig_path: Callable[[str, str], Path],
        agents: AgentHost | None = None,
        lease_grace: float | None = None,
        cluster_available: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        self._hub = hub
        self._spokes = dict(spokes)
        self._issue = issue_kubeconfig
        self._kubeconfig_path = kubeconfig_path
        self._agents = agents
        self._lease_grace = lease_grace
        self._cluster_available = cluster_available
        self._installed: dict[Key, _Installed] = {}
        self._recheck_at: dict[Key, float] = {}  # when a reconcile looks at the lease again
        self.addons = runtime.informer(hub, r.MANAGED_CLUSTER_ADDON)
        self.cmas = runtime.informer(hub, r.CLUSTER_MANAGEMENT_ADDON)
        self.configs = runtime.informer(hub, r.ADDON_DEPLOYMENT_CONFIG)
        self.templates = runtime.informer(hub, r.ADDON_TEMPLATE)
        self.works = runtime.informer(hub, r.MANIFEST_WORK, label_selector=ADDON_NAME_LABEL)
        self.leases: dict[str, Informer] = {
            name: runtime.informer(api, r.LEASE) for name, api in self._spokes.items()
        }
        self.controller = runtime.controller("addon-install", self._reconcile, workers=2)
        runtime.on(self.addons, self._on_addon)
        runtime.on(self.cmas, self._enqueue_all)
        runtime.on(self.configs, self._enqueue_all)
        runtime.on(self.templates, self._enqueue_all)
        runtime.on(self.works, self._on_work)
        self.strategy = InstallStrategy(runtime, hub=hub, addons=self.addons, cmas=self.cmas)
        runtime.on(self.strategy.decisions, self._enqueue_all)
        for cluster, informer in self.leases.items():
            runtime.on(informer, self._lease_handler(cluster))

    def enqueue_cluster(self, cluster: str) -> None:
        """Look at every add-on of one cluster again (e.g. it became unreachable)."""
        for addon in self.addons.list():
            if (addon.get("metadata") or {}).get("namespace") == cluster:
                self._on_addon("", addon)

    def _on_work(self, _type: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        addon = (meta.get("labels") or {}).get(ADDON_NAME_LABEL)
        if addon:
            self.controller.enqueue((str(meta.get("namespace")), str(addon)))

    def _on_addon(self, _type: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.controller.enqueue((str(meta.get("namespace")), str(meta.get("name"))))

    def _enqueue_all(self, _type: str, _obj: dict[str, Any]) -> None:
        for addon in self.addons.list():
            self._on_addon("", addon)

    def _lease_handler(self, cluster: str) -> Callable[[str, dict[str, Any]], None]:
        def handler(_type: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            name = str(meta.get("name"))
            mca = self.addons.get(name, cluster)
            if mca is None:
                return
            # A renewal that leaves Available as it is changes nothing: the reconcile that
            # wrote it looks again when the lease would go stale. Only a change of health, or
            # a lease that now goes stale sooner than that, is worth a whole reconcile (with
            # a fleet, renewals are most of the events).
            health, recheck = self._health(cluster, name, str(meta.get("namespace") or ""))
            written = cond.find((mca.get("status") or {}).get("conditions"), "Available")
            due = self._recheck_at.get((cluster, name))
            if (
                written is None
                or (written.get("status"), written.get("reason"))
                != (health["status"], health["reason"])
                or (recheck is not None and (due is None or time.monotonic() + recheck < due))
            ):
                self.controller.enqueue((cluster, name))

        return handler

    async def _reconcile(self, key: Key) -> Result | None:
        cluster, name = key
        if cluster not in self._spokes:
            return None
        mca = self.addons.get(name, cluster)
        if mca is None:
            await self._uninstall(key)
            return None
        cma = self.cmas.get(name)
        if (mca.get("metadata") or {}).get("deletionTimestamp"):
            return await self._delete(key, mca, cma)
        if cma is None or not addonconfig.uses_template(cma):
            return None
        cluster_available = self._cluster_available(cluster) if self._cluster_available else None
        if cluster_available is not None and cluster_available["status"] == "Unknown":
            # As the hub's add-on health check: an unknown cluster makes its add-ons unknown;
            # its agent is down with it.
            if self._agents is not None:
                await self._agents.remove(cluster=cluster, addon=name)
            await self._write_condition(mca, cma, dict(cluster_available, type="Available"))
            return None
        resolved = await self._resolve(mca, cma)
        if resolved is None:
            return None
        template_ref, config_ref, deployment_config, settings = resolved
        template = self.templates.get(template_ref.name) if template_ref is not None else None
        namespace = (
            registration_namespace(template, settings.configured_namespace)
            if template is not None
            else settings.install_namespace
        )
        works, render_error = self._render(mca, template, settings)
        if works is not None and works.hook is not None and await self._add_hook_finalizer(mca):
            return None  # the write brings the add-on back with the finalizer
        kubeconfig = await self._install(cluster, name, namespace)
        available, requeue = self._health(cluster, name, namespace)
        if requeue is None:
            self._recheck_at.pop(key, None)
        else:
            self._recheck_at[key] = time.monotonic() + requeue
        # Everything is in place before status.namespace tells the world the add-on is there.
        await self._bind_hub_permissions(mca, template)
        if self._agents is not None:
            await self._agents.ensure(
                cluster=cluster, addon=name, namespace=namespace, hub_kubeconfig=kubeconfig
            )
        manifest_applied = await self._deploy(mca, template, works, render_error)
        done = manifest_applied["status"] == "True"
        refs: list[dict[str, Any]] = []
        if template_ref is not None:
            refs.append(template_ref.reference(applied=done))
        if config_ref is not None and deployment_config is not None:
            spec_hash = addonconfig.spec_hash(deployment_config)
            refs.append(config_ref.reference(spec_hash, applied=done))
        await self._write_status(
            mca,
            cma,
            namespace=namespace,
            refs=refs,
            updates=[
                cond.condition(
                    "Configured",
                    True,
                    reason="ConfigurationsConfigured",
                    message="Configurations configured",
                ),
                cond.condition(
                    "RegistrationApplied",
                    True,
                    reason="SetPermissionApplied",
                    message="Registration of the addon agent is configured",
                ),
                manifest_applied,
                _progressing(manifest_applied),
                available,
            ],
        )
        return Result(requeue_after=requeue) if requeue is not None else None

    async def _resolve(
        self, mca: dict[str, Any], cma: Mapping[str, Any]
    ) -> (
        tuple[
            addonconfig.ConfigRef | None,
            addonconfig.ConfigRef | None,
            dict[str, Any] | None,
            addonconfig.AddonSettings,
        ]
        | None
    ):
        """The add-on's template and deployment config refs, the config and its settings;
        None (with ``Configured=False`` written) when a named config does not exist."""
        cluster = str((mca.get("metadata") or {}).get("namespace"))
        template_ref = addonconfig.resolve_config(
            group=addonconfig.ADDON_GROUP,
            resource=addonconfig.TEMPLATES,
            mca=mca,
            cma=cma,
            placement_configs=self.strategy.placement_configs(cma, cluster),
        )
        config_ref = addonconfig.resolve_config(
            group=addonconfig.ADDON_GROUP,
            resource=addonconfig.DEPLOYMENT_CONFIGS,
            mca=mca,
            cma=cma,
            placement_configs=self.strategy.placement_configs(cma, cluster),
        )
        deployment_config = None
        if config_ref is not None:
            deployment_config = self.configs.get(config_ref.name, config_ref.namespace or None)
            if deployment_config is None:
                await self._write_condition(
                    mca,
                    cma,
                    cond.condition(
                        "Configured",
                        False,
                        reason="ConfigurationNotFound",
                        message=f"AddOnDeploymentConfig {config_ref.namespace}/"
                        f"{config_ref.name} does not exist: create it or change "
                        "spec.configs",
                    ),
                )
                return None
        settings = addonconfig.settings_from(deployment_config)
        return template_ref, config_ref, deployment_config, settings

    @staticmethod
    def _render(
        mca: Mapping[str, Any],
        template: Mapping[str, Any] | None,
        settings: addonconfig.AddonSettings,
    ) -> tuple[AgentWorks | None, str | None]:
        if template is None:
            return None, None
        meta = mca.get("metadata") or {}
        try:
            works = render_agent_spec(
                template,
                cluster=str(meta.get("namespace")),
                addon=str(meta.get("name")),
                configured_namespace=settings.configured_namespace,
                variables=settings.variables,
            )
        except RenderError as exc:
            return None, str(exc)
        return works, None

    async def _add_hook_finalizer(self, mca: Mapping[str, Any]) -> bool:
        """Add the pre-delete hook finalizer, as the addon-manager does; True if it wrote."""
        meta = mca.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if PRE_DELETE_FINALIZER in finalizers:
            return False
        with contextlib.suppress(NotFound, Conflict):
            await self._hub.replace(
                r.MANAGED_CLUSTER_ADDON,
                dict(mca, metadata=dict(meta, finalizers=[*finalizers, PRE_DELETE_FINALIZER])),
            )
        return True

    async def _delete(
        self, key: Key, mca: dict[str, Any], cma: Mapping[str, Any] | None
    ) -> Result | None:
        """A deleted add-on: run its pre-delete hook (the agent keeps running meanwhile),
        then let it go; without a hook, uninstall at once."""
        meta = mca.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if PRE_DELETE_FINALIZER not in finalizers:
            await self._uninstall(key)
            return None
        works = None
        if cma is not None and addonconfig.uses_template(cma):
            resolved = await self._resolve(mca, cma)
            if resolved is not None and resolved[0] is not None:
                template = self.templates.get(resolved[0].name)
                works, _ = self._render(mca, template, resolved[3])
        if works is None or works.hook is None:
            await self._remove_finalizer(mca, finalizers)
            return None
        name = hook_work_name(key[1])
        work = self.works.get(name, key[0])
        if work is None:
            with contextlib.suppress(Conflict):
                work = await self._hub.create(
                    r.MANIFEST_WORK, deploy_work(mca, works.hook, name=name)
                )
        if hook_completed(work):
            await self._remove_finalizer(mca, finalizers)
            return None
        if cma is not None:
            await self._write_condition(
                mca,
                cma,
                cond.condition(
                    "HookManifestCompleted",
                    False,
                    reason="HookManifestIsNotCompleted",
                    message=f"hook manifestWork {name} is not completed.",
                ),
            )
        return None  # the hook work's status changes bring it back

    async def _remove_finalizer(self, mca: Mapping[str, Any], finalizers: list[str]) -> None:
        meta = mca.get("metadata") or {}
        remaining = [f for f in finalizers if f != PRE_DELETE_FINALIZER]
        with contextlib.suppress(NotFound):
            await self._hub.replace(
                r.MANAGED_CLUSTER_ADDON, dict(mca, metadata=dict(meta, finalizers=remaining))
            )

    async def _install(self, cluster: str, addon: str, namespace: str) -> Path:
        spoke = self._spokes[cluster]
        key = (cluster, addon)
        previous = self._installed.get(key)
        if previous is not None and previous.namespace != namespace:
            await self._delete_secret(cluster, addon, previous.namespace)
        if previous is None or previous.namespace != namespace:
            with contextlib.suppress(Conflict):
                await spoke.create(r.NAMESPACE, {"metadata": {"name": namespace}})
        path = self._kubeconfig_path(cluster, addon)
        if previous is None or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(
                self._issue,
                path,
                user=agent_user(cluster, addon),
                groups=agent_groups(cluster, addon),
            )
        content = await asyncio.to_thread(path.read_bytes)
        data = {
            "kubeconfig": base64.b64encode(content).decode(),
            "cluster-name": base64.b64encode(cluster.encode()).decode(),
            "addon-name": base64.b64encode(addon.encode()).decode(),
        }
        secret_name = hub_kubeconfig_secret_name(addon)
        existing = await spoke.get_or_none(r.SECRET, secret_name, namespace=namespace)
        if existing is None:
            await spoke.create(
                r.SECRET,
                {
                    "metadata": {"name": secret_name, "namespace": namespace},
                    "type": "Opaque",
                    "data": data,
                },
                namespace=namespace,
            )
        elif existing.get("data") != data:
            await spoke.replace(r.SECRET, dict(existing, data=data), namespace=namespace)
        self._installed[key] = _Installed(namespace=namespace, kubeconfig=path)
        return path

    async def _deploy(
        self,
        mca: Mapping[str, Any],
        template: Mapping[str, Any] | None,
        works: AgentWorks | None,
        render_error: str | None,
    ) -> dict[str, Any]:
        """Keep the deploy ManifestWork rendered; ``ManifestApplied`` from its status."""
        meta = mca.get("metadata") or {}
        cluster, addon = str(meta.get("namespace")), str(meta.get("name"))
        if template is None:
            return cond.condition(
                "ManifestApplied",
                False,
                reason="AddOnTemplateNotFound",
                message=f"no AddOnTemplate for add-on {addon}: apply it, or fix the "
                "ClusterManagementAddOn's addontemplates default config",
            )
        if works is None:
            return cond.condition(
                "ManifestApplied",
                False,
                reason="AddonManifestRenderFailed",
                message=str(render_error),
            )
        spec = works.deploy
        name = deploy_work_name(addon)
        work = self.works.get(name, cluster)
        if work is None:
            with contextlib.suppress(Conflict):
                work = await self._hub.create(r.MANIFEST_WORK, deploy_work(mca, spec))
        elif not contains(spec, work.get("spec")):  # the server may add defaults
            work = await self._hub.replace(r.MANIFEST_WORK, dict(work, spec=spec))
        status = (work or {}).get("status") or {}
        applied = cond.find(status.get("conditions"), "Applied")
        current = (
            work is not None
            and applied is not None
            and applied.get("observedGeneration") == (work.get("metadata") or {}).get("generation")
        )
        if current and applied and applied.get("status") == "True":
            return cond.condition(
                "ManifestApplied",
                True,
                reason="AddonManifestApplied",
                message="manifests of addon are applied successfully",
            )
        if current and applied:
            return cond.condition(
                "ManifestApplied",
                False,
                reason="ManifestWorkApplyFailed",
                message=f"ManifestWork {name}: {applied.get('message', '')}",
            )
        return cond.condition(
            "ManifestApplied",
            False,
            reason="ManifestWorkNotApplied",
            message=f"ManifestWork {name} is not applied yet",
        )

    async def _bind_hub_permissions(
        self, mca: Mapping[str, Any], template: Mapping[str, Any] | None
    ) -> None:
        """RoleBindings for the template's ``hubPermissions``, as the addon-manager makes."""
        if template is None:
            return
        meta = mca.get("metadata") or {}
        cluster, addon = str(meta.get("namespace")), str(meta.get("name"))
        subjects = [
            {
                "kind": "User",
                "apiGroup": "rbac.authorization.k8s.io",
                "name": agent_user(cluster, addon),
            }
        ] + [
            {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": group}
            for group in agent_groups(cluster, addon)
            if group != "system:authenticated"
        ]
        for registration in (template.get("spec") or {}).get("registration") or []:
            if registration.get("type") != "KubeClient":
                continue
            for permission in (registration.get("kubeClient") or {}).get("hubPermissions") or []:
                owner: list[dict[str, Any]] = []
                if permission.get("type") == "CurrentCluster":
                    role_name = (permission.get("currentCluster") or {}).get("clusterRoleName")
                    if not role_name:
                        continue
                    namespace = cluster
                    role_ref = {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role_name,
                    }
                    owner = [
                        {
                            "apiVersion": r.MANAGED_CLUSTER_ADDON.api_version,
                            "kind": "ManagedClusterAddOn",
                            "name": addon,
                            "uid": meta.get("uid"),
                        }
                    ]
                elif permission.get("type") == "SingleNamespace":
                    single = permission.get("singleNamespace") or {}
                    namespace = str(single.get("namespace") or "")
                    role_ref = dict(single.get("roleRef") or {})
                    if not namespace or not role_ref.get("name"):
                        continue
                else:
                    continue
                await self._ensure_binding(
                    namespace=namespace,
                    name=f"open-cluster-management:{addon}:{str(role_ref.get('kind')).lower()}:agent",
                    body={
                        "metadata": {
                            "labels": {
                                "addon.open-cluster-management.io/name": addon,
                                "open-cluster-management.io/addon-template-name": "",
                            },
                            "ownerReferences": owner,
                        },
                        "roleRef": role_ref,
                        "subjects": subjects,
                    },
                )

    async def _ensure_binding(self, *, namespace: str, name: str, body: dict[str, Any]) -> None:
        existing = await self._hub.get_or_none(r.ROLE_BINDING, name, namespace=namespace)
        if existing is None:
            body["metadata"].update(name=name, namespace=namespace)
            if not body["metadata"]["ownerReferences"]:
                del body["metadata"]["ownerReferences"]
            with contextlib.suppress(Conflict):
                await self._hub.create(r.ROLE_BINDING, body, namespace=namespace)
            return
        if existing.get("roleRef") != body["roleRef"]:
            await self._hub.delete(
                r.ROLE_BINDING, name, namespace=namespace
            )  # roleRef is immutable
            return await self._ensure_binding(namespace=namespace, name=name, body=body)
        if existing.get("subjects") != body["subjects"]:
            await self._hub.replace(
                r.ROLE_BINDING, dict(existing, subjects=body["subjects"]), namespace=namespace
            )
        return None

    async def _delete_secret(self, cluster: str, addon: str, namespace: str) -> None:
        await self._spokes[cluster].delete(
            r.SECRET, hub_kubeconfig_secret_name(addon), namespace=namespace
        )

    async def _uninstall(self, key: Key) -> None:
        cluster, addon = key
        installed = self._installed.pop(key, None)
        if self._agents is not None:
            await self._agents.remove(cluster=cluster, addon=addon)
        if installed is not None:
            await self._delete_secret(cluster, addon, installed.namespace)

    def _health(
        self, cluster: str, addon: str, namespace: str
    ) -> tuple[dict[str, Any], float | None]:
        """``Available`` from the agent's Lease, and when to look again if nothing changes."""
        lease = self.leases[cluster].get(addon, namespace)
        if lease is None:
            return (
                cond.condition(
                    "Available",
                    "Unknown",
                    reason="ManagedClusterAddOnLeaseNotFound",
                    message=f"The status of {addon} add-on is unknown.",
                ),
                None,
            )
        spec = lease.get("spec") or {}
        renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
        duration = float(spec.get("leaseDurationSeconds") or 60)
        grace = (
            self._lease_grace if self._lease_grace is not None else LEASE_GRACE_FACTOR * duration
        )
        now = dt.datetime.now(dt.UTC)
        if renewed is not None:
            left = (renewed + dt.timedelta(seconds=grace) - now).total_seconds()
            if left > 0:
                return (
                    cond.condition(
                        "Available",
                        True,
                        reason="ManagedClusterAddOnLeaseUpdated",
                        message=f"{addon} add-on is available.",
                    ),
                    left + 0.05,
                )
        return (
            cond.condition(
                "Available",
                False,
                reason="ManagedClusterAddOnLeaseUpdateStopped",
                message=f"{addon} add-on is not available.",
            ),
            None,
        )

    async def _write_condition(
        self, mca: dict[str, Any], cma: Mapping[str, Any], condition: dict[str, Any]
    ) -> None:
        """Set one condition, leaving the rest of the status as it is."""
        await self._write_status(mca, cma, namespace=None, refs=[], updates=[condition])

    async def _write_status(
        self,
        mca: dict[str, Any],
        cma: Mapping[str, Any],
        *,
        namespace: str | None,
        refs: list[dict[str, Any]],
        updates: list[dict[str, Any]],
    ) -> None:
        meta = mca.get("metadata") or {}
        cluster, addon = str(meta.get("namespace")), str(meta.get("name"))
        old = mca.get("status") or {}
        status = dict(old)
        if namespace is not None:
            previous = {
                (ref.get("group"), ref.get("resource")): ref
                for ref in old.get("configReferences") or []
            }
            for ref in refs:  # keep the last applied config until the new one is applied
                last = previous.get((ref["group"], ref["resource"]), {}).get("lastAppliedConfig")
                if "lastAppliedConfig" not in ref and last:
                    ref["lastAppliedConfig"] = last
            status["namespace"] = namespace
            status["registrations"] = [
                {
                    "signerName": KUBE_CLIENT_SIGNER,
                    "subject": {
                        "user": agent_user(cluster, addon),
                        "groups": agent_groups(cluster, addon),
                    },
                }
            ]
            status["healthCheck"] = {"mode": "Lease"}
            status["configReferences"] = refs
        supported = [
            {"group": s.get("group") or "", "resource": s.get("resource")}
            for s in (cma.get("spec") or {}).get("supportedConfigs") or []
        ]
        if supported:
            status["supportedConfigs"] = supported
        add_on_meta = (cma.get("spec") or {}).get("addOnMeta")
        if add_on_meta:
            status["addOnMeta"] = add_on_meta
        status["conditions"] = cond.set_conditions(old.get("conditions"), updates)
        if status == old:
            return
        with contextlib.suppress(NotFound):
            await self._hub.replace(
                r.MANAGED_CLUSTER_ADDON, dict(mca, status=status), subresource="status"
            )
