"""The model store as a cluster sees it: only the objects its round spec grants, through
the hub's presigned URLs, with no store credentials at all.

Plain HTTP from the standard library (urllib), so a training image needs nothing else. A
URL is a bearer secret: messages and errors name the object's `s3://` URI, never the URL.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Literal

from fl_contract.models import StoreAccess, redact_presigned
from fl_core.store.base import (
    AccessDenied,
    ModelStore,
    ObjectNotFound,
    StoreError,
    new_buffer,
    new_hash,
)

TIMEOUT = 60.0  # seconds without progress on one socket operation
READ_CHUNK = 1024 * 1024
_ERROR_BODY = 4096  # an S3 error document is small; read no more of it
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]{0,200})</\1>")

Method = Literal["GET", "PUT"]


class PresignedStore(ModelStore):
    """A store of the objects `access` grants, each for the methods it grants."""

    def __init__(self, base_uri: str, *, access: StoreAccess) -> None:
        super().__init__(base_uri)
        self._access = access

    def _url(self, key: str, method: Method) -> tuple[str, str]:
        uri = self.uri_for(key)
        url = self._access.url(uri, method)
        if url is None:
            raise AccessDenied(f"the round grants no {method} access to {uri}")
        return uri, url

    async def _put(self, key: str, data: bytes | bytearray | memoryview) -> str:
        uri, url = self._url(key, "PUT")
        digest = new_hash()
        view = memoryview(data).cast("B")
        await asyncio.to_thread(digest.update, view)
        await asyncio.to_thread(self._request, "PUT", url, uri, body=view)
        return digest.hexdigest()

    async def _get(self, key: str) -> tuple[memoryview, str]:
        uri, url = self._url(key, "GET")
        return await asyncio.to_thread(self._download, url, uri)

    async def _exists(self, key: str) -> bool:
        uri, url = self._url(key, "GET")
        try:
            await asyncio.to_thread(self._request, "GET", url, uri, headers={"Range": "bytes=0-0"})
        except ObjectNotFound:
            return False
        return True

    async def _delete_prefix(self, prefix: str, keep: frozenset[str]) -> None:
        raise AccessDenied(f"a round's access cannot delete {self.uri_for(prefix.rstrip('/'))}/")

    def _download(self, url: str, uri: str) -> tuple[memoryview, str]:
        try:
            return self._stream(url, uri)
        except (OSError, http.client.HTTPException) as exc:  # the connection broke mid-read
            raise StoreError(_scrub(f"GET {uri} failed while reading: {exc!r}", url, uri)) from None

    def _stream(self, url: str, uri: str) -> tuple[memoryview, str]:
        """Stream the object into one buffer, hashing each chunk as it lands."""
        digest = new_hash()
        with self._open("GET", url, uri) as response:
            length = response.headers.get("Content-Length")
            if length is None:  # chunked: size unknown up front
                data = bytearray()
                while chunk := response.read(READ_CHUNK):
                    data += chunk
                    digest.update(chunk)
                return memoryview(data), digest.hexdigest()
            size = int(length)
            view = new_buffer(size)
            pos = 0
            while pos < size:
                count = response.readinto(view[pos : min(pos + READ_CHUNK, size)])
                if not count:
                    raise StoreError(f"{uri}: read {pos} of {size} bytes")
                digest.update(view[pos : pos + count])
                pos += count
            return view, digest.hexdigest()

    def _request(
        self,
        method: Method,
        url: str,
        uri: str,
        *,
        body: memoryview | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self._open(method, url, uri, body=body, headers=headers) as response:
            try:
                response.read(_ERROR_BODY)
            except (OSError, http.client.HTTPException) as exc:
                raise StoreError(_scrub(f"{method} {uri} failed: {exc!r}", url, uri)) from None

    def _open(
        self,
        method: Method,
        url: str,
        uri: str,
        *,
        body: memoryview | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        all_headers = dict(headers or {})
        if body is not None:
            all_headers["Content-Type"] = "application/octet-stream"
            all_headers["Content-Length"] = str(body.nbytes)
        # The grant's URL is http(s):// (checked when the round spec is read).
        request = urllib.request.Request(url, data=body, method=method, headers=all_headers)  # noqa: S310
        try:
            response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT)  # noqa: S310
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._refused(exc, method, uri) from None
        except urllib.error.URLError as exc:
            reason = exc.reason if isinstance(exc.reason, OSError) else type(exc.reason).__name__
            raise StoreError(
                _scrub(f"cannot reach the store for {uri}: {reason}", url, uri)
            ) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise StoreError(_scrub(f"{method} {uri} failed: {exc}", url, uri)) from None
        return response

    def _refused(self, exc: urllib.error.HTTPError, method: Method, uri: str) -> StoreError:
        detail = dict(_XML_FIELD.findall(exc.read(_ERROR_BODY).decode("utf-8", "replace")))
        code = detail.get("Code") or exc.reason
        said = f"{exc.code} {code}" + (f": {detail['Message']}" if detail.get("Message") else "")
        if exc.code == 404:
            return ObjectNotFound(f"no object at {uri}")
        if exc.code in (401, 403):
            expires = self._access.expires
            when = "expired" if datetime.now(UTC) >= expires else "expires"
            return AccessDenied(
                f"the store refused {method} {uri} ({said}); this round's access {when} at "
                f"{expires.isoformat()}"
            )
        return StoreError(f"{method} {uri}: the store answered {said}")


def _scrub(text: str, url: str, uri: str) -> str:
    """Whatever a library put in an error message, the URL's signature stays out of it."""
    return redact_presigned(text.replace(url, uri))
