"""ApiServer: one emulated kube-apiserver (aiohttp on loopback) per emulated cluster."""

from __future__ import annotations

import base64
import copy
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import errors
from .auth import ANONYMOUS, Authenticator, Authorizer, Identity
from .builtin_types import BUILTIN_TYPES, OCM_TYPES, ResourceType
from .crds import CRD_GROUP, crd_types, load_crd_files
from .errors import ApiError
from .faults import FaultInjector
from .gc import GarbageCollector
from .registry import GroupResource, TypeRegistry
from .resources import NAMESPACES, Resources, Target, WriteOptions
from .routes import IDENTITY, LOG, Routes
from .schema import apply_defaults
from .store import Obj, Store
from .tls import self_signed

log = logging.getLogger(__name__)

CRD_GR = (CRD_GROUP, "customresourcedefinitions")
REPO_CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    status: int
    user: str
    resource: str = ""  # plural ("" for discovery and other non-resource paths)
    verb: str = ""  # get, list, watch, create, update, patch, delete, deletecollection


@dataclass
class RequestTally:
    """Requests (and bytes of request bodies) by (user, verb, resource) since the start: a
    fixed-size summary kept whatever ``request_log_limit`` drops."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    body_bytes: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def add(self, user: str, verb: str, resource: str, body_bytes: int) -> None:
        key = (user, verb, resource)
        self.requests[key] += 1
        if body_bytes:
            self.body_bytes[key] += body_bytes


def _synthetic_crd(t: ResourceType) -> Obj:
    """A schema-less CRD for an OCM kind served without its upstream file."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": t.crd_name},
        "spec": {
            "group": t.group,
            "names": {
                "plural": t.plural,
                "singular": t.singular,
                "kind": t.kind,
                "listKind": t.list_kind,
                **({"shortNames": list(t.short_names)} if t.short_names else {}),
            },
            "scope": "Namespaced" if t.namespaced else "Cluster",
            "versions": [
                {
                    "name": t.version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                    **({"subresources": {"status": {}}} if t.status_subresource else {}),
                }
            ],
        },
    }


class ApiServer:
    """An emulated Kubernetes API server; see the package docstring for what it reproduces."""

    def __init__(
        self,
        *,
        name: str,
        crd_dirs: Sequence[Path] = (),
        history_limit: int = 10000,
        authorize: bool = False,
        tls: bool = False,
    ) -> None:
        self.name = name
        self.authorize = authorize
        self.tls = tls  # serve https with a self-signed certificate (kubectl then sends tokens)
        self._ca_pem: bytes | None = None
        self._tls_dir: Path | None = None
        self.url = ""
        self.request_log: list[RequestRecord] = []
        self.request_log_limit = 200_000  # the oldest half is dropped beyond this
        self.tally = RequestTally()
        self.store = Store(history_limit=history_limit)
        self.registry = TypeRegistry()
        self.resources = Resources(store=self.store, on_write=self._after_write)
        self.gc = GarbageCollector(
            store=self.store,
            type_of=self.registry.preferred,
            delete=self.resources.begin_delete,
            remove=self.resources.remove,
            drop_finalizer=self.resources.drop_finalizer,
        )
        self.faults = FaultInjector(store=self.store, drop_watches=self._drop_watches)
        self._authn = Authenticator()
        self._authz = Authorizer(self.store)
        self.routes = Routes(
            registry=self.registry,
            store=self.store,
            resources=self.resources,
            authorizer=self._authz,
            authorize=authorize,
        )
        self._runner: web.AppRunner | None = None
        self.registry.add(BUILTIN_TYPES)
        self._load_crds(crd_dirs)
        for ns in DEFAULT_NAMESPACES:
            self._seed(
                NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )

    # ---- bootstrapping ----
    def _seed(self, gr: GroupResource, body: Obj) -> Obj:
        rtype = self.registry.preferred(gr)
        assert rtype is not None
        ns = body["metadata"].get("namespace")
        return self.resources.create(Target(rtype, ns, None), body, WriteOptions("kube-apiserver"))

    def _load_crds(self, crd_dirs: Sequence[Path]) -> None:
        # The OCM kinds get a schema-less CRD (root preserves unknown fields, so nothing is
        # pruned or checked) unless their upstream file is given.
        docs: dict[str, Obj] = {t.crd_name: _synthetic_crd(t) for t in OCM_TYPES}
        for doc in load_crd_files(crd_dirs):
            docs[doc["metadata"]["name"]] = doc
        if REPO_CRDS.is_dir():
            for doc in load_crd_files([REPO_CRDS]):
                docs[doc["metadata"]["name"]] = doc
        for name, doc in docs.items():
            body = dict(doc)
            body["metadata"] = {"name": name}
            body.pop("status", None)
            self._seed(CRD_GR, body)

    # ---- reactions to writes ----
    def _after_write(self, rtype: ResourceType, old: Obj | None, new: Obj | None) -> None:
        gr = rtype.group_resource
        if gr == CRD_GR:
            self._crd_changed(old, new)
        if new is None and old is not None:
            self.gc.something_removed()
            uid = old["metadata"].get("uid")
            if uid:
                self.gc.owner_gone(uid)
            ns = old["metadata"].get("namespace")
            if ns:
                self.gc.namespace_changed(ns)
        elif new is not None:
            if gr == NAMESPACES and new["metadata"].get("deletionTimestamp"):
                self.gc.namespace_changed(new["metadata"]["name"])
            if "foregroundDeletion" in (new["metadata"].get("finalizers") or []) and new[
                "metadata"
            ].get("deletionTimestamp"):
                self.gc.foreground(new["metadata"]["uid"])
            if old is None and new["metadata"].get("ownerReferences"):
                self.gc.check_owners_of(new)

    def _crd_changed(self, old: Obj | None, new: Obj | None) -> None:
        source = new if new is not None else old
        assert source is not None
        spec = source["spec"]
        gr = (spec["group"], spec["names"]["plural"])
        if new is None or new["metadata"].get("deletionTimestamp"):
            self.registry.remove_group_resource(gr)
            for obj in self.store.items(gr):
                self.store.remove(gr, obj)
            return
        types = crd_types(new, validate=True)
        self.registry.replace_group_resource(gr, types)
        if old is not None and types and types[0].schema is not None:
            # kube-apiserver defaults on read: stored objects show new defaults at once,
            # without a write (same resourceVersion, no watch event).
            for obj in self.store.items(gr):
                defaulted = apply_defaults(copy.deepcopy(obj), types[0].schema, root=True)
                if defaulted != obj:
                    self.store.replace_quietly(gr, defaulted)

    def _drop_watches(self) -> int:
        streams = list(self.routes.streams)
        for s in streams:
            s.drop()
        return len(streams)

    # ---- lifecycle ----
    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.routes.dispatch)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        context = None
        if self.tls:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="fl-apiserver-tls-"))
            context, self._ca_pem = await self_signed(self._tls_dir, host=host)
        site = web.TCPSite(self._runner, host, port, ssl_context=context)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        assert sockets
        bound = int(sockets[0].getsockname()[1])
        self.url = f"{'https' if self.tls else 'http'}://{host}:{bound}"
        self.gc.start()
        return self.url

    async def stop(self) -> None:
        self._drop_watches()
        await self.gc.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None

    def write_kubeconfig(
        self, path: Path, *, user: str = "admin", groups: Sequence[str] = ("system:masters",)
    ) -> Path:
        """A kubeconfig for this server with a bearer token for (user, groups)."""
        if not self.url:
            raise RuntimeError("start() the server before writing a kubeconfig for it")
        token = self._authn.issue(user, groups)
        cluster: dict[str, str] = {"server": self.url}
        if self._ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self._ca_pem).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.name, "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": self.name,
                    "context": {"cluster": self.name, "user": user, "namespace": "default"},
                }
            ],
            "current-context": self.name,
            "preferences": {},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh, sort_keys=False)
        return path

    @property
    def bookmark_interval(self) -> float:
        """Seconds between BOOKMARK events on watches that allow them (default 10)."""
        return self.routes.bookmark_interval

    @bookmark_interval.setter
    def bookmark_interval(self, seconds: float) -> None:
        self.routes.bookmark_interval = seconds

    @property
    def open_watches(self) -> int:
        """Watch streams open right now (watch requests enter request_log when they end)."""
        return len(self.routes.streams)

    def count_requests(self) -> Counter[tuple[str, str]]:
        """Requests so far by (HTTP method, resource plural); discovery counts under ""."""
        return Counter((r.method, r.resource) for r in self.request_log)

    # ---- HTTP ----
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        who = self._authn.identify(request.headers.get("Authorization"))
        request[IDENTITY] = who or Identity(ANONYMOUS, ("system:unauthenticated",))
        request[LOG] = ["", ""]
        status = 500
        try:
            if self.authorize and who is None:
                raise errors.unauthorized()
            self.faults.check(request.method, request.path)
            response: web.StreamResponse = await handler(request)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.code
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
            return web.json_response(exc.status(), status=exc.code, headers=headers)
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            return web.json_response(
                ApiError(500, "InternalError", "Internal error occurred").status(), status=500
            )
        finally:
            resource, verb = request[LOG]
            self.tally.add(request[IDENTITY].user, verb, resource, request.content_length or 0)
            if len(self.request_log) >= self.request_log_limit:
                del self.request_log[: self.request_log_limit // 2]
            self.request_log.append(
                RequestRecord(
                    request.method,
                    request.path,
                    request.query_string,
                    status,
                    request[IDENTITY].user,
                    resource,
                    verb,
                )
            )
