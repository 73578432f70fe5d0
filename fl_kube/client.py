"""The project's one client of the Kubernetes API: typed-free JSON over ``kubernetes_asyncio``.

Everything above this module (hub manager, spoke agent, sandbox controllers) speaks in
``Resource`` descriptions and plain ``dict`` objects; only this module builds URLs, picks
content types and turns HTTP answers into results or ``fl_kube.errors`` exceptions.
Authentication, TLS and proxies come from ``kubernetes_asyncio``'s configuration.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

from fl_kube.errors import ApiError, NotFound, error_for_status, from_transport_error
from fl_kube.resources import Resource

log = logging.getLogger(__name__)

PatchType = Literal["merge", "json", "strategic"]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
_AUTH_SETTINGS = ["BearerToken"]
_LIST_PAGE_SIZE = 500
IDLE_CONNECTION_SECONDS = 90.0  # client-go's http.Transport IdleConnTimeout
Query = list[tuple[str, str]]  # defined before KubeApi.list shadows the builtin


@dataclass(frozen=True)
class ObjectList:
    """A list answer: the items and the resourceVersion to start a watch from."""

    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class WatchEvent:
    """One watch event; ``object`` is the object (or a ``Status`` for ERROR)."""

    type: EventType
    object: dict[str, Any] = field(default_factory=dict)

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


async def make_api_client(
    kubeconfig: str | Path | None, *, context: str | None = None
) -> k8s_client.ApiClient:
    """An ``ApiClient`` for a kubeconfig file, or the in-cluster service account when None."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None:
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    else:
        path = Path(kubeconfig)
        if not await asyncio.to_thread(path.is_file):
            raise FileNotFoundError(
                f"kubeconfig {str(path)!r} does not exist: pass --kubeconfig with a readable file"
            )
        await k8s_config.load_kube_config(
            config_file=str(path),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    client = k8s_client.ApiClient(configuration=configuration)
    _keep_idle_connections(client)
    return client


def _keep_idle_connections(client: k8s_client.ApiClient) -> None:
    """Keep idle connections IDLE_CONNECTION_SECONDS, as client-go does (aiohttp's default is
    15 s): a controller that asks every few tens of seconds would otherwise pay a TLS
    handshake on almost every request. kubernetes_asyncio builds its connector without a
    way to pass the timeout, so it is set on the connector it built."""
    connector = getattr(getattr(client.rest_client, "pool_manager", None), "connector", None)
    if isinstance(connector, aiohttp.BaseConnector) and hasattr(connector, "_keepalive_timeout"):
        connector._keepalive_timeout = IDLE_CONNECTION_SECONDS


class KubeApi:
    """Generic CRUD, patch, apply and watch on any ``Resource``, with plain dict bodies."""

    def __init__(self, client: k8s_client.ApiClient, *, request_timeout: float = 30.0) -> None:
        self._client = client
        self._request_timeout = request_timeout

    @classmethod
    async def from_kubeconfig(
        cls, kubeconfig: str | Path | None, *, request_timeout: float = 30.0
    ) -> KubeApi:
        """Build a client from a kubeconfig path (None: in-cluster)."""
        return cls(await make_api_client(kubeconfig), request_timeout=request_timeout)

    @property
    def api_client(self) -> k8s_client.ApiClient:
        """The underlying client, for code that also uses typed ``kubernetes_asyncio`` APIs."""
        return self._client

    @property
    def host(self) -> str:
        return str(self._client.configuration.host)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> KubeApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reads -------------------------------------------------------------------------

    async def get(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """The object; raises ``NotFound``."""
        path = res.path(namespace=namespace, name=name, subresource=subresource)
        return _with_type(res, await self._json("GET", path))

    async def get_or_none(
        self, res: Resource, name: str, *, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.get(res, name, namespace=namespace)
        except NotFound:
            return None

    async def list(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjectList:
        """All matching objects (following ``continue`` pages) and the list's resourceVersion.

        ``namespace=None`` on a namespaced resource lists across all namespaces.
        """
        path = _collection_path(res, namespace)
        items: list[dict[str, Any]] = []
        resource_version = ""
        continue_token: str | None = None
        while True:
            query = _selectors(label_selector, field_selector)
            query.append(("limit", str(_LIST_PAGE_SIZE)))
            if continue_token:
                query.append(("continue", continue_token))
            answer = await self._json("GET", path, query=query)
            items.extend(_with_type(res, item) for item in answer.get("items") or [])
            metadata = answer.get("metadata") or {}
            resource_version = str(metadata.get("resourceVersion") or resource_version)
            continue_token = metadata.get("continue") or None
            if not continue_token:
                return ObjectList(items=items, resource_version=resource_version)

    async def version(self) -> dict[str, Any]:
        """The server's ``/version`` document (``gitVersion``, ``major``, ``minor``, ...)."""
        return await self._json("GET", "/version")

    async def discover(self, api_version: str, kind: str) -> Resource:
        """The served resource of an ``apiVersion``/``kind`` (discovery, like a RESTMapper).

        For objects of kinds only known at run time (e.g. manifests someone else wrote);
        raises ``NotFound`` when the server does not serve that kind.
        """
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        listing = await self._json("GET", path)
        for entry in listing.get("resources") or []:
            name = str(entry.get("name") or "")
            if entry.get("kind") == kind and name and "/" not in name:
                return Resource(group, version, name, kind, bool(entry.get("namespaced")))
        raise NotFound(404, "NotFound", f"the server does not serve kind {kind!r} in {api_version}")

    # -- writes ------------------------------------------------------------------------

    async def create(
        self, res: Resource, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        """POST a new object; raises ``Conflict`` (AlreadyExists) when the name is taken."""
        obj = _with_type(res, dict(body))
        ns = _namespace_for(res, obj, namespace)
        return _with_type(res, await self._json("POST", _collection_path(res, ns), body=obj))

    async def replace(
        self,
        res: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """PUT the whole object; ``Conflict`` when ``metadata.resourceVersion`` is stale."""
        obj = _with_type(res, dict(body))
        ns = _namespace_for(res, obj, namespace)
        path = res.path(namespace=ns, name=_name_of(obj), subresource=subresource)
        return _with_type(res, await self._json("PUT", path, body=obj))

    async def patch(
        self,
        res: Resource,
        name: str,
        body: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        patch_type: PatchType = "merge",
    ) -> dict[str, Any]:
        """PATCH with a merge (RFC 7386), JSON (RFC 6902) or strategic merge patch.

        Put ``metadata.resourceVersion`` in a merge patch (or a JSON patch ``test`` op) for an
        optimistic-concurrency precondition.
        """
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(
                f"patch_type must be one of {sorted(PATCH_CONTENT_TYPES)}, not {patch_type!r}"
            ) from None
        if patch_type == "json" and isinstance(body, Mapping):
            raise TypeError("a JSON patch is a list of operations, not a mapping")
        payload: Any = list(body) if patch_type == "json" else dict(cast(Mapping[str, Any], body))
        path = res.path(namespace=namespace, name=name, subresource=subresource)
        answer = await self._json("PATCH", path, body=payload, content_type=content_type)
        return _with_type(res, answer)

    async def apply(
        self,
        res: Resource,
        body: Mapping[str, Any],
        *,
        field_manager: str,
        namespace: str | None = None,
        subresource: str | None = None,
        force: bool = True,
    ) -> dict[str, Any]:
        """Server-side apply: the fields in ``body`` are owned by ``field_manager``."""
        if not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        obj = _with_type(res, dict(body))
        ns = _namespace_for(res, obj, namespace)
        path = res.path(namespace=ns, name=_name_of(obj), subresource=subresource)
        query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
        answer = await self._json(
            "PATCH", path, query=query, body=obj, content_type=APPLY_CONTENT_TYPE
        )
        return _with_type(res, answer)

    async def delete(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation: Literal["Background", "Foreground", "Orphan"] = "Background",
        resource_version: str | None = None,
        uid: str | None = None,
        grace_seconds: int | None = None,
    ) -> bool:
        """Delete; False when the object was already gone.

        ``resource_version`` / ``uid`` become delete preconditions (``Conflict`` on mismatch);
        ``grace_seconds=0`` deletes a Pod at once (its containers are killed).
        """
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": propagation,
        }
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        preconditions = {
            key: value
            for key, value in (("resourceVersion", resource_version), ("uid", uid))
            if value is not None
        }
        if preconditions:
            options["preconditions"] = preconditions
        path = res.path(namespace=namespace, name=name)
        try:
            await self._json("DELETE", path, body=options)
        except NotFound:
            return False
        return True

    # -- watch -------------------------------------------------------------------------

    async def watch(
        self,
        res: Resource,
        *,
        namespace: str | None = None,
        resource_version: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
        inactivity_timeout: float | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Stream events after ``resource_version`` until the server closes the watch.

        An ERROR event is raised as the matching ``ApiError`` (``Gone`` for 410: re-list).
        No line for ``inactivity_timeout`` seconds (default: the server timeout plus 30 s)
        raises ``TransportError``: the connection is presumed dead. Iterate inside
        ``contextlib.aclosing`` when you may stop early, so the connection is released.
        """
        query = _selectors(label_selector, field_selector)
        query.append(("watch", "1"))
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        query.append(("timeoutSeconds", str(int(timeout_seconds))))
        idle = inactivity_timeout if inactivity_timeout is not None else timeout_seconds + 30.0
        path = _collection_path(res, namespace)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._request_timeout, sock_connect=self._request_timeout
        )
        response = await self._send("GET", path, query=query, client_timeout=timeout)
        try:
            if response.status != 200:
                raise await _error_from(response)
            while True:
                try:
                    async with asyncio.timeout(idle):
                        line = await response.content.readline()
                except TimeoutError as exc:
                    raise from_transport_error(
                        exc, what=f"watch {path}: no event for {idle:.1f}s"
                    ) from exc
                except aiohttp.ClientError as exc:
                    raise from_transport_error(exc, what=f"watch {path}") from exc
                if not line:
                    return
                line = line.strip()
                if not line:
                    continue
                yield _parse_event(res, line)
        finally:
            response.close()

    # -- plumbing ----------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=self._request_timeout)
        response = await self._send(
            method, path, query=query, body=body, content_type=content_type, client_timeout=timeout
        )
        try:
            if response.status >= 300:
                raise await _error_from(response)
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise from_transport_error(exc, what=f"{method} {path}") from exc
        finally:
            response.release()
        if not data:
            return {}
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise ApiError(
                response.status, "InvalidResponse", f"{method} {path}: answer is not JSON"
            ) from exc
        return parsed if isinstance(parsed, dict) else {"value": parsed}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        body: Any = None,
        content_type: str | None = None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        try:
            response = await self._client.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=_AUTH_SETTINGS,
                _preload_content=False,
                _request_timeout=client_timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise from_transport_error(exc, what=f"{method} {path}") from exc
        return cast(aiohttp.ClientResponse, response)


async def _error_from(response: aiohttp.ClientResponse) -> ApiError:
    try:
        body = await response.read()
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    return error_for_status(response.status, body, headers=response.headers)


def _parse_event(res: Resource, line: bytes) -> WatchEvent:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise ApiError(0, "InvalidResponse", f"watch {res}: undecodable event line") from exc
    event_type = str(raw.get("type", ""))
    obj = raw.get("object") or {}
    if event_type == "ERROR":
        code = int(obj.get("code") or 500)
        raise error_for_status(code, obj)
    if event_type not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
        raise ApiError(0, "InvalidResponse", f"watch {res}: unknown event type {event_type!r}")
    if event_type != "BOOKMARK":
        obj = _with_type(res, obj)
    return WatchEvent(type=cast(EventType, event_type), object=obj)


def _selectors(label_selector: str | None, field_selector: str | None) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = []
    if label_selector:
        query.append(("labelSelector", label_selector))
    if field_selector:
        query.append(("fieldSelector", field_selector))
    return query


def _collection_path(res: Resource, namespace: str | None) -> str:
    return res.path(namespace=namespace if res.namespaced else None)


def _with_type(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """Fill apiVersion/kind, which list items and some answers leave out."""
    if obj.get("kind") in (None, ""):
        obj["kind"] = res.kind
    if obj.get("apiVersion") in (None, ""):
        obj["apiVersion"] = res.api_version
    return obj


def _name_of(obj: Mapping[str, Any]) -> str:
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        raise ValueError(f"{obj.get('kind', 'object')} body needs metadata.name")
    return str(name)


def _namespace_for(res: Resource, obj: Mapping[str, Any], namespace: str | None) -> str | None:
    if not res.namespaced:
        return None
    body_ns = (obj.get("metadata") or {}).get("namespace")
    if namespace and body_ns and body_ns != namespace:
        raise ValueError(
            f"{res.kind} metadata.namespace {body_ns!r} differs from namespace={namespace!r}"
        )
    ns = namespace or body_ns
    if not ns:
        raise ValueError(f"{res.kind} is namespaced: pass namespace= or set metadata.namespace")
    return str(ns)
