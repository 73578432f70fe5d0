"""ApiServer: one emulated kube-apiserver (aiohttp on loopback) per emulated cluster."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import discovery, errors, openapi
from .auth import ANONYMOUS, Attributes, Authenticator, Authorizer, Identity, review
from .builtin_types import BUILTIN_TYPES, OCM_TYPES, ResourceType
from .crds import CRD_GROUP, crd_types, load_crd_files
from .errors import ApiError
from .faults import FaultInjector
from .gc import GarbageCollector
from .registry import GroupResource, TypeRegistry
from .resources import APPLY, NAMESPACES, Resources, Target, WriteOptions, as_version, parse_body
from .selectors import fields_match, labels_match, parse_field_selector, parse_label_selector
from .store import Obj, Store
from .tables import table
from .tls import self_signed
from .watch import DEFAULT_TIMEOUT, WatchRequest, WatchStream

log = logging.getLogger(__name__)

CRD_GR = (CRD_GROUP, "customresourcedefinitions")
REPO_CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


_IDENTITY = web.RequestKey("identity", Identity)
_LOG = web.RequestKey("log", list)


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    status: int
    user: str
    resource: str = ""  # plural ("" for discovery and other non-resource paths)
    verb: str = ""  # get, list, watch, create, update, patch, delete, deletecollection


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


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


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
        self.bookmark_interval = 10.0
        self.request_log: list[RequestRecord] = []
        self.request_log_limit = 200_000  # the oldest half is dropped beyond this
        self.store = Store(history_limit=history_limit)
        self.registry = TypeRegistry()
        self.resources = Resources(store=self.store, on_write=self._after_write)
        self.gc = GarbageCollector(
            store=self.store,
            type_of=self.registry.preferred,
            delete=self.resources.begin_delete,
            remove=self.resources.remove,
        )
        self._streams: set[WatchStream] = set()
        self.faults = FaultInjector(store=self.store, drop_watches=self._drop_watches)
        self._authn = Authenticator()
        self._authz = Authorizer(self.store)
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
            uid = old["metadata"].get("uid")
            if uid:
                self.gc.owner_gone(uid)
            ns = old["metadata"].get("namespace")
            if ns:
                self.gc.namespace_changed(ns)
        elif new is not None:
            if gr == NAMESPACES and new["metadata"].get("deletionTimestamp"):
                self.gc.namespace_changed(new["metadata"]["name"])
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
        self.registry.replace_group_resource(gr, crd_types(new, validate=True))

    def _drop_watches(self) -> int:
        streams = list(self._streams)
        for s in streams:
            s.drop()
        return len(streams)

    # ---- lifecycle ----
    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
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
    def open_watches(self) -> int:
        """Watch streams open right now (watch requests enter request_log when they end)."""
        return len(self._streams)

    def count_requests(self) -> Counter[tuple[str, str]]:
        """Requests so far by (HTTP method, resource plural); discovery counts under ""."""
        return Counter((r.method, r.resource) for r in self.request_log)

    # ---- HTTP ----
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        who = self._authn.identify(request.headers.get("Authorization"))
        request[_IDENTITY] = who or Identity(ANONYMOUS, ("system:unauthenticated",))
        request[_LOG] = ["", ""]
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
            resource, verb = request[_LOG]
            if len(self.request_log) >= self.request_log_limit:
                del self.request_log[: self.request_log_limit // 2]
            self.request_log.append(
                RequestRecord(
                    request.method,
                    request.path,
                    request.query_string,
                    status,
                    request[_IDENTITY].user,
                    resource,
                    verb,
                )
            )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        segs = [s for s in request.path.split("/") if s]
        if not segs:
            return web.json_response(
                {"paths": ["/api", "/api/v1", "/apis", "/version", "/healthz"]}
            )
        head = segs[0]
        if head in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        if head == "version":
            return web.json_response(discovery.VERSION_INFO)
        if head == "openapi" and len(segs) >= 2 and segs[1] == "v3":
            if len(segs) == 2:
                return web.json_response(openapi.root(self.registry))
            group, version = (
                ("", segs[3])
                if segs[2] == "api" and len(segs) == 4
                else (segs[3], segs[4])
                if len(segs) == 5
                else ("", "")
            )
            doc = openapi.group_version(self.registry, group, version) if version else None
            if doc is not None:
                return web.json_response(doc)
        if head == "api":
            if len(segs) == 1:
                return self._json(request, discovery.api_versions(request.host))
            group, version, rest = "", segs[1], segs[2:]
        elif head == "apis":
            if len(segs) == 1:
                return self._json(request, discovery.api_group_list(self.registry))
            if len(segs) == 2:
                doc = discovery.api_group(self.registry, segs[1])
                if doc is None:
                    raise ApiError(
                        404, "NotFound", "the server could not find the requested resource"
                    )
                return self._json(request, doc)
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            doc = discovery.resource_list(self.registry, group, version)
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._json(request, doc)
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype = self.registry.get(group, version, rest[0])
        if rtype is None or (namespace is not None and not rtype.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (sub == "status" and rtype.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rtype.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        target = Target(rtype, namespace, name, sub)
        return await self._resource(
            request, target, watch=watch_path or _truthy(request.query.get("watch"))
        )

    def _verb(self, method: str, target: Target, watch: bool) -> str:
        if method == "GET":
            return "watch" if watch else ("get" if target.name else "list")
        if method == "DELETE":
            return "delete" if target.name else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())

    async def _resource(
        self, request: web.Request, t: Target, *, watch: bool
    ) -> web.StreamResponse:
        method = request.method
        verb = self._verb(method, t, watch)
        resource = t.rtype.plural + (f"/{t.subresource}" if t.subresource else "")
        request[_LOG][:] = [t.rtype.plural, verb]
        if self.authorize:
            self._authz.check(
                request[_IDENTITY], Attributes(verb, t.rtype.group, resource, t.namespace, t.name)
            )
        q = request.query
        if t.rtype.create_only:
            if method != "POST" or t.name is not None:
                raise errors.method_not_allowed()
            body = parse_body(await request.read(), request.content_type)
            self_review = t.rtype.plural == "selfsubjectaccessreviews"
            answer = review(self._authz, request[_IDENTITY], body, self_review=self_review)
            return self._json(request, answer, status=201)
        if method == "GET":
            if watch:
                return await self._watch(request, t)
            if t.name is None:
                return self._list(request, t)
            obj = self.resources.get(t)
            if self._wants_table(request):
                include = q.get("includeObject", "Metadata")
                rv = obj["metadata"]["resourceVersion"]
                return web.json_response(
                    table(t.rtype, [obj], resource_version=rv, include=include)
                )
            return self._json(request, obj)
        opts = WriteOptions(
            manager=q.get("fieldManager")
            or request.headers.get("User-Agent", "unknown").split("/")[0],
            dry_run=q.get("dryRun") == "All",
            strict=q.get("fieldValidation") == "Strict",
        )
        if method == "POST":
            if t.name is not None:
                raise errors.method_not_allowed()
            body = parse_body(await request.read(), request.content_type)
            return self._json(request, self.resources.create(t, body, opts), status=201)
        if method == "PUT":
            if t.name is None:
                raise errors.method_not_allowed()
            body = parse_body(await request.read(), request.content_type)
            return self._json(request, self.resources.update(t, body, opts))
        if method == "PATCH":
            if t.name is None:
                raise errors.method_not_allowed()
            ctype = request.headers.get("Content-Type", "")
            if ctype.startswith(APPLY) and not q.get("fieldManager"):
                raise errors.bad_request(
                    "PATCH, application/apply-patch+yaml requests must have a fieldManager"
                )
            code, obj = self.resources.patch(
                t, await request.read(), ctype, opts, force=_truthy(q.get("force"))
            )
            return self._json(request, obj, status=code)
        if method == "DELETE":
            raw = await request.read()
            options: dict[str, Any] = {}
            if raw:
                parsed = parse_body(raw, "application/json")
                options = parsed if isinstance(parsed, dict) else {}
            if q.get("propagationPolicy"):
                options["propagationPolicy"] = q["propagationPolicy"]
            if t.name is None:
                return self._delete_collection(request, t, options, dry_run=opts.dry_run)
            code, obj = self.resources.delete(
                t, options, dry_run=opts.dry_run or options.get("dryRun") == ["All"]
            )
            return self._json(request, obj, status=code)
        raise errors.method_not_allowed()

    def _selected(self, request: web.Request, t: Target) -> list[Obj]:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"), t.gr)
        return [
            o
            for o in self.store.items(t.gr, t.namespace)
            if labels_match(labels, o) and fields_match(fields, o)
        ]

    def _list(self, request: web.Request, t: Target) -> web.StreamResponse:
        items = self._selected(request, t)
        rv = str(self.store.resource_version)
        meta: dict[str, Any] = {"resourceVersion": rv}
        token = request.query.get("continue")
        if token:
            try:
                start = tuple(
                    json.loads(base64.urlsafe_b64decode(token.encode()).decode())["start"]
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise errors.bad_request(f"continue key is not valid: {exc}") from exc
            items = [
                o
                for o in items
                if (o["metadata"].get("namespace") or "", o["metadata"]["name"]) > start
            ]
        remaining = len(items)
        limit = request.query.get("limit")
        if limit and limit.isdigit() and 0 < int(limit) < len(items):
            items = items[: int(limit)]
            last = items[-1]["metadata"]
            key = [last.get("namespace") or "", last["name"]]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"start": key}).encode()
            ).decode()
            meta["remainingItemCount"] = remaining - len(items)
        items = [as_version(o, t.rtype) for o in items]
        if self._wants_table(request):
            return web.json_response(
                table(
                    t.rtype,
                    items,
                    resource_version=rv,
                    include=request.query.get("includeObject", "Metadata"),
                )
            )
        body = {
            "kind": t.rtype.list_kind,
            "apiVersion": t.rtype.api_version,
            "metadata": meta,
            "items": items,
        }
        return web.json_response(body)

    def _delete_collection(
        self, request: web.Request, t: Target, options: dict[str, Any], *, dry_run: bool
    ) -> web.StreamResponse:
        deleted = []
        for obj in self._selected(request, t):
            target = Target(t.rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            _, out = self.resources.delete(target, options, dry_run=dry_run)
            deleted.append(out if out.get("kind") != "Status" else obj)
        body = {
            "kind": t.rtype.list_kind,
            "apiVersion": t.rtype.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": deleted,
        }
        return web.json_response(body)

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        rv = q.get("resourceVersion")
        if rv not in (None, "") and not rv.isdigit():
            raise errors.bad_request(f'invalid resource version "{rv}"')
        timeout = DEFAULT_TIMEOUT
        if q.get("timeoutSeconds"):
            try:
                timeout = float(q["timeoutSeconds"])
            except ValueError as exc:
                raise errors.bad_request(f"invalid timeoutSeconds {q['timeoutSeconds']!r}") from exc
        wr = WatchRequest(
            target=t,
            resource_version=rv,
            timeout=timeout,
            bookmarks=_truthy(q.get("allowWatchBookmarks")),
            labels=parse_label_selector(q.get("labelSelector")),
            fields=parse_field_selector(q.get("fieldSelector"), t.gr),
        )
        as_table = self._wants_table(request)
        include = q.get("includeObject", "Metadata")
        first = [True]

        def render(kind: str, obj: Obj) -> Any:
            if not as_table:
                return obj
            out = table(
                t.rtype,
                [obj],
                resource_version=obj["metadata"]["resourceVersion"],
                include=include,
                with_columns=first[0],
            )
            first[0] = False
            return out

        stream = WatchStream(
            store=self.store, request=wr, render=render, bookmark_interval=self.bookmark_interval
        )
        self._streams.add(stream)
        try:
            return await stream.serve(request)
        finally:
            self._streams.discard(stream)

    @staticmethod
    def _wants_table(request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    @staticmethod
    def _json(request: web.Request, body: Any, *, status: int = 200) -> web.StreamResponse:
        del request
        return web.json_response(body, status=status)
