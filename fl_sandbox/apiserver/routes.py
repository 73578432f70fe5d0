"""HTTP routing: paths to discovery documents, resource verbs, lists, watches and tables."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from . import discovery, errors, openapi
from .auth import Attributes, Authorizer, Identity, review
from .errors import ApiError
from .registry import TypeRegistry
from .resources import APPLY, Resources, Target, WriteOptions, as_version, parse_body
from .selectors import (
    FieldRequirement,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
    selected_name,
)
from .store import Obj, Store
from .tables import table
from .watch import DEFAULT_TIMEOUT, WatchRequest, WatchStream

IDENTITY = web.RequestKey("identity", Identity)
LOG = web.RequestKey("log", list)
WARNINGS = web.RequestKey("warnings", list)


MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's request body limit


async def _read_body(request: web.Request) -> bytes:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise ApiError(
            413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}"
        )
    return raw


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


class Routes:
    """Turns requests into calls on the store and resources; one per ApiServer."""

    def __init__(
        self,
        *,
        registry: TypeRegistry,
        store: Store,
        resources: Resources,
        authorizer: Authorizer,
        authorize: bool,
    ) -> None:
        self.registry = registry
        self.store = store
        self.resources = resources
        self._authz = authorizer
        self.authorize = authorize
        self.bookmark_interval = 10.0
        self.streams: set[WatchStream] = set()

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
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
        request[LOG][:] = [t.rtype.plural, verb]
        if self.authorize:
            name = t.name
            if name is None and verb in ("list", "watch"):
                name = selected_name(request.query.get("fieldSelector"), t.gr)
            self._authz.check(
                request[IDENTITY], Attributes(verb, t.rtype.group, resource, t.namespace, name)
            )
        q = request.query
        if t.rtype.create_only:
            if method != "POST" or t.name is not None:
                raise errors.method_not_allowed()
            body = parse_body(await _read_body(request), request.content_type)
            self_review = t.rtype.plural == "selfsubjectaccessreviews"
            answer = review(self._authz, request[IDENTITY], body, self_review=self_review)
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
            warn=q.get("fieldValidation") not in ("Ignore", "Strict"),
        )
        request[WARNINGS] = opts.warnings
        if method == "POST":
            if t.name is not None:
                raise errors.method_not_allowed()
            body = parse_body(await _read_body(request), request.content_type)
            return self._json(request, self.resources.create(t, body, opts), status=201)
        if method == "PUT":
            if t.name is None:
                raise errors.method_not_allowed()
            body = parse_body(await _read_body(request), request.content_type)
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
                t, await _read_body(request), ctype, opts, force=_truthy(q.get("force"))
            )
            return self._json(request, obj, status=code)
        if method == "DELETE":
            raw = await _read_body(request)
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
            fields=parse_field_selector(q.get("fieldSelector"), t.gr)
            + ([FieldRequirement("metadata.name", False, t.name)] if t.name else []),
            initial_events=_truthy(q.get("sendInitialEvents")),
        )
        if wr.initial_events and not (
            wr.bookmarks and q.get("resourceVersionMatch") == "NotOlderThan"
        ):
            raise errors.invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                [
                    (
                        "FieldValueForbidden",
                        "sendInitialEvents",
                        "sendInitialEvents: Forbidden: sendInitialEvents requires setting allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan",
                    )
                ],
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
        self.streams.add(stream)
        try:
            return await stream.serve(request)
        finally:
            self.streams.discard(stream)

    @staticmethod
    def _wants_table(request: web.Request) -> bool:
        return "as=Table" in request.headers.get("Accept", "")

    @staticmethod
    def _json(request: web.Request, body: Any, *, status: int = 200) -> web.StreamResponse:
        response = web.json_response(body, status=status)
        for text in request.get(WARNINGS) or ():
            quoted = text.replace("\\", "\\\\").replace('"', '\\"')
            response.headers.add("Warning", f'299 - "{quoted}"')
        return response
