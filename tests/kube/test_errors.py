"""Mapping HTTP answers to typed errors."""

from __future__ import annotations

import json

import aiohttp
import pytest

from fl_kube import errors


def _status(code: int, reason: str, message: str, **details: object) -> bytes:
    body: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    if details:
        body["details"] = details
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (404, "NotFound", errors.NotFound),
        (409, "AlreadyExists", errors.Conflict),
        (409, "Conflict", errors.Conflict),
        (410, "Expired", errors.Gone),
        (415, "UnsupportedMediaType", errors.UnsupportedMediaType),
        (422, "Invalid", errors.Invalid),
        (429, "TooManyRequests", errors.TooManyRequests),
        (500, "InternalError", errors.ServerError),
        (403, "Forbidden", errors.Forbidden),
        (418, "Teapot", errors.ApiError),
    ],
)
def test_status_maps_to_class_with_reason_and_message(
    code: int, reason: str, cls: type[errors.ApiError]
) -> None:
    error = errors.error_for_status(code, _status(code, reason, "what went wrong"))
    assert type(error) is cls
    assert (error.status, error.reason, error.message) == (code, reason, "what went wrong")


def test_conflict_distinguishes_already_exists() -> None:
    exists = errors.error_for_status(409, _status(409, "AlreadyExists", "taken"))
    stale = errors.error_for_status(409, _status(409, "Conflict", "stale"))
    assert isinstance(exists, errors.Conflict)
    assert exists.already_exists
    assert isinstance(stale, errors.Conflict)
    assert not stale.already_exists


def test_retry_after_from_header_or_details() -> None:
    header = errors.error_for_status(
        429, _status(429, "TooManyRequests", "x"), headers={"Retry-After": "3"}
    )
    assert header.retry_after == 3.0
    details = errors.error_for_status(500, _status(500, "InternalError", "x", retryAfterSeconds=2))
    assert details.retry_after == 2.0
    assert errors.error_for_status(500, b"").retry_after is None


def test_non_json_body_becomes_the_message() -> None:
    error = errors.error_for_status(502, b"bad gateway from proxy")
    assert isinstance(error, errors.ServerError)
    assert error.reason == "Unknown"
    assert "bad gateway" in error.message


def test_invalid_keeps_causes_for_field_paths() -> None:
    error = errors.error_for_status(
        422,
        _status(422, "Invalid", "bad", causes=[{"field": "spec.rounds", "message": "min 1"}]),
    )
    assert error.details["causes"][0]["field"] == "spec.rounds"


@pytest.mark.parametrize(
    ("exc", "temporary"),
    [
        (errors.ServerError(503, "ServiceUnavailable", ""), True),
        (errors.ServerError(501, "NotImplemented", ""), False),
        (errors.TooManyRequests(429, "TooManyRequests", ""), True),
        (errors.TransportError(0, "ConnectionError", ""), True),
        (errors.Conflict(409, "Conflict", ""), False),
        (errors.NotFound(404, "NotFound", ""), False),
        (errors.Invalid(422, "Invalid", ""), False),
        (aiohttp.ClientConnectionError("reset"), True),
        (TimeoutError(), True),
        (ConnectionRefusedError(), True),
        (ValueError("bug"), False),
    ],
)
def test_is_temporary(exc: BaseException, temporary: bool) -> None:
    assert errors.is_temporary(exc) is temporary


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    assert errors.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert errors.parse_retry_after("garbage") is None


def test_retry_after_header_name_is_case_insensitive() -> None:
    from multidict import CIMultiDict

    error = errors.error_for_status(429, b"{}", headers=CIMultiDict({"retry-after": "4"}))
    assert error.retry_after == 4.0
