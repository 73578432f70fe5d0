"""API errors as exceptions a controller can branch on.

The client turns every non-2xx answer (and every transport failure) into one of these, with
the reason and message taken from the server's ``kind: Status`` body, so callers never parse
HTTP responses themselves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp


class ApiError(Exception):
    """A request the API server refused (or that never reached it: ``status`` 0)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.details: dict[str, Any] = dict(details or {})


class BadRequest(ApiError):
    """400: the request itself is malformed."""


class Unauthorized(ApiError):
    """401: the credentials were not accepted."""


class Forbidden(ApiError):
    """403: the identity lacks the permission (RBAC)."""


class NotFound(ApiError):
    """404: the object (or its namespace, or the resource type) does not exist."""


class MethodNotAllowed(ApiError):
    """405: the resource does not support this verb."""


class Conflict(ApiError):
    """409: stale resourceVersion (reason ``Conflict``) or name taken (``AlreadyExists``)."""

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


class Gone(ApiError):
    """410: the resourceVersion is older than the server keeps; re-list."""


class UnsupportedMediaType(ApiError):
    """415: e.g. a strategic merge patch on a custom resource."""


class Invalid(ApiError):
    """422: the object failed validation; ``details['causes']`` names the fields."""


class TooManyRequests(ApiError):
    """429: throttled; honour ``retry_after``."""


class ServerError(ApiError):
    """5xx: the server failed; usually worth retrying."""


class TransportError(ApiError):
    """The request did not get an HTTP answer: connection refused or reset, or a timeout."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    415: UnsupportedMediaType,
    422: Invalid,
    429: TooManyRequests,
}


def error_for_status(
    status: int,
    body: bytes | str | Mapping[str, Any] | None,
    *,
    headers: Mapping[str, str] | None = None,
) -> ApiError:
    """Build the right ``ApiError`` subclass from an HTTP status and a ``Status`` body."""
    status_obj = _parse_status(body)
    reason = str(status_obj.get("reason") or _default_reason(status))
    message = str(status_obj.get("message") or "")
    if not message and body is not None and not isinstance(body, Mapping):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        message = text.strip()[:500]
    details = status_obj.get("details")
    retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
    if retry_after is None and isinstance(details, Mapping):
        seconds = details.get("retryAfterSeconds")
        if isinstance(seconds, int | float) and seconds > 0:
            retry_after = float(seconds)
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(
        status,
        reason,
        message,
        retry_after=retry_after,
        details=details if isinstance(details, Mapping) else None,
    )


def from_api_exception(exc: Exception) -> ApiError:
    """Convert a ``kubernetes_asyncio`` ``ApiException`` (typed API calls) to an ``ApiError``."""
    status = int(getattr(exc, "status", 0) or 0)
    body = getattr(exc, "body", None)
    headers = getattr(exc, "headers", None)
    error = error_for_status(
        status,
        body if isinstance(body, bytes | str) else None,
        headers=headers if isinstance(headers, Mapping) else None,
    )
    error.__cause__ = exc
    return error


def from_transport_error(exc: BaseException, *, what: str) -> TransportError:
    """Wrap a connection failure or timeout, naming the request that failed."""
    reason = (
        "Timeout" if isinstance(exc, TimeoutError | asyncio.TimeoutError) else "ConnectionError"
    )
    error = TransportError(0, reason, f"{what}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def is_temporary(exc: BaseException) -> bool:
    """True for failures that may succeed when simply tried again later.

    429, 5xx (except 501), connection errors and timeouts. Conflicts are not included: the
    caller must re-read the object before trying again.
    """
    if isinstance(exc, ApiError):
        if isinstance(exc, TransportError):
            return True
        return exc.status == 429 or (exc.status >= 500 and exc.status != 501)
    return isinstance(
        exc,
        aiohttp.ClientConnectionError
        | aiohttp.ServerTimeoutError
        | TimeoutError
        | asyncio.TimeoutError
        | ConnectionError,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - dt.datetime.now(tz=when.tzinfo or dt.UTC)).total_seconds()
    return max(seconds, 0.0)


def _parse_status(body: bytes | str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if body is None:
        return {}
    if isinstance(body, Mapping):
        return body
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _default_reason(status: int) -> str:
    return {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        410: "Expired",
        415: "UnsupportedMediaType",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }.get(status, "Unknown")
