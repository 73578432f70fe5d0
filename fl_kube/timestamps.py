"""Kubernetes timestamps (``metav1.Time``, ``metav1.MicroTime``) to and from datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(when: datetime, *, precise: bool = False) -> str:
    """RFC 3339 in UTC as the API serialises it: seconds, or milliseconds with ``precise``."""
    when = when.astimezone(UTC)
    if precise:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> datetime | None:
    """The time in a timestamp field; None when it is missing, empty or not a timestamp."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
